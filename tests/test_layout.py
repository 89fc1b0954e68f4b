"""The package layout keeps its promises (docs/architecture.md): imports run from later
pipeline stages to earlier ones only, modules stay short, and the product cites no internal
document."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "dfnas"
STAGES = ["data", "teachers", "synth", "spaces", "training", "strategies", "pipeline", "bench"]
LIBRARY = {"report"}  # leaf library: used by later stages, imports none
TOP = {"cli", "config", "errors", "io", "dist", "__init__", "__main__"}


def _imports(path: Path) -> list[str]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dfnas."):
            out.append(node.module)
        elif isinstance(node, ast.Import):
            out += [a.name for a in node.names if a.name.startswith("dfnas.")]
    return out


def _package(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else path.stem


MODULES = sorted(SRC.rglob("*.py"))


def test_every_module_sits_in_a_stage_or_at_the_allowed_top() -> None:
    stray = [str(p.relative_to(SRC)) for p in MODULES if _package(p) not in set(STAGES) | LIBRARY | TOP]
    assert not stray, f"modules outside the stage packages: {stray}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_no_import_from_a_later_stage(path: Path) -> None:
    here = _package(path)
    for mod in _imports(path):
        there = mod.split(".")[1]
        if here in STAGES and there in STAGES:
            assert STAGES.index(there) <= STAGES.index(here), f"{here} imports {mod}, a later stage"
        if here in LIBRARY | {"config", "errors", "io", "dist"}:
            assert there not in STAGES, f"{path.name} ({here}) imports the stage module {mod}"


def test_modules_stay_short() -> None:
    long = {str(p.relative_to(SRC)): n for p in MODULES if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"modules over 400 lines: {long}"


def test_no_internal_spec_is_cited() -> None:
    cited = [str(p.relative_to(SRC)) for p in MODULES if "SPEC section" in p.read_text() or "(SPEC" in p.read_text()]
    assert not cited, f"cite the paper, not an internal spec: {cited}"
