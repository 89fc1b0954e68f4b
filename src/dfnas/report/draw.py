"""Drawings of architectures (PNG, matplotlib Agg, no display needed).

Cell spaces (darts, nb201) are drawn as cell graphs with each edge labelled by its op;
chain spaces (proxyless, spos) as a row of labelled layer boxes. One picture per search, so
a reader sees at a glance what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfnas.report.plots import pyplot, save_figure

plt = pyplot()

_COLORS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _node(ax: Any, xy: tuple[float, float], text: str, color: str) -> None:
    ax.add_patch(plt.Circle(xy, 0.28, color=color, zorder=3))
    ax.text(*xy, text, ha="center", va="center", fontsize=8, color="white", zorder=4, weight="bold")


def _edge(ax: Any, a: tuple[float, float], b: tuple[float, float], label: str, rad: float = 0.0,
          color: str = "#333333", style: str = "-") -> None:
    ax.annotate("", xy=b, xytext=a, zorder=2,
                arrowprops={"arrowstyle": "-|>", "color": color, "linestyle": style, "lw": 1.2,
                            "shrinkA": 11, "shrinkB": 11, "connectionstyle": f"arc3,rad={rad}"})
    if label:
        mx, my = (a[0] + b[0]) / 2, (a[1] + b[1]) / 2
        dx, dy = b[0] - a[0], b[1] - a[1]
        # the arc's midpoint is offset perpendicular to the chord by rad * chord length / 2
        mx, my = mx + rad * dy / 2, my - rad * dx / 2
        ax.text(mx, my, label, fontsize=6.5, ha="center", va="center", zorder=5,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})


def _draw_darts_cell(ax: Any, choices: dict[str, Any], cell_type: str) -> None:
    nodes = sorted(int(k.rsplit("_", 1)[1]) for k in choices if k.startswith(f"{cell_type}/input_"))
    pos: dict[Any, tuple[float, float]] = {0: (0.0, 1.6), 1: (0.0, -0.2)}
    for n in nodes:
        pos[n] = (float(n - 1) * 1.3, 0.7 + (0.75 if n % 2 else -0.75))
    pos["out"] = (float(len(nodes) + 1) * 1.3, 0.7)
    for n in nodes:
        for j in choices[f"{cell_type}/input_{n}"]:
            rad = 0.25 if abs(n - j) > 1 else 0.0
            _edge(ax, pos[j], pos[n], choices[f"{cell_type}/op_{n}_{j}"], rad)
        _edge(ax, pos[n], pos["out"], "", 0.0, "#999999", "--")
    _node(ax, pos[0], "c_{k-2}".replace("_", ""), "#2F4F4F")
    _node(ax, pos[1], "c_{k-1}".replace("_", ""), "#2F4F4F")
    for n in nodes:
        _node(ax, pos[n], str(n), _COLORS[0])
    _node(ax, pos["out"], "c_k", "#8B0000")
    ax.set_title(f"{cell_type} cell", fontsize=10)


def _draw_nb201_cell(ax: Any, choices: dict[str, Any]) -> None:
    pos = {i: (i * 2.0, 0.0) for i in range(4)}
    for i in range(1, 4):
        for j in range(i):
            op = choices[f"cell/op_{i}_{j}"]
            rad = -0.35 * (i - j - 1) if i - j > 1 else 0.0
            if op == "none":
                _edge(ax, pos[j], pos[i], "none", rad, "#BBBBBB", ":")
            else:
                _edge(ax, pos[j], pos[i], op, rad)
    for i in range(4):
        _node(ax, pos[i], str(i), _COLORS[0] if 0 < i < 3 else "#2F4F4F")
    ax.set_title("NAS-Bench-201 cell (shared by every cell)", fontsize=10)


def _draw_chain(ax: Any, choices: dict[str, Any], per_row: int = 8) -> None:
    labels = sorted(choices, key=lambda k: int(k.rsplit("_", 1)[1]) if k.rsplit("_", 1)[1].isdigit() else 0)
    kinds = sorted({str(v) for v in choices.values()})
    color = {k: _COLORS[i % len(_COLORS)] for i, k in enumerate(kinds)}
    for idx, lbl in enumerate(labels):
        r, c = divmod(idx, per_row)
        x, y = c * 1.5, -r * 1.3
        v = str(choices[lbl])
        face = "#EEEEEE" if v == "zero" else color[v]
        ax.add_patch(plt.Rectangle((x, y), 1.2, 0.8, fc=face, ec="#333333", zorder=2))
        ax.text(x + 0.6, y + 0.52, v, ha="center", va="center", fontsize=7,
                color="black" if v == "zero" else "white", weight="bold", zorder=3)
        ax.text(x + 0.6, y + 0.2, lbl, ha="center", va="center", fontsize=6,
                color="black" if v == "zero" else "white", zorder=3)
        if idx + 1 < len(labels) and c + 1 < per_row:
            ax.annotate("", xy=(x + 1.5, y + 0.4), xytext=(x + 1.2, y + 0.4),
                        arrowprops={"arrowstyle": "-|>", "lw": 1.0})


def draw_arch(space: str, choices: dict[str, Any], path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of the architecture; returns the path."""
    if space == "darts":
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
        _draw_darts_cell(axes[0], choices, "normal")
        _draw_darts_cell(axes[1], choices, "reduce")
        for ax in axes:
            ax.set_xlim(-0.6, 6.9)
            ax.set_ylim(-0.9, 2.3)
    elif space == "nb201":
        fig, axes = plt.subplots(1, 1, figsize=(8, 3.6))
        _draw_nb201_cell(axes, choices)
        axes.set_xlim(-0.6, 6.6)
        axes.set_ylim(-0.6, 2.5)
        axes = [axes]
    else:
        n = len(choices)
        rows = max(1, -(-n // 8))
        fig, ax = plt.subplots(1, 1, figsize=(12, 1.0 + 1.1 * rows))
        _draw_chain(ax, choices)
        ax.set_xlim(-0.2, 8 * 1.5)
        ax.set_ylim(-(rows - 1) * 1.3 - 0.2, 1.0)
        axes = [ax]
    for ax in axes:
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(title or f"{space} architecture", fontsize=11)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return Path(path)


def draw_record(record: Any, path: str | Path, title: str | None = None) -> Path:
    """Draw an `ArchRecord` (from `dfnas.spaces.arch`)."""
    return draw_arch(record.space, record.choices, path, title)
