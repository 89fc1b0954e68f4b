"""Synthesis: model inversion with BN-statistics matching, recursive label calibration and
regional update. Entry point: `synthesize(teacher, SynthConfig(...), out)`."""

from dfnas.synth.run import synthesize

__all__ = ["synthesize"]
