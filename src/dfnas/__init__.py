"""dfnas: data-free neural architecture search.

Synthesize a labelled image set from a pretrained classifier alone, then search an
architecture on it. See README.md for the commands; the public Python API is re-exported
here lazily so `import dfnas` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "DfnasError"]

from dfnas.errors import DfnasError  # noqa: E402
