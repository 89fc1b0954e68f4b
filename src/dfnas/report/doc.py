"""One document, two renderings: Markdown next to its images and a self-contained HTML file
(images embedded), built from the same blocks so they never disagree. Used by every report
(`dfnas run`, `dfnas bench`).
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any


def pct(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}%"


def mflops(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e6:.2f} MFLOPs"


def kparams(x: float | None) -> str:
    return "n/a" if x is None else f"{x / 1e3:.1f} k"


def ratio(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or not b else f"{a / b:.2f}x"


def num(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{digits}f}"
    return str(v)


# ----------------------------------------------------------------------------- document


class Doc:
    """Blocks rendered to Markdown and HTML alike."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blocks: list[tuple[str, Any]] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, head: list[str], rows: list[list[Any]]) -> None:
        self.blocks.append(("table", (head, [[str(c) for c in r] for r in rows])))

    def img(self, rel: str, alt: str) -> None:
        """An image from the output folder; a note instead when the file is missing."""
        if (self.root / rel).is_file():
            self.blocks.append(("img", (rel, alt)))
        else:
            self.p(f"({alt}: not available, {rel} is missing)")

    def code(self, text: str, lang: str = "") -> None:
        self.blocks.append(("code", (text, lang)))

    def markdown(self) -> str:
        out: list[str] = []
        for kind, v in self.blocks:
            if kind == "h":
                out.append(f"{'#' * v[0]} {v[1]}")
            elif kind == "p":
                out.append(v)
            elif kind == "table":
                head, rows = v
                out.append("| " + " | ".join(head) + " |")
                out.append("|" + "---|" * len(head))
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
            elif kind == "img":
                out.append(f"![{v[1]}]({v[0]})")
            elif kind == "code":
                out.append(f"```{v[1]}\n{v[0].rstrip()}\n```")
            out.append("")
        return "\n".join(out)

    def html(self, title: str) -> str:
        e = html.escape
        body: list[str] = []
        for kind, v in self.blocks:
            if kind == "h":
                body.append(f"<h{v[0]}>{e(v[1])}</h{v[0]}>")
            elif kind == "p":
                body.append(f"<p>{e(v)}</p>")
            elif kind == "table":
                head, rows = v
                th = "".join(f"<th>{e(c)}</th>" for c in head)
                trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows)
                body.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode((self.root / v[0]).read_bytes()).decode()
                body.append(f'<figure><img alt="{e(v[1])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(v[1])} ({e(v[0])})</figcaption></figure>")
            elif kind == "code":
                body.append(f"<pre><code>{e(v[0].rstrip())}</code></pre>")
        style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
                 "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
                 "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
                 "img{max-width:100%}pre{background:#f6f6f6;padding:0.8em;overflow-x:auto}"
                 "figcaption{font-size:0.8em;color:#666}")
        return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
                f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
