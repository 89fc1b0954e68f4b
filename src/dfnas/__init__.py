"""dfnas: data-free neural architecture search.

Synthesize a labelled image set from a pretrained classifier alone, then search an
architecture on it. One package per pipeline stage (data, teachers, synth, spaces, training,
strategies, pipeline, bench; docs/architecture.md); importing `dfnas` itself loads none of them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "DfnasError"]

from dfnas.errors import DfnasError  # noqa: E402
