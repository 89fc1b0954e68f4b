"""Optional peer reference for `darts_nb201.py`: NNI 3.0's one-shot DARTS (first order) step time.

Builds NNI's own NAS-Bench-201 model space (`nni.nas.hub.pytorch.NasBench201`, C=16, N=5 cells
per stage, 10 classes), turns it into a supernet with NNI's DARTS strategy (`DARTS.mutate_model`,
which installs `DifferentiableMixedLayer`s: softmax(alpha)-weighted sum of all 5 candidate ops on
every edge, one alpha per label), wraps it in NNI's `DartsLightningModule`, and times on random
data (batch 64 of 1x28x28, or 3x32x32 with `--task cifar10`; 10 classes):

* `nni_step_s`: one DARTS first-order step, driven by hand exactly as
  `DartsLightningModule.training_step` does it: arch step on a val batch (forward, loss,
  `loss.backward()`, NNI's arch Adam step) then weight step on a train batch (zero_grad, forward,
  backward, grad-norm clip 5, SGD lr 0.025 momentum 0.9 wd 3e-4);
* `nni_bare_s`: one plain forward + cross-entropy + `loss.backward()` of the same supernet.

Both are medians over `steps` interleaved iterations after `warmup`.

    python benchmarks/_nni_darts.py [--steps 4] [--warmup 1] [--threads 2]

The last line printed is one JSON object. On a machine shared with other jobs, run it (like
`darts_nb201.py`) with `OMP_WAIT_POLICY=PASSIVE`, and not beside another timing job: with 2 cores,
two processes of spinning OpenMP threads inflate both by ~10x (recorded as `omp_wait_policy`). It needs NNI, which is never a dfnas dependency:

    pip install nni==3.0 pytorch-lightning   # with a `torch==2.13.0` constraint, e.g. -c constraints.txt

`time_nni_darts` imports NNI lazily and raises ImportError when it is missing (or fails to import).

Deviations from a stock NNI run, all recorded in `notes`:

* NNI's NB201 stem is hard-coded `Conv2d(3, C, 3, padding=1, bias=False)`; it is replaced, before
  the supernet mutation, by `Conv2d(1, C, 3, padding=1, bias=False)` (same out channels, same
  kernel) so the space takes 1-channel 28x28 input (`--task cifar10` keeps NNI's own stem).
  Nothing else in the space is touched.
* No Lightning `Trainer` is started. `DartsLightningModule.training_step` reaches the trainer for
  its optimizers, `manual_backward`, gradient clipping and logging, so the step is replayed outside
  it with NNI's own pieces: the optimizers come from the one-shot module's `configure_optimizers`
  (NNI's arch Adam: lr 3e-4, betas (0.5, 0.999), wd 1e-3; the evaluator's SGD with alphas
  removed by `postprocess_weight_optimizers`), the losses from the evaluator module's
  `training_step` (NNI's ClassificationModule: forward, CrossEntropy, torchmetrics accuracy; its
  `self.log` calls are no-ops without a trainer), `resample()` is called as NNI does,
  `manual_backward` becomes `loss.backward()` and Lightning's norm clipping becomes
  `clip_grad_norm_` over the weight optimizer's parameters (what Lightning's precision plugin calls).
  Lightning's per-step bookkeeping (hooks, logging, progress) is therefore not in the time.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import warnings

_INSTALL = "pip install nni==3.0 pytorch-lightning (under a torch==2.13.0 constraint)"


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def time_nni_darts(steps: int = 4, warmup: int = 1, threads: int = 2, task: str = "mnist") -> dict:
    """Time NNI 3.0's first-order DARTS step and a bare forward+backward on its NB201 supernet.

    Returns {"nni_step_s", "nni_bare_s", "nni_version", "notes"} plus a few checks
    (architecture-parameter count, ops run per forward, process peak RSS).
    Raises ImportError when NNI (or pytorch-lightning) cannot be imported.
    """
    import functools

    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    try:
        with warnings.catch_warnings():
            # NNI 3.0 wraps every torch.nn class at import and warns about ones newer torch added.
            warnings.simplefilter("ignore")
            import nni
            from nni.nas.evaluator.pytorch.lightning import ClassificationModule
            from nni.nas.hub.pytorch import NasBench201
            from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
            from nni.nas.oneshot.pytorch.supermodule.differentiable import DifferentiableMixedLayer
            from nni.nas.strategy import DARTS
    except ImportError as e:
        raise ImportError(f"NNI is not available ({e}); {_INSTALL}") from e
    except Exception as e:  # an installed but broken NNI is as good as absent for the caller
        raise ImportError(f"NNI failed to import ({type(e).__name__}: {e}); {_INSTALL}") from e

    C, N, classes, batch, clip = 16, 5, 10, 64, 5.0
    shape = (1, 28, 28) if task == "mnist" else (3, 32, 32)  # cifar10: NNI's own 3-channel stem
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's "self.log() without a Trainer" warnings
            torch.manual_seed(0)

            # 1. NNI's NB201 model space, stem switched to 1 input channel.
            space = NasBench201(stem_out_channels=C, num_modules_per_stack=N, num_labels=classes)
            old = space.stem[0]
            stem_note = f"stem conv was {old.in_channels}->{old.out_channels} (hard-coded 3-channel)"
            if shape[0] != old.in_channels:
                space.stem[0] = nn.Conv2d(shape[0], old.out_channels, old.kernel_size, stride=old.stride,
                                          padding=old.padding, bias=False)
                stem_note += f", replaced by a {shape[0]}->{C} conv before the supernet mutation"
            labels = list(space.simplify().keys())

            # 2. NNI's DARTS turns it into the supernet in place (LayerChoice -> DifferentiableMixedLayer).
            strategy = DARTS(gradient_clip_val=clip)
            supernet = strategy.mutate_model(space)

            # 3. NNI's evaluator module + DARTS one-shot module; optimizers from NNI's own hooks.
            evaluator = ClassificationModule(
                learning_rate=0.025, weight_decay=3e-4,
                optimizer=functools.partial(torch.optim.SGD, momentum=0.9), num_classes=classes)
            evaluator.set_model(supernet)
            oneshot = strategy.configure_oneshot_module(evaluator)
            assert isinstance(oneshot, DartsLightningModule)
            opts = oneshot.configure_optimizers()
            arc_optim = next(o for o in opts if getattr(o, "is_arch_optimizer", False))
            w_optim = next(o for o in opts if not getattr(o, "is_arch_optimizer", False))
            w_params = [p for g in w_optim.param_groups for p in g["params"]]
            oneshot.train()

            # Checks: alphas shared by label, none of them in the weight optimizer, all ops run.
            alphas = oneshot.arch_parameters()
            mixed = [m for m in supernet.modules() if isinstance(m, DifferentiableMixedLayer)]
            alpha_ids = {id(a) for a in alphas}
            assert not alpha_ids & {id(p) for p in w_params}, "alphas leaked into the weight optimizer"
            assert {id(m._arch_alpha) for m in mixed} == alpha_ids
            n_weights = sum(p.numel() for p in w_params)

            def batch_pair():
                return torch.randn(batch, *shape), torch.randint(0, classes, (batch,))

            def bare() -> None:
                x, y = batch_pair()
                supernet.zero_grad(set_to_none=True)
                F.cross_entropy(supernet(x), y).backward()

            def step(i: int) -> None:
                # Mirrors DartsLightningModule.training_step (NNI 3.0), warmup_epochs=0, no penalty.
                (xt, yt), (xv, yv) = batch_pair(), batch_pair()
                oneshot.resample()
                arc_optim.zero_grad()
                arc_loss = evaluator.training_step((xv, yv), 2 * i)
                arc_loss.backward()  # manual_backward: grads of alphas *and* of all weights
                arc_optim.step()
                oneshot.resample()
                w_loss = evaluator.training_step((xt, yt), 2 * i + 1)
                w_optim.zero_grad()  # advance_optimization: zero, backward, clip, step
                w_loss.backward()
                torch.nn.utils.clip_grad_norm_(w_params, clip)
                w_optim.step()

            # Count candidate-op calls on one (warm-up) forward: every edge runs all its candidates.
            calls = {"n": 0}

            def count(*_):
                calls["n"] += 1

            handles = [m[name].register_forward_hook(count) for m in mixed for name in m.names]
            bare()
            for h in handles:
                h.remove()
            ops_per_forward = calls["n"]
            cand = len(mixed[0].names)
            for i in range(warmup):
                if i:
                    bare()
                step(i)

            bares, stepts = [], []
            for i in range(steps):  # interleaved so load from other processes hits both alike
                t0 = time.perf_counter()
                bare()
                t1 = time.perf_counter()
                step(warmup + i)
                t2 = time.perf_counter()
                bares.append(t1 - t0)
                stepts.append(t2 - t1)
            probs = oneshot.export_probs()
    finally:
        torch.set_num_threads(prev_threads)

    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    shared = len(alphas) == len(labels) < len(mixed)
    notes = (
        f"NNI {nni.__version__} NasBench201(C={C}, N={N}, {classes} classes), batch {batch} of "
        f"{'x'.join(map(str, shape))}, {threads} threads, torch {torch.__version__}; {stem_note}. DARTS.mutate_model made {len(mixed)} DifferentiableMixedLayers "
        f"({len(mixed) // len(labels)} cells x {len(labels)} edges) over {len(alphas)} alpha tensors of {cand} "
        f"({sum(a.numel() for a in alphas)} arch params, {'shared across cells by label' if shared else 'NOT shared'}: "
        f"{', '.join(labels)}); candidates {mixed[0].names}, all run and softmax-weighted-summed "
        f"({ops_per_forward} op calls per forward = {len(mixed)}x{cand}, 'none' included as x*0). "
        f"Step driven by hand like DartsLightningModule.training_step, no Lightning Trainer: arch step = "
        f"evaluator.training_step on a val batch + loss.backward() (also fills weight grads, as NNI does) + "
        f"NNI arch Adam (lr 3e-4, betas (0.5,0.999), wd 1e-3); weight step = zero_grad + training_step on a "
        f"train batch + backward + clip_grad_norm 5 + SGD(lr 0.025, momentum 0.9, wd 3e-4) over "
        f"{n_weights} weights. Bare = supernet forward + cross_entropy + backward. Medians of {steps} "
        f"after {warmup} warm-up. Peak RSS is the whole process's. "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}."
    )
    return {
        "nni_step_s": round(_median(stepts), 4),
        "nni_bare_s": round(_median(bares), 4),
        "nni_version": nni.__version__,
        "nni_step_over_bare": round(_median(stepts) / _median(bares), 3),
        "nni_arch_param_tensors": len(alphas),
        "nni_arch_params": sum(a.numel() for a in alphas),
        "nni_alphas_shared_across_cells": shared,
        "nni_mixed_layers": len(mixed),
        "nni_op_calls_per_forward": ops_per_forward,
        "nni_final_probs_cell_0_1": {k: round(v, 4) for k, v in probs[labels[0]].items()},
        "nni_peak_rss_gib": round(rss_gib, 3),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "notes": notes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--task", choices=("mnist", "cifar10"), default="mnist")
    a = ap.parse_args()
    r = time_nni_darts(steps=a.steps, warmup=a.warmup, threads=a.threads, task=a.task)
    print(f"NNI {r['nni_version']} DARTS first-order step {r['nni_step_s']:.3f} s, bare forward+backward "
          f"{r['nni_bare_s']:.3f} s, ratio {r['nni_step_over_bare']:.2f}, peak RSS {r['nni_peak_rss_gib']:.2f} GiB")
    print(json.dumps(r))


if __name__ == "__main__":
    main()
