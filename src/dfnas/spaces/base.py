"""Search-space primitives shared by every space and strategy (the NNI model, kept small).

A space builds a *supernet* whose decisions are `LayerChoice` / `InputChoice` modules, each
with an explicit `label`. An *architecture* is a flat dict {label: choice} (choice = candidate
name for LayerChoice, sorted list of chosen input indices for InputChoice). Strategies never
touch a space's code: they find the choice modules with `choice_modules(model)` and set how
each one mixes its candidates (`mode`), e.g. DARTS weights, ProxylessNAS binarized sampling,
SPOS uniform single path. `fix(model, arch)` turns a supernet into the fixed network.
"""

from __future__ import annotations

import json
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from dfnas.errors import DfnasError

Arch = dict[str, Any]


class LayerChoice(nn.Module):
    """Pick one of several candidate modules that take the same input.

    `active` (a candidate name) selects a single path; a strategy may instead install a
    `mixer(choice, x) -> Tensor` callable that combines candidates (DARTS weighted sum,
    ProxylessNAS binary gates). `fixed` choices forward straight through their candidate.
    """

    def __init__(self, label: str, candidates: dict[str, nn.Module]) -> None:
        super().__init__()
        if not candidates:
            raise ValueError(f"LayerChoice {label} needs at least one candidate")
        self.label = label
        self.candidates = nn.ModuleDict(OrderedDict(candidates))
        self.names = list(candidates)
        self.active: str | None = self.names[0]
        self.mixer: Callable[[LayerChoice, torch.Tensor], torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mixer is not None:
            return self.mixer(self, x)
        if self.active is None:
            raise RuntimeError(f"LayerChoice {self.label}: no active candidate and no mixer")
        return self.candidates[self.active](x)


class InputChoice(nn.Module):
    """Choose `n_chosen` of `n_candidates` incoming tensors and sum them (DARTS node inputs).

    `active` is the list of chosen indices; a `mixer(choice, inputs)` may replace it (the
    DARTS supernet sums all weighted edges and derives the top-k afterwards).
    """

    def __init__(self, label: str, n_candidates: int, n_chosen: int) -> None:
        super().__init__()
        self.label = label
        self.n_candidates = n_candidates
        self.n_chosen = n_chosen
        self.active: list[int] | None = list(range(min(n_chosen, n_candidates)))
        self.mixer: Callable[[InputChoice, list[torch.Tensor]], torch.Tensor] | None = None

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        if self.mixer is not None:
            return self.mixer(self, inputs)
        if self.active is None:
            raise RuntimeError(f"InputChoice {self.label}: no active inputs and no mixer")
        return sum(inputs[i] for i in self.active)


def choice_modules(model: nn.Module) -> dict[str, LayerChoice | InputChoice]:
    """Every choice in the model by label. Modules sharing a label share the decision."""
    out: dict[str, Any] = {}
    for m in model.modules():
        if isinstance(m, (LayerChoice, InputChoice)):
            out.setdefault(m.label, m)
    return out


def search_space_of(model: nn.Module) -> dict[str, list[Any]]:
    """{label: allowed values}; for InputChoice the values are the candidate indices."""
    space: dict[str, list[Any]] = {}
    for m in model.modules():
        if isinstance(m, LayerChoice):
            space[m.label] = list(m.names)
        elif isinstance(m, InputChoice):
            space[m.label] = list(range(m.n_candidates))
    return space


def apply_arch(model: nn.Module, arch: Arch) -> None:
    """Activate one path of the supernet per `arch` (single-path forward, as in SPOS)."""
    for m in model.modules():
        if isinstance(m, LayerChoice):
            m.active = arch[m.label]
            m.mixer = None
        elif isinstance(m, InputChoice):
            m.active = sorted(int(i) for i in arch[m.label])
            m.mixer = None


def arch_valid(model: nn.Module, arch: Arch) -> bool:
    """Whether `arch` is a working network of the space: a space whose choices can cut the
    input off from the output (NB201's `none`) defines `arch_valid(arch)`; others accept all."""
    check = getattr(model, "arch_valid", None)
    return True if check is None else bool(check(arch))


def _sample_any(model: nn.Module, rng: random.Random) -> Arch:
    arch: Arch = {}
    for m in model.modules():
        if m_label := getattr(m, "label", None):
            if m_label in arch:
                continue
            if isinstance(m, LayerChoice):
                arch[m_label] = rng.choice(m.names)
            elif isinstance(m, InputChoice):
                arch[m_label] = sorted(rng.sample(range(m.n_candidates), m.n_chosen))
    return arch


def sample_arch(model: nn.Module, rng: random.Random, max_tries: int = 1000) -> Arch:
    """A uniformly random *valid* architecture of the supernet's space (rejection sampling:
    uniform over the valid ones; a cut-off network is never trained, scored or returned)."""
    for _ in range(max_tries):
        arch = _sample_any(model, rng)
        if arch_valid(model, arch):
            return arch
    raise DfnasError(f"no valid architecture in {max_tries} uniform samples of {type(model).__name__}")


def sample_distinct(model: nn.Module, n: int, rng: random.Random, max_draws: int,
                    accept: Callable[[Arch], Arch | None] | None = None, first: Sequence[Arch] = ()) -> list[Arch]:
    """Up to `n` distinct architectures: `first` (deduplicated), then uniform valid draws, at
    most `max_draws` of them. `accept` maps a draw to the architecture to keep, or None to
    reject it (a FLOPs limit, a shrink into a budget); it is called once per draw, in order."""
    out: list[Arch] = []
    seen: set[str] = set()
    for a in first:
        if arch_key(a) not in seen:
            seen.add(arch_key(a))
            out.append(dict(a))
    for _ in range(max_draws):
        if len(out) >= n:
            break
        a = sample_arch(model, rng)
        a = accept(a) if accept is not None else a
        if a is None or arch_key(a) in seen:
            continue
        seen.add(arch_key(a))
        out.append(a)
    return out


def most_likely_valid(model: nn.Module, arch: Arch, probs: dict[str, torch.Tensor], max_archs: int = 200_000) -> Arch:
    """`arch` (a genotype derived from `probs`) if it is valid, else the valid architecture of
    highest joint probability over the LayerChoices in `probs` (other labels kept from `arch`).

    A derivation by independent per-choice argmax can cut the input off (every NB201 edge out
    of the input `none`); the network it names is constant. Enumerates up to `max_archs`
    combinations; a larger space keeps `arch` as it is.
    """
    if arch_valid(model, arch):
        return arch
    labels = [k for k in probs if k in arch]
    names = {m.label: m.names for m in model.modules() if isinstance(m, LayerChoice)}
    sizes = [len(probs[k]) for k in labels]
    if not labels or math.prod(sizes) > max_archs:
        return arch
    logp = torch.zeros(sizes)
    for i, k in enumerate(labels):
        shape = [1] * len(labels)
        shape[i] = sizes[i]
        logp = logp + probs[k].detach().float().cpu().clamp_min(1e-30).log().view(shape)
    for flat in torch.argsort(logp.flatten(), descending=True).tolist():
        idx = torch.unravel_index(torch.tensor(flat), tuple(sizes))
        cand = {**arch, **{k: names[k][int(i)] for k, i in zip(labels, idx, strict=True)}}
        if arch_valid(model, cand):
            return cand
    return arch


def validate_arch(model: nn.Module, arch: Arch, space_name: str = "") -> None:
    """One-line errors for unknown labels, missing labels and unknown choices."""
    space = search_space_of(model)
    where = f" of space '{space_name}'" if space_name else ""
    unknown = sorted(set(arch) - set(space))
    if unknown:
        raise DfnasError(f"architecture has labels {unknown[:3]} that are not in the search space{where}; was it made for another space?")
    missing = sorted(set(space) - set(arch))
    if missing:
        raise DfnasError(f"architecture lacks labels {missing[:3]}{where}; give a choice for every label")
    for m in model.modules():
        if isinstance(m, LayerChoice) and arch[m.label] not in m.names:
            raise DfnasError(f"architecture label '{m.label}' has unknown choice {arch[m.label]!r}; allowed: {m.names}")
        if isinstance(m, InputChoice):
            v = arch[m.label]
            if (not isinstance(v, (list, tuple)) or len(v) != m.n_chosen
                    or len(set(v)) != len(v) or not all(isinstance(i, int) and 0 <= i < m.n_candidates for i in v)):
                raise DfnasError(f"architecture label '{m.label}' must be {m.n_chosen} distinct input indices in [0, {m.n_candidates}), got {v!r}")


def fix(model: nn.Module, arch: Arch) -> nn.Module:
    """Replace every choice by its chosen candidate(s), in place; returns the fixed model.

    LayerChoice -> the chosen candidate module; InputChoice -> a fixed input selector.
    Unused candidates are dropped, so parameters and FLOPs are those of the final network.
    """
    validate_arch(model, arch)

    def _replace(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, LayerChoice):
                chosen = child.candidates[arch[child.label]]
                _replace(chosen)
                setattr(parent, name, chosen)
            elif isinstance(child, InputChoice):
                setattr(parent, name, FixedInputs(sorted(int(i) for i in arch[child.label])))
            else:
                _replace(child)

    _replace(model)
    # Modules may tidy up once their decisions are final (e.g. a DARTS node drops the ops of
    # the edges it did not choose, so the fixed network holds only what it computes).
    for m in list(model.modules()):
        hook = getattr(m, "after_fix", None)
        if callable(hook):
            hook()
    return model


class FixedInputs(nn.Module):
    def __init__(self, chosen: list[int]) -> None:
        super().__init__()
        self.chosen = chosen

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return sum(inputs[i] for i in self.chosen)


def arch_key(arch: Arch) -> str:
    return json.dumps(arch, sort_keys=True)


def choice_instances(model: nn.Module) -> list[LayerChoice | InputChoice]:
    """Every choice module, including repeats of a shared label (DARTS cells share labels)."""
    return [m for m in model.modules() if isinstance(m, (LayerChoice, InputChoice))]


def set_mixers(model: nn.Module, layer_mixer: Callable | None, input_mixer: Callable | None) -> None:
    for m in choice_instances(model):
        m.mixer = layer_mixer if isinstance(m, LayerChoice) else input_mixer
