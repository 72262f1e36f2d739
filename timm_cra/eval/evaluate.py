"""The evaluation loop shared by the trainer and ``timm-cra-validate``: loss, top-1, top-5."""
from contextlib import nullcontext
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.utils import accuracy

from ..data import DataError


__all__ = ['evaluate']


def _all_reduce_sum(values, device):
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def evaluate(model: torch.nn.Module, loader, device: torch.device, amp_dtype: Optional[torch.dtype] = None,
             channels_last: bool = False, progress: bool = False, desc: str = 'Eval') -> Dict[str, float]:
    """Mean cross-entropy and top-1/top-5 (%) over ``loader`` (summed over DDP ranks when initialised), and
    ``nonfinite``: how many images got a NaN / Inf logit (their top-1 / top-5 mean nothing; the callers decide).

    ``loader`` yields ``(images, targets, num_skipped)`` (see ``timm_cra.data.skip_collate``).
    """
    model.eval()
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    loss_sum = correct1 = correct5 = count = skipped = nonfinite = 0.
    it = loader
    if progress:
        from tqdm import tqdm
        it = tqdm(loader, desc=desc, unit='batch', dynamic_ncols=True)
    with torch.inference_mode():
        for x, y, n_skip in it:
            skipped += n_skip
            if x.numel() == 0:
                continue
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                out = model(x)
            out = out.float()
            n = y.shape[0]
            nonfinite += int((~torch.isfinite(out)).any(dim=1).sum())
            loss_sum += F.cross_entropy(out, y, reduction='sum').item()
            acc1, acc5 = accuracy(out, y, topk=(1, min(5, out.shape[1])))
            # accuracy() returns batch percentages; back to exact counts before summing over batches.
            correct1 += round(acc1.item() * n / 100)
            correct5 += round(acc5.item() * n / 100)
            count += n
    loss_sum, correct1, correct5, count, skipped, nonfinite = _all_reduce_sum(
        [loss_sum, correct1, correct5, count, skipped, nonfinite], device)
    if count == 0:  # metrics of nothing would read as a result (top1 null, exit 0)
        raise DataError(f'{desc}: no readable image to evaluate: all {int(skipped)} were skipped as unreadable '
                        f'(see the warnings above); fix or replace the images of the split.')
    return dict(loss=loss_sum / count, top1=100. * correct1 / count, top5=100. * correct5 / count,
                count=int(count), skipped=int(skipped), nonfinite=int(nonfinite))
