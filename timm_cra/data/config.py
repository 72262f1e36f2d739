"""The data config (input size, mean/std, interpolation, crop) a model takes, channels included.

timm's ``resolve_data_config`` takes ``input_size`` and mean/std from the model's pretrained cfg, which
keeps describing the *source* weights: a model built with ``in_chans=1`` from RGB weights would still be
fed 3-channel sizes and normalisation. Here the channel count is the model's own and mean/std are fitted
to it (see :func:`timm_cra.data.images.fit_mean_std`); everything else is timm's resolution.
"""
from typing import Any, Dict, Mapping

import torch.nn as nn
from timm.data import resolve_data_config

from ..utils.input_limits import crop_resize_problem  # the bound config.json and the flags are held to
from .images import check_in_chans, fit_mean_std

__all__ = ['model_in_chans', 'resolve_model_data_config']


def model_in_chans(model: nn.Module) -> int:
    """Input channels of ``model``: its ``in_chans`` attribute, else its first conv's input channels."""
    n = getattr(model, 'in_chans', None)
    if isinstance(n, int):
        return n
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return 3


def resolve_model_data_config(args: Mapping[str, Any], model: nn.Module, verbose: bool = False,
                              use_test_size: bool = False) -> Dict[str, Any]:
    """timm's ``resolve_data_config(args, model=model, use_test_size=...)`` with ``input_size[0]`` and mean/std for the
    channels the model takes (``use_test_size``: a cfg's ``test_input_size`` / ``test_crop_pct``, as timm validates).
    Explicit ``input_size`` / ``mean`` / ``std`` in ``args`` still win (length-checked). A crop whose
    eval resize would pass ``MAX_INPUT_PIXELS`` is refused (``--crop-pct 0.005`` on a 32 px model: 6400 x 6400)."""
    in_chans = check_in_chans(model_in_chans(model))
    args = dict(args)
    for key in ('mean', 'std'):
        if args.get(key) is not None:
            args[key] = fit_mean_std(args[key], in_chans, key)
    if args.get('input_size') is not None and int(args['input_size'][0]) != in_chans:
        from .errors import DataError
        raise DataError(f"--input-size {' '.join(map(str, args['input_size']))} has {args['input_size'][0]} "
                        f"channels but the model takes {in_chans}: make them match (or use --img-size).")
    args['in_chans'] = in_chans
    cfg = resolve_data_config(args, model=model, use_test_size=use_test_size, verbose=False)
    cfg['input_size'] = (in_chans, *tuple(cfg['input_size'])[1:])
    cfg['mean'] = fit_mean_std(cfg['mean'], in_chans, 'mean')
    cfg['std'] = fit_mean_std(cfg['std'], in_chans, 'std')
    problem = crop_resize_problem(cfg['input_size'][1:], cfg['crop_pct']) if cfg.get('crop_pct') else None
    if problem:  # the flags' check needs --img-size; a --crop-pct alone met the model's own size only here
        from .errors import DataError
        given = args.get('crop_pct') is not None
        raise DataError(f"{'--crop-pct' if given else 'The crop_pct of the model config'} {cfg['crop_pct']} at input "
                        f"size {cfg['input_size'][1]} x {cfg['input_size'][2]}: {problem}.")
    if verbose:
        import logging
        logging.getLogger('timm_cra.data').info(
            'Data config: ' + ', '.join(f'{k}={v}' for k, v in cfg.items()))
    return cfg
