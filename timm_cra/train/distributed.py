"""torchrun / DDP setup through timm's ``init_distributed_device``: gloo on CPU, nccl on GPU; rank 0 logs
and writes files."""
from dataclasses import dataclass
from types import SimpleNamespace

import torch
from timm.utils import init_distributed_device

from ..utils.errors import UsageError

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
    info = SimpleNamespace(device=device)  # timm fills in rank, local_rank, world_size, device
    dev = init_distributed_device(info)
    if dev.type == 'cuda' and dev.index is None:  # one GPU per process, named by index
        dev = torch.device('cuda', info.local_rank)
        torch.cuda.set_device(dev)
    return DistInfo(rank=info.rank, local_rank=info.local_rank, world_size=info.world_size, device=dev)
