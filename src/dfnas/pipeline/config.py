"""The settings of `dfnas run`: every stage's section in one file."""

from __future__ import annotations

import dataclasses

from dfnas.strategies.config import SearchConfig
from dfnas.synth.config import SynthConfig
from dfnas.teachers.config import TeacherRefConfig
from dfnas.training.config import ExportConfig, TrainConfig


@dataclasses.dataclass
class RunTrainConfig(TrainConfig):
    """Final training of the found network (TrainConfig fields) plus the run-only settings."""

    seeds: list[int] = dataclasses.field(default_factory=lambda: [0])
    online_teacher: bool = False  # KD to the live teacher on augmented views, not stored logits


@dataclasses.dataclass
class RunConfig:
    """`dfnas run`: every stage's settings in one file; see dfnas.pipeline.run."""

    teacher: TeacherRefConfig = dataclasses.field(default_factory=TeacherRefConfig)
    synth: SynthConfig = dataclasses.field(default_factory=SynthConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    train: RunTrainConfig = dataclasses.field(default_factory=RunTrainConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    test_data: str | None = None  # real labelled test set; None = a bundled teacher's own task (mnist, mnist-clutter)
    out: str = "runs/dfnas-run"  # output folder (--out overrides)
    device: str | None = None  # when set, used by every stage (overrides the sections' device)
    seed: int | None = None  # when set, used by every stage (synth, search, train seeds = [seed])
    threads: int | None = None  # torch CPU threads; None = torch's default
