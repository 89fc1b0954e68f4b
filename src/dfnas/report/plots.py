"""Matplotlib, headless: one place that picks the Agg backend, and the line-panel figure the
run and search reports share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfnas.io import atomic_save


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (no display; imported only when a figure is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, dpi: int = 90) -> None:
    """Write a figure atomically as PNG and free it."""
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    pyplot().close(fig)


def line_panels(path: Path, series: list[tuple[str, str, list[float], list[float]]], title: str) -> bool:
    """One panel per y-axis label; `series` = (panel, legend, xs, ys). False when empty."""
    series = [s for s in series if s[2]]
    if not series:
        return False
    plt = pyplot()
    panels = list(dict.fromkeys(s[0] for s in series))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.0), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        for _, name, xs, ys in (s for s in series if s[0] == panel):
            ax.plot(xs, ys, marker="o", ms=3, lw=1.3, label=name)
        ax.set_title(panel, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return True
