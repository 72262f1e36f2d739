"""torchrun / DDP setup through timm's ``init_distributed_device``: gloo on CPU, nccl on GPU; rank 0 logs
and writes files."""
import os
import sys
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from timm.utils import init_distributed_device
from timm.utils.distributed import is_distributed_env

from ..utils.errors import UsageError, printable

__all__ = ['DistInfo', 'init_distributed']


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device('cpu')

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_primary(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = '') -> DistInfo:
    """Join the process group that torchrun (or SLURM) describes in the environment; ``device`` ``''`` means
    CUDA when available, else CPU. Under DDP each process takes the GPU of its local rank."""
    if not device:
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda') and not torch.cuda.is_available():
        raise UsageError(f"--device {device}: no CUDA device is available here; pass --device cpu (or leave "
                         f"--device out to use a GPU when there is one).")
    _announce_rendezvous()
    info = SimpleNamespace(device=device)  # timm fills in rank, local_rank, world_size, device
    dev = init_distributed_device(info)
    if dev.type == 'cuda' and dev.index is None:  # one GPU per process, named by index
        dev = torch.device('cuda', info.local_rank)
        torch.cuda.set_device(dev)
    return DistInfo(rank=info.rank, local_rank=info.local_rank, world_size=info.world_size, device=dev)


#: what asks timm for a multi-process run (torchrun, SLURM), and what the env:// rendezvous then reads
_WORLD_VARS = ('WORLD_SIZE', 'SLURM_NTASKS')


def _announce_rendezvous() -> None:
    """Before timm joins the process group: a stale ``WORLD_SIZE=2`` / ``SLURM_NTASKS=2`` (a shell that once ran
    torchrun, an interactive SLURM allocation) without the rendezvous variables was a ValueError traceback; refused
    in one line naming them. With them, the join waits (30 min by default) for the other processes, silently: it
    says so first, in one line."""
    given = {v: os.environ[v] for v in _WORLD_VARS if v in os.environ}
    try:
        multi = is_distributed_env()
    except ValueError:
        raise UsageError(printable(f"{' '.join(f'{k}={v}' for k, v in given.items())}: not a process count; unset "
                                   f"it, or start the run with torchrun.")) from None
    if not multi:
        return
    needed = ('MASTER_ADDR', 'MASTER_PORT') + (() if 'SLURM_PROCID' in os.environ else ('RANK',))
    missing = [v for v in needed if v not in os.environ]
    named = ' '.join(f'{k}={v}' for k, v in given.items())
    if missing:
        raise UsageError(printable(f"{named} in the environment asks for a multi-process run, but {', '.join(missing)} "
                                   f"{'is' if len(missing) == 1 else 'are'} not set: start it with torchrun "
                                   f"--nproc-per-node N (which sets them), or unset {' / '.join(given)} to train "
                                   f"in one process."))
    size = os.environ.get('WORLD_SIZE') or os.environ.get('SLURM_NTASKS')
    print(printable(f"Waiting for {size} processes at {os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
                    f"({named}; this is rank {os.environ.get('RANK', os.environ.get('SLURM_PROCID'))}): unset "
                    f"{' / '.join(given)} to train in one process."), file=sys.stderr, flush=True)
