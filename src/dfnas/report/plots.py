"""Matplotlib, headless: one place that picks the Agg backend and saves figures atomically,
and the plots the run and search reports share."""

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
    """Write a figure atomically as PNG and free it (also when the write fails)."""
    try:
        atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))
    finally:
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


def choice_probabilities(history: list[dict[str, list[float]]], names: dict[str, list[str]], path: Path,
                         title: str) -> None:
    """One small panel per choice label: each candidate's probability over epochs (DARTS,
    ProxylessNAS); `history` holds {label: [probability per candidate]} per epoch."""
    labels = list(names)
    if not history or not labels:
        return
    plt = pyplot()
    cols = min(4, len(labels))
    rows = (len(labels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    epochs = list(range(len(history)))
    for ax, label in zip(axes.flat, labels, strict=False):
        for i, name in enumerate(names[label]):
            ax.plot(epochs, [h[label][i] for h in history], label=name, lw=1.2)
        ax.set_title(label, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(labels):]:
        ax.axis("off")
    handles, legend = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, legend, loc="lower center", ncol=min(8, len(legend)), fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    save_figure(fig, path)
