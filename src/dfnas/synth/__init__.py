"""Synthesis: model inversion with BN-statistics matching, recursive label calibration and
regional update (SPEC section 2). Entry point: `synthesize(teacher, SynthConfig(...), out)`."""

from dfnas.synth.run import synthesize

__all__ = ["synthesize"]
