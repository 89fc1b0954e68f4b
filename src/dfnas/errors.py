"""User-facing errors: one line naming the problem and the fix; the CLI exits with code 2."""

from __future__ import annotations


class DfnasError(Exception):
    """A problem with what the user handed us (input, config, files), not a bug in dfnas."""

    exit_code = 2
