"""The four data sources of the benchmark and the real subset the final training uses.

    real       the real labelled train split (cross-entropy)
    synthetic  the dfnas synthetic set: RLC rounds + regional update + priors (stored logits)
    plain      plain model inversion: one round, no regional update, same image budget
    noise      uniform-noise images labelled by the teacher (its logits stored), as many as `synthetic`
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from dfnas.data.sources import Source
from dfnas.errors import DfnasError
from dfnas.io import derive_seed
from dfnas.synth.config import SynthConfig
from dfnas.teachers import Teacher
from dfnas.teachers.online import OnlineTeacher, logits_of_images


def per_class_subset(source: Source, per_class: int | None) -> Source:
    """The first `per_class` images of every class, in the source's own (fixed) order."""
    if per_class is None:
        return source
    k = source.spec.num_classes
    idx = [torch.nonzero(source.y == c).flatten()[:per_class] for c in range(k)]
    short = [c for c, i in enumerate(idx) if len(i) < per_class]
    if short:
        raise DfnasError(f"final_per_class={per_class}: class {short[0]} of {source.name} has fewer images; "
                         f"lower final_per_class or set it to null (all images)")
    sel = torch.cat(idx)
    return Source(f"{source.name}[{per_class}/class]", source.x[sel], source.y[sel], source.spec,
                  identity={**source.identity, "per_class": per_class})


def plain_config(full: SynthConfig) -> SynthConfig:
    """Plain inversion with the full method's image budget: round 0 only, no regional update."""
    return dataclasses.replace(full, per_class=full.per_class * full.rounds, rounds=1, regional=False)


def noise_source(teacher: Teacher, n_per_class: int, seed: int, batch_size: int = 256) -> Source:
    """Uniform noise in the input range, labelled by the teacher (logits on the stored uint8 images).

    Built in memory from the seed (a few ms), so it needs no folder of its own to resume.
    """
    spec = teacher.spec
    n = n_per_class * spec.num_classes
    g = torch.Generator().manual_seed(derive_seed(seed, "noise-images"))
    x = torch.randint(0, 256, (n, spec.channels, spec.height, spec.width), generator=g, dtype=torch.uint8)
    net = OnlineTeacher(teacher).eval()
    logits = logits_of_images(net, x, spec, batch_size)
    return Source("noise", x, logits.argmax(1), spec, logits,
                  identity={"source": "noise", "images": n, "seed": seed, "teacher": teacher.weights_hash})


def synthetic_source(path: Path, name: str) -> Source:
    from dfnas.data.sources import load_source

    src = load_source(str(path))
    # identity by content, not by path: the same bench folder may be reached by another path
    return dataclasses.replace(src, name=name, identity={"source": name,
                                                         "dataset_sha256": src.identity.get("dataset_sha256")})
