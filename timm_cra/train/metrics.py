"""Per-epoch metrics: CSV (rewritten whole, so a resumed run never duplicates rows) and a PNG plot."""
import csv
from typing import Dict, List

from ..utils.io import atomic_path, atomic_write

__all__ = ['write_metrics_csv', 'plot_metrics']


def write_metrics_csv(history: List[Dict[str, float]], path: str) -> None:
    """One row per epoch, the columns of every row in first-seen order."""
    if not history:
        return
    fields: List[str] = []
    for row in history:
        fields.extend(k for k in row if k not in fields)
    with atomic_write(path, newline='') as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(history)


def plot_metrics(history: List[Dict[str, float]], path: str) -> None:
    """Loss (train/eval) and accuracy (top-1/top-5, model and EMA) against epoch."""
    import matplotlib
    matplotlib.use('Agg')  # headless: never needs a display
    import matplotlib.pyplot as plt

    epochs = [r['epoch'] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    for key, label in (('train_loss', 'train'), ('eval_loss', 'eval'), ('ema_eval_loss', 'eval (EMA)')):
        if any(key in r for r in history):
            ax_loss.plot(epochs, [r.get(key, float('nan')) for r in history], marker='.', label=label)
    for key, label in (('eval_top1', 'top-1'), ('eval_top5', 'top-5'), ('ema_eval_top1', 'top-1 (EMA)')):
        if any(key in r for r in history):
            ax_acc.plot(epochs, [r.get(key, float('nan')) for r in history], marker='.', label=label)
    ax_loss.set(xlabel='epoch', ylabel='loss', title='Loss')
    ax_acc.set(xlabel='epoch', ylabel='accuracy (%)', title='Accuracy')
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format='png', dpi=100)
    plt.close(fig)
