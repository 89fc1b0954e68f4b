"""The process group of a `torchrun` launch: rank, world size, device and barriers.

    torchrun --nproc-per-node 2 -m dfnas synth --teacher mnist-cnn --out runs/synth

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; a plain `dfnas` call is world size 1 and never
touches torch.distributed. CPU runs use gloo, CUDA runs NCCL with one GPU per local rank.
Collectives time out (DFNAS_DIST_TIMEOUT seconds, default 4 h: the slowest rank's share of a
long synthesis) instead of hanging forever on a rank that died outside torchrun's watch.
"""

from __future__ import annotations

import dataclasses
import datetime
import os

from dfnas.errors import DfnasError


@dataclasses.dataclass(frozen=True)
class Group:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as td

            try:
                td.barrier()
            except RuntimeError as e:  # a rank died or the wait timed out
                raise DfnasError(f"rank {self.rank}: another process of this torchrun job stopped or timed out "
                                 f"({str(e).splitlines()[0][:120]}); rerun the same command to resume") from e

    def device(self, device: str) -> str:
        """Each rank's own GPU: `cuda` becomes cuda:LOCAL_RANK."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.world_size > 1 else device


def from_env(device: str = "cpu") -> Group:
    """The group torchrun describes in the environment, initialised once; world size 1 otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Group()
    import torch.distributed as td

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not td.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        timeout = datetime.timedelta(seconds=float(os.environ.get("DFNAS_DIST_TIMEOUT", 4 * 3600)))
        try:
            td.init_process_group(backend, timeout=timeout)
        except (RuntimeError, ValueError) as e:
            raise DfnasError(f"cannot join the torchrun process group ({str(e).splitlines()[0][:120]}); "
                             "launch with torchrun --nproc-per-node N -m dfnas ...") from e
    return Group(rank, world, local)
