"""Publish CRA weights: checkpoint + eval results -> Hub repo folder (dry run) -> optional push to the Hub.

    python -m timm_cra.hub.publish cra_resnet18.my_tag <run>/last.pth --results <run>/results.json
    python -m timm_cra.hub.publish ... --push          # also create/update timm-cra/<name> on the Hub

Reads what the trainer writes (``last.pth``, or ``model.safetensors`` with its ``config.json``; the run's
``results.json``) and timm ``train.py`` checkpoints (``model_best.pth.tar``): how the model was built
(``model_kwargs``, ``num_classes``) comes from the run's ``config.json`` or the checkpoint's ``args``, so it
need not be repeated. Checkpoints go through the one safe reader, :mod:`timm_cra.utils.weights`.
The folder is written by :func:`timm_cra.hub.repo.export_repo`; pushing uploads it with ``huggingface_hub``
(``HfApi.create_repo`` + ``upload_folder``), authenticated by ``HF_TOKEN`` or ``hf auth login``.
"""
import argparse
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch

from ..models._builder import hub_id
from ..utils.errors import UsageError, run_cli
from ..utils.weights import load_state_checked, read_weights
from .repo import export_repo

__all__ = ['load_checkpoint_state_dict', 'build_repo_folder', 'push_repo_folder', 'default_repo_id',
           'trainer_results', 'model_kwargs_for', 'main']

CLI = 'python -m timm_cra.hub.publish'


def load_checkpoint_state_dict(path: Union[str, Path], use_ema: bool = True) -> Dict[str, torch.Tensor]:
    """State dict from a ``.safetensors`` file or a trainer / timm checkpoint (``state_dict_ema`` preferred
    unless ``use_ema=False``: the weights timm's trainer evaluates as best)."""
    return read_weights(str(path), use_ema=use_ema)[0]


def _json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_kwargs_for(checkpoint: Union[str, Path], ckpt: Dict[str, Any]) -> Tuple[Optional[str], Dict[str, Any]]:
    """``(arch, create_model kwargs)`` the weights were trained with: the run folder's ``config.json``
    (``model_args``, written next to ``last.pth`` / ``model.safetensors`` by the trainer), else the checkpoint's
    ``args`` (``model``, ``model_kwargs``, ``num_classes``)."""
    config = _json(Path(checkpoint).parent / 'config.json')
    if config and isinstance(config.get('model_args'), dict):
        kwargs = dict(config['model_args'])
        if config.get('num_classes') is not None:
            kwargs['num_classes'] = config['num_classes']
        return config.get('architecture'), kwargs
    args = ckpt.get('args') if isinstance(ckpt.get('args'), dict) else {}
    kwargs = dict(args.get('model_kwargs') or {})
    if args.get('num_classes') is not None:
        kwargs['num_classes'] = args['num_classes']
    return args.get('model') or ckpt.get('arch'), kwargs


def trainer_results(summary: Dict[str, Any], ckpt: Dict[str, Any], ema: bool = False) -> Dict[str, Any]:
    """Eval results for the card from the trainer's ``results.json`` (the final epoch's eval, which is what
    ``last.pth`` / ``model.safetensors`` hold; ``ema``: the EMA weights' eval)."""
    final = summary.get('final') or {}
    prefix = 'ema_eval' if ema and final.get('ema_eval_top1') is not None else 'eval'
    if final.get(f'{prefix}_top1') is None:
        raise UsageError("The trainer's results.json has no eval accuracy (the run had no validation split): "
                         "evaluate the weights with python -m timm_cra.eval --results-file R.json and pass "
                         "--results R.json.")
    args = ckpt.get('args') if isinstance(ckpt.get('args'), dict) else {}
    dataset = args.get('dataset') or os.path.basename(os.path.normpath(args.get('data_dir') or '')) or 'custom'
    epochs = summary.get('epochs', len(ckpt.get('history') or []))
    notes = (f"Top-1 measured by the timm-cra trainer on the '{args.get('val_split') or 'validation'}' split after "
             f"the final epoch ({epochs} epochs, {summary.get('optimizer_steps', '?')} optimizer steps)"
             + (' with the EMA weights' if prefix == 'ema_eval' else ''))
    if summary.get('best_top1') is not None:
        notes += f"; best epoch {summary.get('best_epoch')}: {summary['best_top1']:.2f}%"
    return dict(top1=final[f'{prefix}_top1'], top5=final.get(f'{prefix}_top5'), dataset=dataset,
                split=args.get('val_split') or 'validation', source='measured', notes=notes + '.')


def _results(results, ckpt: Dict[str, Any], ema: bool):
    if results is None or isinstance(results, dict) and 'final' not in results:
        return results
    summary = results if isinstance(results, dict) else _json(Path(results))
    if summary is not None and 'final' in summary and 'optimizer_steps' in summary:
        return trainer_results(summary, ckpt, ema)
    return results


def build_repo_folder(
        model_name: str,
        checkpoint: Union[str, Path],
        out_dir: Union[str, Path],
        *,
        results: Optional[Union[str, Path, Dict[str, Any]]] = None,
        recipe: Optional[str] = None,
        num_classes: Optional[int] = None,
        use_ema: bool = True,
        overwrite: bool = False,
        model_kwargs: Optional[Dict[str, Any]] = None,
) -> Path:
    """Load ``checkpoint`` into ``model_name`` (``<arch>.<tag>``) strictly and export the repo folder.

    ``results``: eval JSON (timm ``validate.py`` / timm-cra schema) or the trainer's ``results.json``.
    Model kwargs recorded with the weights are used; ``model_kwargs`` / ``num_classes`` override them.
    """
    import timm
    from .. import models  # noqa: F401  (registers cra_*)

    arch = model_name.split('.', 1)[0]
    state, ckpt = read_weights(str(checkpoint), use_ema=use_ema)
    used_ema = (use_ema and isinstance(ckpt.get('state_dict_ema'), dict) and bool(ckpt['state_dict_ema'])) \
        or Path(checkpoint).name == 'model_ema.safetensors'  # the trainer's EMA export
    trained_arch, kwargs = model_kwargs_for(checkpoint, ckpt)
    if trained_arch and ':' not in trained_arch and trained_arch != arch:
        raise UsageError(f"'{checkpoint}' was trained as {trained_arch}, not {arch}: publish it as "
                         f"{trained_arch}.<tag>.")
    kwargs.update(model_kwargs or {})
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    try:
        model = timm.create_model(arch, **kwargs)  # no tag: the weights define it, it need not be registered
    except (RuntimeError, TypeError) as e:
        raise UsageError(f"Cannot build {arch} with {kwargs}: {e}") from e
    load_state_checked(model, state, str(checkpoint),
                       hint=f'{arch}{" with " + str(kwargs) if kwargs else ""}: pass the architecture and '
                            f'--num-classes the checkpoint was trained with')
    try:
        return export_repo(model.eval(), out_dir, model_name=model_name, results=_results(results, ckpt, used_ema),
                           recipe=recipe, overwrite=overwrite)
    except (FileExistsError, ValueError) as e:
        raise UsageError(str(e).replace('timm_cra: ', '')) from e


def push_repo_folder(
        folder: Union[str, Path],
        repo_id: str,
        *,
        token: Optional[str] = None,
        private: bool = False,
        commit_message: Optional[str] = None,
) -> str:
    """Create/update ``repo_id`` on the Hub with the folder's files; returns the commit URL.

    The token comes from ``token``, ``HF_TOKEN`` or the ``hf auth login`` store; without one this fails
    before any network request.
    """
    from huggingface_hub import HfApi, constants, get_token
    from huggingface_hub.errors import HfHubHTTPError
    folder = Path(folder)
    files = sorted(p.name for p in folder.iterdir())
    for required in ('config.json', 'model.safetensors', 'README.md'):
        if required not in files:
            raise UsageError(f'{folder} has no {required}; build it with {CLI} (without --push) first.')
    token = token or get_token()
    if not token:
        raise UsageError('Pushing needs a Hugging Face token with write access: run `hf auth login` or set HF_TOKEN '
                         '(the dry run without --push needs none).')
    if constants.HF_HUB_OFFLINE:
        raise UsageError('HF_HUB_OFFLINE=1 is set; unset it to push to the Hub.')
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type='model', private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type='model',
            commit_message=commit_message or f'Upload {repo_id.split("/")[-1]} (timm-cra)')
    except HfHubHTTPError as e:
        raise UsageError(f"Pushing {folder} to {repo_id} at {constants.ENDPOINT} failed: "
                         f"{str(e).splitlines()[0]} (check the token's write access and the repo id).") from e
    return str(getattr(info, 'commit_url', info))


def default_repo_id(model_name: str) -> str:
    return hub_id(model_name)


def create_parser() -> argparse.ArgumentParser:
    from timm.utils import ParseKwargs
    p = argparse.ArgumentParser(prog=CLI, description=__doc__.splitlines()[0],
                                epilog='The folder loads with timm.create_model("local-dir:<folder>", pretrained=True).')
    p.add_argument('model_name', help='<arch>.<tag> the weights are published as, e.g. cra_resnet18.a1_in1k')
    p.add_argument('checkpoint', help="trainer last.pth or model.safetensors, or timm train.py's model_best.pth.tar")
    p.add_argument('--results', help="eval results JSON: the trainer's results.json, timm validate.py output, or "
                                     "the timm_cra schema")
    p.add_argument('--recipe', help='training recipe text for the model card')
    p.add_argument('--num-classes', type=int, help='classes of the checkpoint (default: as recorded with it)')
    p.add_argument('--model-kwargs', nargs='*', default={}, action=ParseKwargs, metavar='K=V',
                   help='create_model kwargs (default: as recorded with the weights)')
    p.add_argument('--no-ema', action='store_true', help="use 'state_dict' even if 'state_dict_ema' exists")
    p.add_argument('--repo-id', help='Hub repo id (default: timm-cra/<model_name>)')
    p.add_argument('--out', help='repo folder (default: hub/<repo-id>/ in the current folder)')
    p.add_argument('--overwrite', action='store_true', help='replace an existing repo folder')
    p.add_argument('--push', action='store_true', help='upload the folder to the Hub (needs a token)')
    p.add_argument('--private', action='store_true', help='create the Hub repo as private')
    return p


def main(argv: Optional[Sequence[str]] = None) -> Path:
    args = create_parser().parse_args(argv)
    repo_id = args.repo_id or default_repo_id(args.model_name)
    out = Path(args.out) if args.out else Path('hub') / repo_id
    folder = build_repo_folder(
        args.model_name, args.checkpoint, out, results=args.results, recipe=args.recipe,
        num_classes=args.num_classes, use_ema=not args.no_ema, overwrite=args.overwrite,
        model_kwargs=args.model_kwargs)
    print(f'Wrote {folder} (load it with timm.create_model("local-dir:{folder}", pretrained=True))')
    if args.push:
        print(f'Pushed: {push_repo_folder(folder, repo_id, private=args.private)}')
    else:
        print(f'Dry run: not pushed. Add --push to upload to {repo_id}.')
    return folder


if __name__ == '__main__':
    run_cli(main)
