"""torchrun / DDP setup: gloo on CPU, nccl on GPU; rank 0 logs and writes files."""
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

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
    """Read torchrun's env (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and join the process group."""
    world_size = int(os.environ.get('WORLD_SIZE', 1))
    rank = int(os.environ.get('RANK', 0))
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    use_cuda = device.startswith('cuda') or (not device and torch.cuda.is_available())
    if use_cuda:
        dev = torch.device(device if ':' in device else f'cuda:{local_rank}')
        torch.cuda.set_device(dev)
    else:
        dev = torch.device(device or 'cpu')
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend='nccl' if dev.type == 'cuda' else 'gloo')
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=dev)

