"""The README is the front door: its commands must parse, its links must resolve, and it must
stay short (measurements belong in docs/). A renamed flag or subcommand fails here instead of
in a reader's terminal."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 200

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def strip_comment(line: str) -> str:
    """Drop a trailing ` # ...` comment (the README puts no `#` inside quoted arguments)."""
    return re.sub(r"\s+#.*$", "", line)


def shell_commands(text: str) -> list[str]:
    """Every `dfnas ...` command in the README's code blocks.

    Lines continued with a trailing backslash are joined; comment lines are skipped; a chain
    `a && b` yields each `dfnas` part (so the install line's demo command is checked too);
    `python -m dfnas ...` counts as `dfnas ...`; other prefixes (torchrun, env vars) are not
    dfnas commands and are skipped."""
    cmds = []
    for lang, body in fenced_blocks(text):
        if lang not in ("", "bash", "sh", "shell", "console"):
            continue
        joined = re.sub(r"\s*\\\n\s*", " ", body)
        for line in joined.splitlines():
            line = line.strip().removeprefix("$ ").strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"\s*(?:&&|;|\|\|)\s*", line):
                part = strip_comment(part.strip())
                if part.startswith("python -m dfnas ") or part.startswith("python3 -m dfnas "):
                    part = "dfnas " + part.split(" ", 3)[3]
                if part.startswith("dfnas "):
                    cmds.append(part)
    return cmds


README_TEXT = README.read_text(encoding="utf-8")
COMMANDS = shell_commands(README_TEXT)
# The reference pages the README sends readers to for current usage (the history pages keep
# the syntax of their day and are not checked).
REFERENCE_DOCS = ("docs/bench.md", "docs/method.md", "docs/architecture.md")
DOC_COMMANDS = [(doc, c) for doc in REFERENCE_DOCS if (ROOT / doc).is_file()
                for c in shell_commands((ROOT / doc).read_text(encoding="utf-8"))]


def test_the_extractor_reads_what_the_readme_writes():
    text = ("```bash\n# comment\ndfnas synth --out a \\\n    --seed 1   # why\n"
            "python3 -m venv .venv && pip install x && dfnas run --out d\n"
            "python -m dfnas bench --quick\ntorchrun --nproc 2 -m dfnas synth\n```\n"
            "```python\ndfnas = 1\n```\n")
    assert shell_commands(text) == ["dfnas synth --out a --seed 1", "dfnas run --out d", "dfnas bench --quick"]
    assert len(COMMANDS) >= 10, "the README lost its command examples, or the extractor broke"


@pytest.fixture(scope="module")
def parser():
    from dfnas.cli import build_parser

    return build_parser()


def _parses(parser, cmd: str, capsys) -> None:
    try:
        parser.parse_args(shlex.split(cmd)[1:])
    except SystemExit:
        err = capsys.readouterr().err.strip().splitlines()
        pytest.fail(f"`{cmd}` does not parse: {err[-1] if err else 'argparse exited'}")


@pytest.mark.parametrize("cmd", COMMANDS, ids=COMMANDS)
def test_readme_command_parses(parser, cmd, capsys):
    _parses(parser, cmd, capsys)


@pytest.mark.parametrize("doc,cmd", DOC_COMMANDS, ids=[f"{d}: {c}" for d, c in DOC_COMMANDS])
def test_reference_doc_command_parses(parser, doc, cmd, capsys):
    _parses(parser, cmd, capsys)


def test_readme_is_short():
    n = len(README_TEXT.splitlines())
    assert n <= MAX_LINES, f"README.md has {n} lines (at most {MAX_LINES}): move details to docs/"


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    text = FENCE.sub("", md.read_text(encoding="utf-8"))
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.M)}


def test_readme_links_into_docs_resolve():
    links = [u for u in LINK.findall(FENCE.sub("", README_TEXT)) if not re.match(r"[a-z]+:", u)]
    docs = [u for u in links if u.lstrip("./").startswith("docs/")]
    assert docs, "the README should point into docs/"
    broken = []
    for url in docs:
        path, _, anchor = url.partition("#")
        target = ROOT / path
        if not target.is_file():
            broken.append(f"{url}: no such file")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{url}: no heading #{anchor} in {path}")
    assert not broken, "broken links in README.md:\n" + "\n".join(broken)


def test_ci_runs_the_readme_test_command():
    """`.ci/run` runs exactly the README's test command, so the README cannot drift from CI."""
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci in README_TEXT.splitlines()


def test_readme_python_imports_exist():
    """Every `from X import a, b` of the README's Python blocks names something that exists."""
    missing = []
    for lang, body in fenced_blocks(README_TEXT):
        if lang != "python":
            continue
        for mod, names in re.findall(r"^from ([\w.]+) import (.+)$", body, re.M):
            m = importlib.import_module(mod)
            missing += [f"{mod}.{n}" for n in (x.strip() for x in names.split(",")) if not hasattr(m, n)]
    assert not missing, f"README imports names that do not exist: {missing}"
