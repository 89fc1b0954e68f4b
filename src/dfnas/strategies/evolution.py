"""Evolutionary search of SPOS (Guo et al., ECCV 2020) over a trained supernet.

Population of architectures under a FLOPs limit; each generation keeps the global top-k by
score, and makes children by mutation (every choice re-drawn with probability `mutation_prob`)
and crossover (every choice taken from one of two parents), filling up with random
samples. Candidates above the limit or already seen are rejected and redrawn. Scores are
cached by architecture. Each generation draws from its own seeded RNG, so a resumed run
continues with exactly the candidates the killed run would have made.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from dfnas.errors import DfnasError
from dfnas.io import derive_seed
from dfnas.spaces.base import Arch, arch_key


class Evolution:
    """`sample(rng)` draws a uniform arch; `cost(arch)` in the units of `limit` (None = no limit)."""

    def __init__(self, sample: Callable[[random.Random], Arch], cost: Callable[[Arch], float],
                 limit: float | None, population: int, topk: int, n_mutation: int, n_crossover: int,
                 mutation_prob: float, seed: int, max_tries: int = 200,
                 valid: Callable[[Arch], bool] | None = None) -> None:
        """`valid`: the space's check that a child of mutation or crossover still works."""
        self.sample, self.cost, self.limit, self.valid = sample, cost, limit, valid
        self.population, self.topk = population, topk
        self.n_mutation, self.n_crossover, self.mutation_prob = n_mutation, n_crossover, mutation_prob
        self.seed, self.max_tries = seed, max_tries

    def ok(self, arch: Arch) -> bool:
        return (self.valid is None or self.valid(arch)) and (self.limit is None or self.cost(arch) <= self.limit)

    def _draw(self, make: Callable[[], Arch | None], seen: set[str]) -> Arch | None:
        for _ in range(self.max_tries):
            a = make()
            if a is not None and arch_key(a) not in seen and self.ok(a):
                seen.add(arch_key(a))
                return a
        return None

    def random_valid(self, rng: random.Random, seen: set[str]) -> Arch | None:
        return self._draw(lambda: self.sample(rng), seen)

    def mutate(self, parents: list[Arch], rng: random.Random, seen: set[str]) -> Arch | None:
        def make() -> Arch:
            p, fresh = rng.choice(parents), self.sample(rng)
            return {k: (fresh[k] if rng.random() < self.mutation_prob else v) for k, v in p.items()}
        return self._draw(make, seen)

    def crossover(self, parents: list[Arch], rng: random.Random, seen: set[str]) -> Arch | None:
        if len(parents) < 2:
            return None

        def make() -> Arch:
            a, b = rng.sample(parents, 2)
            return {k: (a[k] if rng.random() < 0.5 else b[k]) for k in a}
        return self._draw(make, seen)

    def run(self, score: Callable[[Arch], float], state: dict[str, Any] | None = None,
            generations: int = 5, on_generation: Callable[[dict[str, Any]], None] | None = None,
            map_fn: Callable[[Callable[[Arch], float], list[Arch]], list[float]] | None = None) -> dict[str, Any]:
        """Evolve; `state` (from `on_generation`) resumes. Returns the final state with `best`.
        `map_fn(score, archs)` scores a generation's new candidates (e.g. spread over processes)."""
        st = state or {"generation": 0, "scores": {}, "population": None, "history": []}
        scores: dict[str, float] = st["scores"]
        archs: dict[str, Arch] = {}
        for k in scores:
            archs[k] = _load(k)
        while st["generation"] < generations:
            gen = st["generation"]
            rng = random.Random(derive_seed(self.seed, "evolution", gen))
            seen = set(scores)
            if st["population"] is None:
                pop = []
                while len(pop) < self.population and (a := self.random_valid(rng, seen)) is not None:
                    pop.append(a)
                if not pop:
                    raise DfnasError(f"no architecture of the space is under the FLOPs limit {self.limit}; raise spos.flops_limit")
            else:
                pop = [_load(k) for k in st["population"]]
            new = list({arch_key(a): a for a in pop if arch_key(a) not in scores}.values())
            values = map_fn(score, new) if map_fn is not None else [score(a) for a in new]
            for a, v in zip(new, values, strict=True):
                scores[arch_key(a)] = float(v)
                archs[arch_key(a)] = a
            ranked = sorted(scores, key=lambda k: -scores[k])
            parents = [archs[k] for k in ranked[:self.topk]]
            st["history"].append({"generation": gen, "best": scores[ranked[0]],
                                  "topk_mean": sum(scores[k] for k in ranked[:self.topk]) / len(parents)})
            children: list[Arch] = []
            for _ in range(self.n_mutation):
                if (c := self.mutate(parents, rng, seen)) is not None:
                    children.append(c)
            for _ in range(self.n_crossover):
                if (c := self.crossover(parents, rng, seen)) is not None:
                    children.append(c)
            while len(children) < self.population and (c := self.random_valid(rng, seen)) is not None:
                children.append(c)
            st["population"] = [arch_key(c) for c in children]
            st["generation"] = gen + 1
            if on_generation is not None:
                on_generation(st)
        best = max(scores, key=lambda k: scores[k])
        st["best"] = _load(best)
        st["best_score"] = scores[best]
        return st


def _load(key: str) -> Arch:
    import json

    return json.loads(key)
