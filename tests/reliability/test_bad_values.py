"""Bad values from strangers: a wrong-typed ``config.json``, a FIFO where a file belongs, NaN / complex weights,
another architecture's weights, a malformed eval-results file, a changed optimizer on ``--resume``, a reused
``--experiment``, an unknown option. Each gives one ``error:`` line naming the fix (exit 2) through the real
CLIs, or one clear error from the real loader: never a traceback, a hang or a silently wrong result."""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import timm
import timm_cra
from timm_cra import PretrainedWeightsError
from timm_cra.eval.validate import main as validate_main
from timm_cra.hub.card import load_eval_results
from timm_cra.train import train
from timm_cra.utils.errors import UsageError, run_cli

from ..conftest import REPO_ROOT, TINY_MODEL

SHIPPED = REPO_ROOT / 'data' / 'cifar10'
PUBLISHED = REPO_ROOT / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'  # a real repo folder (config + weights)
VALIDATE = ['--data-dir', str(SHIPPED), '--split', 'test', '--num-samples', '8', '--batch-size', '8', '--workers', '0',
            '--no-progress']
TINY_TRAIN = TINY_MODEL + ['--config', 'cifar', '--data-dir', str(SHIPPED), '--train-split', 'test',
                           '--train-num-samples', '16', '--val-split', 'test', '--val-num-samples', '8',
                           '--batch-size', '8', '--no-plot', '--workers', '0']


def _cli(args, cwd, module, timeout=120):
    """The real CLI in a fresh interpreter: ``(returncode, the one error line)``; asserts no traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    proc = subprocess.run([sys.executable, '-m', module] + [str(a) for a in args], env=env, cwd=str(cwd),
                          capture_output=True, text=True, timeout=timeout)
    errors = [line for line in proc.stderr.splitlines() if line.startswith('error: ')]
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert len(errors) == 1 and proc.stderr.strip().splitlines()[-1] == errors[0], proc.stderr[-3000:]
    return proc.returncode, errors[0]


def _validate_in_process(capsys, argv):
    with pytest.raises(SystemExit) as e:
        run_cli(validate_main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and err.startswith('error: '), err
    return err


def _repo_copy(tmp_path: Path, name='repo') -> Path:
    dst = tmp_path / name
    shutil.copytree(PUBLISHED, dst)
    return dst


def _edit_config(repo: Path, edit) -> Path:
    cfg = json.loads((repo / 'config.json').read_text())
    edit(cfg)
    (repo / 'config.json').write_text(json.dumps(cfg))
    return repo


# ---- config.json with wrong types: timm_cra.create_model and the CLIs --------------------------------------------

CONFIG_FAULTS = {
    'architecture_list': (lambda c: c.update(architecture=['cra_cifar_resnet20']),
                          "'architecture' must be a string, not an array"),
    'architecture_missing': (lambda c: c.pop('architecture'), "'architecture' is missing"),
    'architecture_unknown': (lambda c: c.update(architecture='cra_cifar_resnet2O'),
                             "'architecture' 'cra_cifar_resnet2O' is not a registered model (did you mean: "
                             "cra_cifar_resnet20"),
    'num_classes_text': (lambda c: c.update(num_classes='ten'), "'num_classes' must be an integer, not a string"),
    'pretrained_cfg_list': (lambda c: c.update(pretrained_cfg=['fc']), "'pretrained_cfg' must be an object"),
    'pretrained_cfg_unknown_key': (lambda c: c['pretrained_cfg'].update(colour='red'),
                                   "pretrained_cfg key 'colour' is unknown to timm's PretrainedCfg"),
    'pretrained_cfg_mistyped': (lambda c: c['pretrained_cfg'].update(mean='0.5'),
                                "pretrained_cfg 'mean' must be an array of numbers, not a string"),
    'model_args_unknown': (lambda c: c.setdefault('model_args', {}).update(colour='red'),
                           "do not build cra_cifar_resnet20 (TypeError: CifarResNet.__init__() got an unexpected "
                           "keyword argument 'colour'"),
    'model_args_mistyped': (lambda c: c.setdefault('model_args', {}).update(in_chans='three'),
                            "'model_args' {\"in_chans\": \"three\""),
    'model_args_list': (lambda c: c.update(model_args=['in_chans']), "'model_args' must be an object"),
    # Class names: timm and transformers take any count (transformers then shows LABEL_n).
    'label_names_string': (lambda c: c.update(label_names='airplane,automobile'),
                           "'label_names' must be an array of strings or null, not a string"),
    'label_names_count': (lambda c: c.update(label_names=c['label_names'][:9]),
                          "'label_names' has 9 label names for a 10-class head: give exactly one name per class"),
    'label_names_count_in_cfg': (lambda c: c['pretrained_cfg'].update(label_names=c.pop('label_names') + ['x']),
                                 "'label_names' has 11 label names for a 10-class head"),
    'label_names_repeated': (lambda c: c.update(label_names=['cat'] + c['label_names'][1:-1] + ['cat']),
                             "'label_names' gives 'cat' more than once (compared after Unicode NFC normalisation, "
                             "surrounding whitespace aside): give each class its own name"),
    # 'cat' and 'cat ' look the same on every card and label: they were loaded as two classes.
    'label_names_whitespace': (lambda c: c['label_names'].__setitem__(5, 'cat '),
                               "'label_names' gives 'cat' more than once (compared after Unicode NFC normalisation, "
                               "surrounding whitespace aside)"),
    # Loading instructions in model_args were acted on while the config was checked (the file named was read).
    'model_args_checkpoint_path': (lambda c: c.setdefault('model_args', {}).update(checkpoint_path='/no/such.pth'),
                                   "'model_args' holds 'checkpoint_path', which tell create_model what to load"),
    'model_args_pretrained': (lambda c: c.setdefault('model_args', {}).update(
        pretrained=True, pretrained_cfg_overlay={'file': '/no/such.safetensors'}),
        "'model_args' holds 'pretrained', 'pretrained_cfg_overlay', which tell create_model what to load"),
    'label_descriptions_missing': (lambda c: c.update(label_descriptions={'airplane': 'a plane'}),
                                   "'label_descriptions' has no entry for 9 of the label names ('automobile'"),
    'label_descriptions_list': (lambda c: c.update(label_descriptions=['a plane']),
                                "'label_descriptions' must be an object or null, not an array"),
    # Preprocessing fields: timm uses them unchecked (NaN mean scored 50% with exit 0; others were tracebacks).
    'mean_nan': (lambda c: c['pretrained_cfg'].update(mean=[float('nan')] * 3),
                 "pretrained_cfg 'mean' [nan, nan, nan] must be finite numbers"),
    'std_inf': (lambda c: c['pretrained_cfg'].update(std=[0.2, float('inf'), 0.2]),
                "pretrained_cfg 'std' [0.2, inf, 0.2] must be finite numbers above 0"),
    'std_zero': (lambda c: c['pretrained_cfg'].update(std=[0, 0, 0]),
                 "pretrained_cfg 'std' [0, 0, 0] must be finite numbers above 0"),
    'std_two_values': (lambda c: c['pretrained_cfg'].update(std=[0.2, 0.2]),
                       "pretrained_cfg 'std' has 2 values: give one per input channel (3), or one"),
    'interpolation_unknown': (lambda c: c['pretrained_cfg'].update(interpolation='lanczos9'),
                              "pretrained_cfg 'interpolation' 'lanczos9' is not one timm knows (nearest, bilinear"),
    'input_size_zero': (lambda c: c['pretrained_cfg'].update(input_size=[3, 0, 0]),
                        "pretrained_cfg 'input_size' [3, 0, 0] must be positive integers"),
    'input_size_negative': (lambda c: c['pretrained_cfg'].update(input_size=[3, -32, 32]),
                            "pretrained_cfg 'input_size' [3, -32, 32] must be positive integers"),
    'crop_pct_nan': (lambda c: c['pretrained_cfg'].update(crop_pct=float('nan')),
                     "pretrained_cfg 'crop_pct' must be a number in (0, 2] (the crop's share of the resized image), "
                     "not nan"),
    'crop_pct_zero': (lambda c: c['pretrained_cfg'].update(crop_pct=0),  # was silently timm's default 0.875
                      "pretrained_cfg 'crop_pct' must be a number in (0, 2] (the crop's share of the resized image), "
                      "not 0"),
    # Sizes that allocate before any check (num_classes 10**9: 256 GB RuntimeError; 100000 px: MemoryError).
    'num_classes_huge': (lambda c: c.update(num_classes=10 ** 9),
                         "'num_classes' must be 0 to 200000 (the largest timm head has 115217), not 1000000000"),
    'num_classes_huge_in_model_args': (lambda c: c.setdefault('model_args', {}).update(num_classes=10 ** 9),
                                       "model_args 'num_classes' must be 0 to 200000"),
    'num_classes_huge_in_cfg': (lambda c: c['pretrained_cfg'].update(num_classes=10 ** 9),
                                "pretrained_cfg 'num_classes' must be 0 to 200000"),
    'input_size_huge': (lambda c: c['pretrained_cfg'].update(input_size=[3, 100000, 100000]),
                        "pretrained_cfg 'input_size' [3, 100000, 100000] is too large: at most 1024 channels, "
                        "8192 px a side and 16777216 pixels (4096 x 4096)"),
    # within the side limit, but 64 M pixels: validate died in a MemoryError traceback (im.resize)
    'input_size_8000': (lambda c: c['pretrained_cfg'].update(input_size=[3, 8000, 8000]),
                        "pretrained_cfg 'input_size' [3, 8000, 8000] is too large: at most 1024 channels, "
                        "8192 px a side and 16777216 pixels (4096 x 4096)"),
    # a 32000000 px resize: every image skipped, then a message blaming the images
    'crop_pct_tiny': (lambda c: c['pretrained_cfg'].update(crop_pct=1e-6),
                      "pretrained_cfg 'crop_pct' 1e-06: timm would resize images to 32000000 x 32000000 px before the "
                      "32 x 32 crop, over 16777216 pixels (4096 x 4096): give at least 0.008"),
    # no pooling: the meta build passed, every validate then died in a 'mat1 and mat2 shapes' traceback
    'global_pool_none': (lambda c: c.update(model_args={'global_pool': ''}),
                         "'model_args' {\"global_pool\": \"\"} build a model that cannot classify a 3 x 32 x 32 input "
                         "(RuntimeError: "),
    # a mean on the 0-255 scale: every client answered one class
    'mean_0_255': (lambda c: c['pretrained_cfg'].update(mean=[125.3, 123.0, 113.9]),
                   "pretrained_cfg 'mean' [125.3, 123.0, 113.9] must be from 0 to 1: timm normalises images scaled to "
                   "[0, 1]"),
    'std_0_255': (lambda c: c['pretrained_cfg'].update(std=[63.0, 62.1, 66.7]),
                  "pretrained_cfg 'std' [63.0, 62.1, 66.7] must be from 0.001 to 1"),
    'mean_negative': (lambda c: c['pretrained_cfg'].update(mean=[-0.5, 0.5, 0.5]),
                      "pretrained_cfg 'mean' [-0.5, 0.5, 0.5] must be from 0 to 1"),
    # transformers' pipeline built a ViT processor (224 px, mean 0.5); timm read the timm fields
    'image_processor_type': (lambda c: c.update(image_processor_type='ViTImageProcessor'),
                             "'image_processor_type' 'ViTImageProcessor' makes transformers preprocess with another "
                             "processor than the TimmWrapperImageProcessor"),
    'test_input_size_huge_chans': (lambda c: c['pretrained_cfg'].update(test_input_size=[5000, 32, 32]),
                                   "pretrained_cfg 'test_input_size' [5000, 32, 32] is too large"),
    'crop_mode_unknown': (lambda c: c['pretrained_cfg'].update(crop_mode='middle'),
                          "pretrained_cfg 'crop_mode' 'middle' is not one timm knows (center, squash, border)"),
    # 'random' is a training-only choice: a KeyError traceback in timm's eval transform.
    'interpolation_random': (lambda c: c['pretrained_cfg'].update(interpolation='random'),
                             "pretrained_cfg 'interpolation' 'random' is not one timm knows (nearest, bilinear"),
    # Where the weights come from is not the config's to say (hf-hub: followed hf_hub_filename, nothing else did).
    'weights_elsewhere': (lambda c: c['pretrained_cfg'].update(hf_hub_filename='alt.safetensors'),
                          "pretrained_cfg 'hf_hub_filename' ('alt.safetensors') says where to load weights from"),
    'weights_from_url': (lambda c: c['pretrained_cfg'].update(url='https://example.com/w.pth', custom_load=True),
                         "pretrained_cfg 'url' ('https://example.com/w.pth') says where to load weights from: a "
                         "repo's weights are its model.safetensors"),
    # model_args that size the model: gigabytes (cra_pool_size 1000: 2 GB; widths: a 1.4 TB allocation) or minutes
    # (the check's own meta build of 3000 blocks a stage: 70 s) before any error; NaN: a raw torch error.
    'cra_pool_size_huge': (lambda c: c.setdefault('model_args', {}).update(cra_pool_size=1000),
                           "model_args 'cra_pool_size' 1000 must be an integer (or two) from 1 to 32 (at most the "
                           "input side, 32 px, and 64)"),
    'widths_huge': (lambda c: c.setdefault('model_args', {}).update(widths=[16, 32, 200000]),
                    "'model_args' make cra_cifar_resnet20 1.8e+12 parameters, more than 1e+09 (4 GB)"),
    'blocks_per_stage_huge': (lambda c: c.setdefault('model_args', {}).update(blocks_per_stage=3000),
                              "model_args 'blocks_per_stage' 3000 is too deep: at most 256 blocks a stage"),
    'model_args_nan': (lambda c: c.setdefault('model_args', {}).update(drop_rate=float('nan')),
                       "model_args 'drop_rate' nan must be finite numbers"),
    # Keys transformers reads at the root and timm ignores: one repo, two models (transformers built another
    # architecture, ran the weights in half precision, or asked to run the repo's code); publish writes none.
    'model_type_other': (lambda c: c.update(model_type='bert'),
                         "'model_type' 'bert' makes transformers build another model than timm's 'cra_cifar_resnet20' "
                         "(it reads 'timm_wrapper', or none): remove 'model_type'"),
    'dtype_float16': (lambda c: c.update(dtype='float16'),
                      "'dtype' 'float16' makes transformers load the weights in another precision than timm's "
                      "float32: remove 'dtype'"),
    'torch_dtype_bfloat16': (lambda c: c.update(torch_dtype='bfloat16'),
                             "'torch_dtype' 'bfloat16' makes transformers load the weights in another precision"),
    'auto_map': (lambda c: c.update(auto_map={'AutoConfig': 'configuration_x.XConfig'}),
                 "'auto_map' {'AutoConfig': 'configuration_x.XConfig'} names code for transformers to import (it "
                 "would ask for trust_remote_code)"),
    # timm and transformers read the root's count, silently.
    'num_classes_disagree': (lambda c: c['pretrained_cfg'].update(num_classes=5),
                             "'num_classes' 10 and pretrained_cfg 'num_classes' 5 disagree (timm and transformers use "
                             "the root's): give the head's class count in both"),
    # [3, 1, 1] resized every image to one pixel and scored it, exit 0.
    'input_size_one_pixel': (lambda c: c['pretrained_cfg'].update(input_size=[3, 1, 1]),
                             "pretrained_cfg 'input_size' [3, 1, 1] is too small: at least 8 px a side"),
    'test_input_size_thin': (lambda c: c['pretrained_cfg'].update(test_input_size=[3, 32, 4]),
                             "pretrained_cfg 'test_input_size' [3, 32, 4] is too small"),
    # Publish refuses them (they forge lines of cards, logs and clients); a config.json's are refused too.
    'label_names_escape': (lambda c: c['label_names'].__setitem__(0, 'air\x1b[2Kplane'),
                           "'label_names' 'air\\x1b[2Kplane' holds a control character (newline, tab, escape), "
                           "U+001B"),
    # refused as 'a control character (newline, tab, escape)': the wrong reason; now named by kind and code point
    'label_names_no_break_space': (lambda c: c['label_names'].__setitem__(0, 'air\u00a0plane'),
                                   "'label_names' 'air\\xa0plane' holds a space other than the plain space, U+00A0 "
                                   "NO-BREAK SPACE: rename that class to printable text"),
    'label_names_zero_width_space': (lambda c: c['label_names'].__setitem__(0, 'air\u200bplane'),
                                     "'label_names' 'air\\u200bplane' holds an invisible format character, U+200B "
                                     "ZERO WIDTH SPACE"),
    # loaded and shown as an empty label (publish --label-names refused it)
    'label_names_empty': (lambda c: c['label_names'].__setitem__(3, ''), "'label_names' '' is empty"),
    'label_names_blank': (lambda c: c['label_names'].__setitem__(3, '  '), "'label_names' '  ' is empty"),
}


@pytest.mark.parametrize('fault', list(CONFIG_FAULTS))
def test_config_json_with_wrong_values_is_one_error(tmp_path, fault):
    edit, expected = CONFIG_FAULTS[fault]
    repo = _edit_config(_repo_copy(tmp_path), edit)
    for pretrained in (True, False):  # timm reads config.json either way
        with pytest.raises(PretrainedWeightsError) as info:
            timm_cra.create_model(f'local-dir:{repo}', pretrained=pretrained)
        message = str(info.value)
        assert expected in message and 'Fix config.json' in message and '\n' not in message, message


@pytest.mark.parametrize('content', ['[1, 2]', '{"architecture": '])
def test_config_json_not_an_object_or_not_json(tmp_path, content):
    repo = _repo_copy(tmp_path)
    (repo / 'config.json').write_text(content)
    with pytest.raises(PretrainedWeightsError, match='must be a JSON object|is not valid JSON'):
        timm_cra.create_model(f'local-dir:{repo}', pretrained=True)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_deeply_nested_json_is_one_line_wherever_json_is_read(tmp_path):
    """``[[[[...]]]]`` 100k deep was a RecursionError traceback from json.loads: as a model folder's config.json
    (timm_cra.create_model, the eval CLI) and as eval results (load_eval_results, publish --results). Every JSON
    from a user path is read by timm_cra.utils.strict_json (read_json / loads)."""
    deep = '[' * 100_000 + ']' * 100_000
    repo = _repo_copy(tmp_path)
    (repo / 'config.json').write_text(deep)
    with pytest.raises(PretrainedWeightsError, match=r'config.json is not valid JSON \(nested too deeply'):
        timm_cra.create_model(f'local-dir:{repo}', pretrained=True)
    code, err = _cli(['--model', f'local-dir:{repo}'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and 'config.json is not valid JSON (nested too deeply' in err and 'Fix it or re-export' in err
    results = tmp_path / 'results.json'
    results.write_text(deep)
    with pytest.raises(ValueError, match=r'results.json is not valid JSON \(nested too deeply'):
        load_eval_results(results)
    run = _repo_copy(tmp_path, 'run')
    code, err = _cli(['cra_cifar_resnet20.x', run / 'model.safetensors', '--results', results, '--out',
                      tmp_path / 'out'], tmp_path, 'timm_cra.hub.publish')
    assert code == 2 and f'{results} is not valid JSON (nested too deeply' in err and not (tmp_path / 'out').exists()



@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_key_given_twice_in_json_is_refused_naming_it(tmp_path):
    """``..., "num_classes": 5}`` at the end of a model folder's config.json (or any JSON read through
    strict_json: eval results) was read with the last value silently; refused naming the key, as the YAML reader
    refuses a repeated key."""
    repo = _repo_copy(tmp_path)
    text = (repo / 'config.json').read_text().rstrip()
    (repo / 'config.json').write_text(text[:-1].rstrip() + ', "num_classes": 5}')
    code, err = _cli(['--model', f'local-dir:{repo}'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "config.json is not valid JSON (key 'num_classes' is given twice" in err, err
    results = tmp_path / 'results.json'
    results.write_text('{"top1": 90.0, "top1": 10.0}')
    run = _repo_copy(tmp_path, 'run')  # weights beside a valid config.json: the results file is what is refused
    code, err = _cli(['cra_cifar_resnet20.x', run / 'model.safetensors', '--results', results, '--out',
                      tmp_path / 'out'], tmp_path, 'timm_cra.hub.publish')
    assert code == 2 and "key 'top1' is given twice" in err and not (tmp_path / 'out').exists(), err

@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_config_json_faults_through_the_eval_and_train_clis(tmp_path):
    repo = _edit_config(_repo_copy(tmp_path), lambda c: c.update(num_classes='ten'))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "'num_classes' must be an integer, not a string ('ten')" in err
    repo = _edit_config(_repo_copy(tmp_path, 'repo2'), lambda c: c.update(architecture=['x']))
    code, err = _cli(['--model', f'local-dir:{repo}', '--config', 'cifar', '--data-dir', SHIPPED, '--train-split',
                      'test', '--train-num-samples', '8', '--val-split', '', '--epochs', '1', '--output',
                      tmp_path / 'out'], tmp_path, 'timm_cra.train')
    assert code == 2 and "'architecture' must be a string, not an array" in err
    repo = _edit_config(_repo_copy(tmp_path, 'repo3'), lambda c: c.update(label_names=c['label_names'][:9]))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "'label_names' has 9 label names for a 10-class head" in err


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_config_json_preprocessing_faults_through_the_eval_cli(tmp_path):
    """What the eval CLI did with them: NaN mean -> top-1 50.0 and exit 0; std 0 -> ValueError traceback;
    num_classes of 5001 digits -> int parsing traceback; input_size [3, 8000, 8000] -> MemoryError traceback;
    crop_pct 1e-6 -> every image skipped, the images blamed. Now one line naming config.json and the field."""
    repo = _edit_config(_repo_copy(tmp_path), lambda c: c['pretrained_cfg'].update(mean=[float('nan')] * 3))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "pretrained_cfg 'mean' [nan, nan, nan] must be finite numbers" in err and \
        'Fix config.json' in err, err
    repo = _edit_config(_repo_copy(tmp_path, 'repo2'), lambda c: c['pretrained_cfg'].update(std=[0, 0, 0]))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "pretrained_cfg 'std' [0, 0, 0] must be finite numbers above 0" in err, err
    repo = _edit_config(_repo_copy(tmp_path, 'repo4'), lambda c: c['pretrained_cfg'].update(input_size=[3, 10 ** 5,
                                                                                                     10 ** 5]))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "[3, 100000, 100000] is too large" in err and 'MemoryError' not in err, err
    # within 8192 px a side: a MemoryError traceback in the resize (4 GiB ulimit); 1e-6: all images skipped
    for i, edit in enumerate((lambda c: c['pretrained_cfg'].update(input_size=[3, 8000, 8000]),
                              lambda c: c['pretrained_cfg'].update(crop_pct=1e-6))):
        repo = _edit_config(_repo_copy(tmp_path, f'pixels{i}'), edit)
        code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
        assert code == 2 and ('over 16777216 pixels' in err or 'and 16777216 pixels (4096 x 4096)' in err), err
    repo = _repo_copy(tmp_path, 'repo3')
    text = (repo / 'config.json').read_text()
    (repo / 'config.json').write_text(text.replace('"num_classes": 10', '"num_classes": 1' + '0' * 5000, 1))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and 'config.json is not valid JSON (Exceeds the limit' in err and 'set_int_max' not in err, err


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_config_json_model_args_faults_through_the_eval_cli(tmp_path):
    """What the eval CLI did with them: cra_pool_size 100000 -> a 54-line RuntimeError traceback, interpolation
    'random' -> a 26-line KeyError traceback. Now one line naming config.json and the field, exit 2."""
    repo = _edit_config(_repo_copy(tmp_path), lambda c: c.update(model_args={'cra_pool_size': 100000}))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "model_args 'cra_pool_size' 100000 must be an integer (or two) from 1 to 32" in err, err
    repo = _edit_config(_repo_copy(tmp_path, 'repo2'), lambda c: c['pretrained_cfg'].update(interpolation='random'))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and "pretrained_cfg 'interpolation' 'random' is not one timm knows" in err, err


def test_hf_hub_config_with_wrong_values(hub, tmp_path):
    repo = _edit_config(_repo_copy(tmp_path), lambda c: c['pretrained_cfg'].update(input_size=[3, 32]))
    hub.add_repo('t-bad/config', repo)
    with pytest.raises(PretrainedWeightsError, match=r"'input_size' must be an array of 3 integers"):
        timm_cra.create_model('hf-hub:t-bad/config', pretrained=True)
    with pytest.raises(PretrainedWeightsError, match=r"'input_size' must be an array of 3 integers"):
        timm_cra.create_model('hf-hub:t-bad/config', pretrained=True)  # now from the cache, checked before timm


def test_hf_hub_errors_name_the_repo_asked_for_and_what_it_lacks(hub, tmp_path):
    """An hf-hub: repo's errors named the config's tag ('cra_cifar_resnet20.cifar10'), not the repo; a repo with
    weights but no config.json was reported as having no model.safetensors; loading instructions in its model_args
    reached timm before the config check."""
    repo = _repo_copy(tmp_path)
    state = load_file(str(repo / 'model.safetensors'))
    save_file({k: torch.full_like(v, float('nan')) if k == 'fc.weight' else v for k, v in state.items()},
              str(repo / 'model.safetensors'))
    hub.add_repo('t-bad/nan', repo)
    for create in (timm.create_model, timm_cra.create_model):
        # timm_cra.create_model reads the weights at the commit config.json came from, and names it
        with pytest.raises(PretrainedWeightsError, match=r"^timm_cra: Pretrained weights for 'hf-hub:t-bad/nan"
                                                         r"(@[0-9a-f]{40})?' from Hub repo 't-bad/nan'.*NaN/Inf values: "
                                                         r"fc.weight"):
            create('hf-hub:t-bad/nan', pretrained=True)
    hub.add_repo('t-bad/no-config', {'model.safetensors': (PUBLISHED / 'model.safetensors').read_bytes()})
    with pytest.raises(PretrainedWeightsError, match=r"Hub repo 't-bad/no-config' has no config.json, .*"
                                                     r"pretrained_cfg_overlay=dict\(hf_hub_id='t-bad/no-config'\)"):
        timm_cra.create_model('hf-hub:t-bad/no-config', pretrained=True)
    _edit_config(repo, lambda c: c.update(model_args={'checkpoint_path': str(tmp_path / 'elsewhere.pth')}))
    hub.add_repo('t-bad/loads', repo)
    with pytest.raises(PretrainedWeightsError, match=r"'model_args' holds 'checkpoint_path', which tell create_model "
                                                     r"what to load"):
        timm_cra.create_model('hf-hub:t-bad/loads', pretrained=True)


@pytest.mark.parametrize('weights', ['folder', 'fifo', 'missing'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_unreadable_weights_of_a_model_folder_name_the_folder_in_one_line(tmp_path, caplog, weights):
    """A model folder whose model.safetensors is a folder or a FIFO: timm logged its own 'No checkpoint found' line
    beside the one error line, and the error named the config's tag (cra_cifar_resnet20.cifar10), not the folder
    given; a folder without weights was a RuntimeError traceback. Checked before timm opens anything."""
    import logging
    repo = _repo_copy(tmp_path)
    (repo / 'model.safetensors').unlink()
    if weights == 'folder':
        (repo / 'model.safetensors').mkdir()
    elif weights == 'fifo':
        os.mkfifo(repo / 'model.safetensors')
    expected = {'folder': f'weights file {repo / "model.safetensors"} is a folder, not a file',
                'fifo': f'weights file {repo / "model.safetensors"} is a FIFO, not a file',
                'missing': f'the folder {repo} holds no weights file (model.safetensors)'}[weights]
    with caplog.at_level(logging.INFO), pytest.raises(PretrainedWeightsError) as info:
        timm_cra.create_model(f'local-dir:{repo}', pretrained=True)
    message = str(info.value)
    assert f"Pretrained weights for 'local-dir:{repo}': {expected}" in message and 'cifar10' not in message, message
    assert 'No checkpoint found' not in caplog.text
    assert timm_cra.create_model(f'local-dir:{repo}', pretrained=False).num_classes == 10  # its config alone
    if weights == 'missing':
        code, err = _cli(['--model', f'local-dir:{repo}'] + VALIDATE, tmp_path, 'timm_cra.eval')
        assert code == 2 and expected in err


# ---- FIFOs where a regular file belongs: named as such, never a hang ----------------------------------------------

@pytest.mark.parametrize('where', ['model.safetensors', 'config.json', '--checkpoint'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_fifo_is_refused_without_hanging(tmp_path, where):
    repo = _repo_copy(tmp_path)
    if where == '--checkpoint':
        os.mkfifo(tmp_path / 'last.pth')
        args = ['--model', 'cra_cifar_resnet20', '--checkpoint', tmp_path / 'last.pth']
    else:
        (repo / where).unlink()
        os.mkfifo(repo / where)
        args = ['--model', f'local-dir:{repo}', '--pretrained']
    code, err = _cli(args + VALIDATE, tmp_path, 'timm_cra.eval', timeout=60)  # a blocked read would time out
    assert code == 2 and 'is a FIFO, not a file' in err and 'does not exist' not in err, err


def test_fifo_as_resume_checkpoint_and_results_file(tmp_path):
    os.mkfifo(tmp_path / 'last.pth')
    code, err = _cli(TINY_TRAIN + ['--epochs', '1', '--output', tmp_path / 'out', '--resume', tmp_path / 'last.pth'],
                     tmp_path, 'timm_cra.train', timeout=60)
    assert code == 2 and 'is a FIFO' in err
    os.mkfifo(tmp_path / 'results.json')
    with pytest.raises(ValueError, match='is a FIFO'):
        load_eval_results(tmp_path / 'results.json')


# ---- weights: NaN / Inf, complex, another architecture's, torch's advice ----------------------------------------

@pytest.fixture(scope='module')
def published_state():
    return load_file(str(PUBLISHED / 'model.safetensors'))


def _strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f'{path} holds {constant}: not JSON')
    return json.loads(path.read_text(), parse_constant=refuse)


def test_nan_weights_refused_unless_allowed_and_nan_outputs_get_no_score(tmp_path, capsys, published_state):
    """NaN weights are refused unless --allow-nonfinite-weights; allowed, their NaN logits were scored (top-1 of
    NaN logits is arbitrary) with exit 0 and only a `loss_note`: now one line, exit 2, and no results file."""
    state = dict(published_state)
    state['fc.weight'] = state['fc.weight'].clone()
    state['fc.weight'][0, 0] = float('nan')
    save_file(state, str(tmp_path / 'nan.safetensors'))
    nan_file = str(tmp_path / 'nan.safetensors')
    err = _validate_in_process(capsys, ['--model', 'cra_cifar_resnet20', '--checkpoint', nan_file] + VALIDATE)
    assert 'hold NaN/Inf values: fc.weight (1 NaN/Inf of 640)' in err and '--allow-nonfinite-weights' in err
    results = tmp_path / 'r.json'
    with pytest.raises(SystemExit) as e:
        run_cli(validate_main, ['--model', 'cra_cifar_resnet20', '--checkpoint', nan_file, '--allow-nonfinite-weights',
                                '--results-file', str(results)] + VALIDATE)
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the datasets library's progress bar, if any
    assert e.value.code == 2 and err.startswith('error: ') and "The model's outputs are not finite (NaN / Inf logits) for 8 of 8 images, so they have no score" in err
    assert not results.exists()


def test_a_mean_std_of_another_channel_count_is_refused_not_averaged(capsys):
    """`--in-chans 1 --mean 0.5 0.5` was averaged silently; only the documented case (3 values, e.g. an RGB
    model's, for 1 channel) is averaged, the rest refused in one line."""
    base = ['--model', 'cra_cifar_resnet20', '--in-chans', '1'] + VALIDATE
    err = _validate_in_process(capsys, base + ['--mean', '0.5', '0.5'])
    assert '--mean has 2 values but the model takes 1 input channels: give 1 values (or one)' in err, err
    run_cli(validate_main, base + ['--mean', '0.5', '0.4', '0.3', '--std', '0.2', '0.25', '0.3'])  # averaged
    assert json.loads(capsys.readouterr().out)['count'] == 8


def test_nan_weights_in_a_model_folder(tmp_path, published_state):
    repo = _repo_copy(tmp_path)
    state = {k: (torch.full_like(v, float('inf')) if k == 'conv1.weight' else v) for k, v in published_state.items()}
    save_file(state, str(repo / 'model.safetensors'))
    with pytest.raises(PretrainedWeightsError, match=r"NaN/Inf values: conv1.weight \(432 NaN/Inf of 432\).*"
                                                     r"allow_nonfinite=True"):
        timm_cra.create_model(f'local-dir:{repo}', pretrained=True)
    model = timm_cra.create_model(f'local-dir:{repo}', pretrained=True, allow_nonfinite=True)
    assert torch.isinf(model.conv1.weight).all()


def test_integer_or_nan_weights_refused_whatever_file_a_folder_holds(tmp_path, capsys, published_state):
    """A folder with pytorch_model.bin instead of model.safetensors loads through timm's fallback: its int32 weights
    were scored (top1 10.0, exit 0) since only safetensors headers were checked. Now the same line for both."""
    int32 = {k: (v * 100).to(torch.int32) if v.is_floating_point() else v for k, v in published_state.items()}
    lines = []
    for name, save in (('model.safetensors', save_file), ('pytorch_model.bin', torch.save)):
        repo = _repo_copy(tmp_path, name.split('.')[0])
        (repo / 'model.safetensors').unlink()
        save(int32, str(repo / name))
        err = _validate_in_process(capsys, ['--model', f'local-dir:{repo}'] + VALIDATE)
        assert 'integer tensors for float parameters: conv1.weight (torch.int32)' in err, err
        lines.append(err.replace(str(repo), 'REPO'))
    assert lines[0] == lines[1]
    nan = {k: (torch.full_like(v, float('nan')) if k == 'fc.weight' else v) for k, v in published_state.items()}
    torch.save(nan, str(repo / 'pytorch_model.bin'))
    err = _validate_in_process(capsys, ['--model', f'local-dir:{repo}'] + VALIDATE)
    assert 'NaN/Inf values: fc.weight (640 NaN/Inf of 640)' in err and '--allow-nonfinite-weights' in err, err


@pytest.mark.parametrize('fault, says', [
    ('int32', 'integer tensors for float parameters: conv1.0.weight (torch.int32)'),
    ('nan', 'NaN/Inf values: fc.weight (2048 NaN/Inf of 2048)'),
])
def test_a_timm_architecture_in_a_model_folder_gets_the_weights_checks(tmp_path, fault, says):
    """timm_cra.create_model('local-dir:<folder>') of a plain timm architecture (resnet10t, written by timm's
    save_for_hf) loaded int32 or NaN weights without a word: only the cra_* builders checked them."""
    import timm
    from timm.models import save_for_hf
    from timm_cra import PretrainedWeightsError, create_model
    model = timm.create_model('resnet10t', num_classes=4)
    folder = tmp_path / 'resnet10t'
    save_for_hf(model, str(folder), safe_serialization=fault == 'int32')
    state = model.state_dict()
    if fault == 'int32':
        save_file({k: v.to(torch.int32) if v.is_floating_point() else v for k, v in state.items()},
                  str(folder / 'model.safetensors'))
    else:
        torch.save(dict(state, **{'fc.weight': torch.full_like(state['fc.weight'], float('nan'))}),
                   str(folder / 'pytorch_model.bin'))
    with pytest.raises(PretrainedWeightsError) as e:
        create_model(f'local-dir:{folder}', pretrained=True)
    assert says in str(e.value) and '\n' not in str(e.value), e.value
    if fault == 'nan':  # asked for, as for CRA models
        assert torch.isnan(create_model(f'local-dir:{folder}', pretrained=True, allow_nonfinite=True).fc.weight).all()
    save_for_hf(model, str(folder), safe_serialization=True)  # sound weights load as before
    (folder / 'pytorch_model.bin').unlink(missing_ok=True)
    loaded = create_model(f'local-dir:{folder}', pretrained=True)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_a_pytorch_model_bin_with_code_or_torn_is_one_line(tmp_path, capsys, published_state):
    """timm reads a folder's pytorch_model.bin with torch.load: a pickle naming a function, or a torn file, was a
    traceback (the first advising weights_only=False)."""
    repo = _repo_copy(tmp_path)
    (repo / 'model.safetensors').unlink()
    torch.save({'x': _RunsCode(str(tmp_path / 'ran'))}, str(repo / 'pytorch_model.bin'))
    err = _validate_in_process(capsys, ['--model', f'local-dir:{repo}'] + VALIDATE)
    assert f"'{repo / 'pytorch_model.bin'}' needs `posix.mkdir`, which loading would import and run" in err, err
    assert 'weights_only=False' not in err and not (tmp_path / 'ran').exists()
    torch.save(published_state, str(repo / 'pytorch_model.bin'))
    data = (repo / 'pytorch_model.bin').read_bytes()
    (repo / 'pytorch_model.bin').write_bytes(data[:len(data) // 2])
    err = _validate_in_process(capsys, ['--model', f'local-dir:{repo}'] + VALIDATE)
    assert f"'{repo / 'pytorch_model.bin'}' is not a readable torch checkpoint (truncated or corrupt" in err, err


def test_complex_weights_are_named_complex(tmp_path, capsys, published_state):
    state = {k: (v.to(torch.complex64) if k == 'fc.weight' else v) for k, v in published_state.items()}
    torch.save(state, tmp_path / 'c.pth')
    err = _validate_in_process(capsys, ['--model', 'cra_cifar_resnet20', '--checkpoint', str(tmp_path / 'c.pth')]
                               + VALIDATE)
    assert 'complex tensors for float parameters: fc.weight (torch.complex64)' in err and 'integer' not in err
    repo = _repo_copy(tmp_path)
    save_file(state, str(repo / 'model.safetensors'))
    with pytest.raises(PretrainedWeightsError, match=r"hold complex tensors for float parameters: "
                                                     r"fc.weight \(torch.complex64\)"):
        timm_cra.create_model(f'local-dir:{repo}', pretrained=True)


def test_float8_weights_are_checked_for_nan_not_a_traceback(tmp_path, capsys, published_state):
    """torch has no isfinite for float8: a model.safetensors of float8 weights was a NotImplementedError traceback.
    They are checked exactly (upcast): NaN in one is refused in one line; finite ones load like float16."""
    f8 = {k: (v.to(torch.float8_e4m3fn) if v.is_floating_point() else v) for k, v in published_state.items()}
    save_file(f8, str(tmp_path / 'f8.safetensors'))
    f8['fc.weight'][0, 0] = float('nan')
    save_file(f8, str(tmp_path / 'f8-nan.safetensors'))
    err = _validate_in_process(capsys, ['--model', 'cra_cifar_resnet20', '--checkpoint',
                                        str(tmp_path / 'f8-nan.safetensors')] + VALIDATE)
    assert 'hold NaN/Inf values: fc.weight (1 NaN/Inf of 640)' in err and '--allow-nonfinite-weights' in err, err
    validate_main(['--model', 'cra_cifar_resnet20', '--checkpoint', str(tmp_path / 'f8.safetensors')] + VALIDATE)
    assert '"count": 8' in capsys.readouterr().out


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_weights_of_another_architecture_are_one_line_with_counts(tmp_path):
    repo = _repo_copy(tmp_path)
    save_file(timm.create_model('resnet18', num_classes=10).state_dict(), str(repo / 'model.safetensors'))
    code, err = _cli(['--model', f'local-dir:{repo}', '--pretrained'] + VALIDATE, tmp_path, 'timm_cra.eval')
    # the folder's weights header is checked against the model its config.json describes before a tensor is read
    assert code == 2 and 'do not fit cra_cifar_resnet20' in err, err
    assert 'missing keys: layer1.0.se.conv.weight' in err and '(54 in all)' in err and '(76 in all)' in err
    assert len(err) < 1200, err


def test_unreadable_pickle_hides_torchs_weights_only_false_advice(tmp_path, capsys):
    import pickle
    import zipfile
    torch.save({'a': 1}, tmp_path / 'base.pth')
    with zipfile.ZipFile(tmp_path / 'base.pth') as zin, zipfile.ZipFile(tmp_path / 'odd.pth', 'w') as zout:
        for item in zin.infolist():  # a protocol-0 pickle: opcodes the weights-only unpickler does not read
            zout.writestr(item, pickle.dumps([1], protocol=0) if item.filename.endswith('data.pkl')
                          else zin.read(item.filename))
    err = _validate_in_process(capsys, ['--model', 'cra_cifar_resnet20', '--checkpoint', str(tmp_path / 'odd.pth')]
                               + VALIDATE)
    assert 'could not be read safely (Unsupported operand' in err
    assert 'weights_only` set to `False`' not in err and 'will likely succeed' not in err


# ---- eval results given to publish ------------------------------------------------------------------------------

@pytest.mark.parametrize('results, expected', [
    ({'top1': 91.2, 'top5': 99.7, 'dataset': ['cifar10']}, "'dataset' must be a string, not list"),
    ({'top1': 91.2, 'top5': 1000}, "'top5' must be a percentage between 0 and 100, not 1000"),
    ({'top1': True}, "'top1' must be a percentage between 0 and 100, not True"),
    ({'top1': 91.2, 'top5': 80.0}, 'top-5 accuracy 80.0 is below top-1 91.2'),
    ({'top1': 91.2, 'source': 'rumour'}, "'source' must be one of measured, paper"),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_publish_refuses_malformed_eval_results(tmp_path, results, expected):
    run = _repo_copy(tmp_path)  # a trainer-style folder: model.safetensors with its config.json
    (tmp_path / 'results.json').write_text(json.dumps(results))
    with pytest.raises(ValueError, match='eval results') as info:
        load_eval_results(tmp_path / 'results.json')
    assert expected in str(info.value)
    if 'top5' in results and results['top5'] == 1000:  # and through the real publish CLI
        code, err = _cli(['cra_cifar_resnet20.x', run / 'model.safetensors', '--results', tmp_path / 'results.json',
                          '--out', tmp_path / 'out'], tmp_path, 'timm_cra.hub.publish')
        assert code == 2 and expected in err and not (tmp_path / 'out').exists()


@pytest.mark.parametrize('summary, expected', [
    ({'final': [1]}, "'final' must be an object, not [1]"),
    ({'final': {'eval_top1': 50.0}, 'best_top1': 'x'}, "'best_top1' must be a percentage between 0 and 100, not 'x'"),
    # Infinity / NaN (what Python's json reads and the trainer never writes) was published as "inf%"
    ({'final': {'eval_top1': 50.0}, 'best_top1': float('inf')},
     "'best_top1' must be a percentage between 0 and 100, not inf"),
    # a number out of range was "must be a number, not 250.0"
    ({'final': {'eval_top1': 50.0}, 'best_top1': 250.0},
     "'best_top1' must be a percentage between 0 and 100, not 250.0"),
    ({'final': {'eval_top1': float('nan')}}, "'top1' must be a percentage between 0 and 100, not nan"),
    ({'final': {'eval_top1': 'abc'}}, "'top1' must be a percentage between 0 and 100, not 'abc'"),
])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_publish_names_the_file_and_key_of_a_malformed_trainer_results(tmp_path, summary, expected):
    """The trainer's results.json format (``final``, ``optimizer_steps``) with a wrong type: one line naming the
    file and the key through the real CLI (was a traceback, or a message naming no file)."""
    run = _repo_copy(tmp_path)
    results = tmp_path / 'results.json'
    results.write_text(json.dumps(dict(summary, optimizer_steps=3)))
    code, err = _cli(['cra_cifar_resnet20.x', run / 'model.safetensors', '--results', results, '--out',
                      tmp_path / 'out'], tmp_path, 'timm_cra.hub.publish')
    assert code == 2 and str(results) in err and expected in err and not (tmp_path / 'out').exists(), err


# ---- the trainer: a changed optimizer on --resume, a reused --experiment -----------------------------------------

@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """A real 1-epoch run of the trainer (SGD)."""
    out = tmp_path_factory.mktemp('bad-values-run')
    train(TINY_TRAIN + ['--epochs', '1', '--output', str(out), '--experiment', 'r'])
    return out


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_resume_with_another_optimizer_is_refused(trained, tmp_path):
    last = trained / 'r' / 'last.pth'
    code, err = _cli(TINY_TRAIN + ['--epochs', '2', '--output', trained, '--experiment', 'r', '--resume', last,
                                   '--opt', 'adamw'], tmp_path, 'timm_cra.train')
    assert code == 2 and "--opt 'sgd' -> 'adamw'" in err and f'--initial-checkpoint {last}' in err, err
    changed = r"--model-kwargs \{'layers': \(1, 1, 1, 1\)\} -> \{'layers': \(2, 1, 1, 1\)\}"
    with pytest.raises(UsageError, match=changed):
        train(TINY_MODEL[:2] + ['--model-kwargs', 'layers=(2,1,1,1)'] + TINY_TRAIN[4:]
              + ['--epochs', '2', '--output', str(tmp_path), '--resume', str(last)])


def test_reused_experiment_is_refused_unless_resume_or_overwrite(trained, tmp_path):
    run = tmp_path / 'r'
    shutil.copytree(trained / 'r', run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(UsageError, match=r"already holds a run \(last.pth, .*--resume .*--overwrite"):
        train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r', '--opt', 'adamw'])
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    with pytest.raises(UsageError, match=r"already holds another run .* than the one of --resume"):
        train(TINY_TRAIN + ['--epochs', '2', '--output', str(tmp_path), '--experiment', 'r',
                            '--resume', str(trained / 'r' / 'last.pth')])  # another run's checkpoint
    (run / 'results.json').unlink()
    (run / 'metrics.csv').unlink()  # any earlier-run file is enough
    with pytest.raises(UsageError, match='already holds a run'):
        train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r'])
    summary = train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r', '--opt', 'adamw',
                                  '--overwrite'])
    assert summary['epochs'] == 1
    ckpt = torch.load(run / 'last.pth', weights_only=True)
    assert ckpt['args']['opt'] == 'adamw' and 'exp_avg' in ckpt['optimizer']['state'][0]
    assert load_file(str(run / 'model.safetensors')).keys() == ckpt['state_dict'].keys()


def test_overwrite_never_deletes_the_weights_the_run_starts_from(trained, tmp_path):
    """`--experiment r --overwrite --initial-checkpoint r/last.pth` (or `--model local-dir:r`) deleted the earlier
    run's files, its own starting weights among them, before training; a run that then failed left nothing. It is
    refused before any work, with the files untouched; started from a copy, the same command runs."""
    run = tmp_path / 'r'
    shutil.copytree(trained / 'r', run)
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for flags in (['--initial-checkpoint', str(run / 'last.pth')],
                  ['--initial-checkpoint', str(tmp_path / '.' / 'r' / 'model.safetensors')]):
        with pytest.raises(UsageError, match=r"--overwrite would delete --initial-checkpoint .*earlier run in .*"
                                             r"Copy it out of that folder"):
            train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r', '--overwrite']
                  + flags)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before  # nothing touched
    shutil.copy(run / 'last.pth', tmp_path / 'start.pth')
    summary = train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r', '--overwrite',
                                  '--initial-checkpoint', str(tmp_path / 'start.pth')])
    assert summary['epochs'] == 1 and (run / 'model.safetensors').is_file()


def test_a_validation_loss_that_overflows_is_warned_and_recorded_as_strict_json(tmp_path, caplog):
    """`--lr 1e9`: the training loss stays finite, the weights too, but the outputs overflow on the validation
    images: the run ended "Done", rc 0, with a NaN eval loss and a chance-level top-1 that only results.json noted.
    The epoch's log now warns, naming the fix, and results.json keeps the loss as null with its reason."""
    summary = train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r', '--lr', '1e9'])
    warned = [r.getMessage() for r in caplog.records if 'validation loss is nan' in r.getMessage()]
    assert warned and 'lower --lr or set --clip-grad' in warned[0], [r.getMessage() for r in caplog.records][-5:]
    results = json.loads((tmp_path / 'r' / 'results.json').read_text())
    assert results['final']['eval_loss'] is None and results['final']['eval_loss_note'] == 'non-finite (nan)', results
    assert summary['epochs'] == 1


def test_an_ema_whose_outputs_are_not_finite_stops_the_run_before_its_checkpoint(tmp_path):
    """An EMA model whose validation outputs are NaN logged "EMA Acc@1: 50.00" (the top-1 of NaN logits), and
    publish shipped those EMA weights under that score. It now stops the run as a NaN training loss does, before
    last.pth (which keeps the epochs before: in epoch 0 there is none, and the line names none) and before any weights
    or results are written; the run folder it created goes again."""
    with pytest.raises(UsageError, match=r"The EMA model's validation loss became nan in epoch 0, so the run stopped: "
                                         r"its outputs are not finite"):
        train(TINY_TRAIN + ['--epochs', '1', '--output', str(tmp_path), '--experiment', 'r', '--lr', '1e9',
                            '--model-ema', '--model-ema-decay', '0'])
    assert not (tmp_path / 'r').exists()


# ---- argparse -----------------------------------------------------------------------------------------------------

def test_hub_generate_refuses_unknown_options(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE='1')
    proc = subprocess.run([sys.executable, str(REPO_ROOT / 'tools' / 'generate_hub.py'), '--bogus'], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'unrecognized arguments: --bogus' in proc.stderr
    assert not (tmp_path / 'hub').exists()


@pytest.mark.parametrize('module, flag', [('timm_cra.train.args', '--model-kwargs'), ('timm_cra.train.args', '--opt-kwargs'),
                                          ('timm_cra.eval.validate', '--model-kwargs'),
                                          ('timm_cra.export.cli', '--model-kwargs'),
                                          ('timm_cra.hub.publish', '--model-kwargs')])
def test_keyword_flags_refuse_an_item_that_is_not_name_equals_value(module, flag, capsys):
    """`--model-kwargs foo` (or `=1`) was timm's `ValueError: not enough values to unpack` traceback in every CLI
    that takes keywords; argparse now refuses the item by name, exit 2. NAME=VALUE items parse as before."""
    import importlib
    parser = importlib.import_module(module).create_parser()
    for item in ('foo', '=1', '1x=2'):
        with pytest.raises(SystemExit) as e:
            parser.parse_known_args([flag, 'a=1', item])
        assert e.value.code == 2
        assert f"argument {flag}: {item!r} is not NAME=VALUE" in capsys.readouterr().err
    action, parsed = next(a for a in parser._actions if flag in a.option_strings), argparse.Namespace()
    action(parser, parsed, ['layers=(1,1,1,1)', 'name=x'], flag)  # required arguments aside: the flag alone
    assert getattr(parsed, action.dest) == {'layers': (1, 1, 1, 1), 'name': 'x'}


def test_caller_keywords_get_the_ceilings_of_a_configs_model_args(capsys):
    """`--model-kwargs drop_rate=nan` was torch's dropout RuntimeError traceback, and `cra_pool_size=3000` built a
    model that allocates gigabytes: the caller's keywords are checked like a repo config's model_args (non-finite
    numbers, CRA pool at most the input side, depth), one line naming the keyword, before anything is built."""
    from timm_cra.eval.validate import create_parser
    parsed = create_parser().parse_args(['--model-kwargs', 'drop_rate=nan', 'drop_path_rate=-inf', 'x=1.5'])
    assert str(parsed.model_kwargs) == "{'drop_rate': nan, 'drop_path_rate': -inf, 'x': 1.5}"
    for kwargs, needle in (({'drop_rate': float('nan')}, "keyword 'drop_rate' nan must be finite"),
                           ({'cra_pool_size': 3000}, "keyword 'cra_pool_size' 3000 must be an integer (or two) "
                                                     "from 1 to 32 (at most the input side, 32 px"),
                           ({'layers': [1, 1, 100000]}, "keyword 'layers' [1, 1, 100000] is too deep"),
                           ({'num_classes': 10**9}, "keyword 'num_classes' 1000000000 must be 0 to 200000"),
                           ({'num_classes': -1}, "keyword 'num_classes' -1 must be 0 to 200000"),
                           ({'in_chans': 10**5}, "keyword 'in_chans' 100000 must be 0 to 1024")):
        with pytest.raises(UsageError, match=re.escape(needle)):
            timm_cra.create_model('cra_cifar_resnet20', **kwargs)
    assert timm_cra.create_model('cra_cifar_resnet20', cra_pool_size=4).num_classes == 10


def test_a_checkpoint_that_references_one_list_many_times_is_refused_in_bounded_time(tmp_path):
    """A 1.5 KB .pth whose pickle nests one list in itself 40 times (2**40 paths; torch.load reads it at once) hung
    every reader (validate, --initial-checkpoint, --resume, publish, upgrade) in the tensor-view walk. The walk
    now visits at most MAX_CHECKPOINT_ENTRIES entries: one line."""
    from timm_cra.utils.weights import MAX_CHECKPOINT_ENTRIES, read_weights
    shared = [0]
    for _ in range(40):
        shared = [shared, shared]
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'x': shared}, tmp_path / 'tiny.pth')
    assert (tmp_path / 'tiny.pth').stat().st_size < 4096
    with pytest.raises(UsageError, match=f'holds more than {MAX_CHECKPOINT_ENTRIES} entries'):
        read_weights(str(tmp_path / 'tiny.pth'))


def test_a_config_of_yaml_aliases_is_refused_before_any_walk_of_it(tmp_path):
    """A 600-byte YAML --config whose model_kwargs are 10 aliased levels of 10 (10**10 values) hung the trainer in
    the finite-number check of create_model; its opt_kwargs gave SGD's TypeError traceback. Both are one line: a
    config's aliases are refused as it is read (utils.strict_yaml), and keywords that reach create_model otherwise
    (Python callers) are still bounded by MAX_MODEL_ARGS_VALUES before any walk of them."""
    import timm_cra
    from timm_cra.train.args import parse_args
    levels = ['a0: &a0 [x, x, x, x, x, x, x, x, x, x]'] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    for key in ('model_kwargs', 'opt_kwargs'):
        config = tmp_path / f'{key}.yaml'
        config.write_text(f'{key}:\n' + ''.join(f'    {line}\n' for line in levels))
        assert config.stat().st_size < 1024
        with pytest.raises(UsageError, match=re.escape("uses the YAML alias *a0 (line 3)")):
            train(['--model', 'cra_cifar_resnet20'] + TINY_TRAIN[4:] + ['--config', str(config), '--epochs', '1',
                                                                   '--output', str(tmp_path / 'o'), '--experiment', key])
    nested = ['x'] * 10
    for _ in range(9):  # the same list ten times a level: 10**10 values in a few hundred bytes
        nested = [nested] * 10
    with pytest.raises(UsageError, match=re.escape('more than 100000 values')):
        timm_cra.create_model('cra_cifar_resnet20', bogus=nested)
    assert parse_args(['--opt-kwargs', 'bogus=1']).opt_kwargs == {'bogus': 1}
    with pytest.raises(UsageError, match=r"--opt sgd takes no keyword 'bogus' \(--opt-kwargs\)"):
        train(TINY_TRAIN + ['--opt-kwargs', 'bogus=1', '--epochs', '1', '--output', str(tmp_path / 'o'),
                            '--experiment', 'bogus'])


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_sparse_multi_gigabyte_config_json_is_one_line(tmp_path):
    """`truncate -s 6G config.json` (no bytes on disk) beside valid weights: the JSON reader read it whole
    (MemoryError traceback). Every JSON read stops past MAX_JSON_BYTES, one line; validate --checkpoint refuses
    the weights' unreadable record of their preprocessing instead of saying there is none."""
    from timm_cra.utils.strict_json import MAX_JSON_BYTES, read_json
    folder = tmp_path / 'm'
    shutil.copytree(PUBLISHED, folder)
    with open(folder / 'config.json', 'r+b') as f:
        f.truncate(6 * 2**30)
    with pytest.raises(UsageError, match=f'is over {MAX_JSON_BYTES // 2**20} MiB'):
        read_json(folder / 'config.json', 'config')
    with pytest.raises((UsageError, PretrainedWeightsError), match=f'over {MAX_JSON_BYTES // 2**20} MiB'):
        timm_cra.create_model(f'local-dir:{folder}', pretrained=True)
    # validate --checkpoint beside it warned "records no preprocessing (no config.json beside it)", then scored
    # with the architecture's defaults, rc 0: neither true
    code, err = _cli(['--model', 'cra_cifar_resnet20', '--checkpoint', folder / 'model.safetensors'] + VALIDATE,
                     tmp_path, 'timm_cra.eval')
    assert code == 2 and f'is over {MAX_JSON_BYTES // 2**20} MiB' in err and 'fix or remove it' in err, err


def test_weights_whose_header_names_the_classes_otherwise_than_the_config_beside_them_are_refused(tmp_path):
    """The trainer records the class names in model.safetensors' header and in config.json; a folder whose two
    lists disagree scored 80.3 through local-dir: (config.json) and 2.0 through --checkpoint (the header), both
    rc 0. Reading the weights now refuses the disagreement in one line."""
    from safetensors.torch import save_file as save
    from timm_cra.utils.weights import read_weights
    folder = tmp_path / 'm'
    shutil.copytree(PUBLISHED, folder)
    names = json.loads((folder / 'config.json').read_text())['label_names']
    weights = load_file(str(folder / 'model.safetensors'))
    save(weights, str(folder / 'model.safetensors'), metadata={'format': 'pt', 'label_names': json.dumps(names)})
    assert read_weights(str(folder / 'model.safetensors'))[1]['label_names'] == names  # they agree: read
    save(weights, str(folder / 'model.safetensors'),
         metadata={'format': 'pt', 'label_names': json.dumps(names[::-1])})
    with pytest.raises(UsageError, match='otherwise than the config.json beside it'):
        read_weights(str(folder / 'model.safetensors'))
    # the folder itself (local-dir:): timm reads the weights and labels with config.json's names; validate scored
    # 25.0 with rc 0 where the header's order gives 29.2. The same rule refuses it, before timm reads the file.
    refused = r"^timm_cra: Pretrained weights for 'local-dir:\S+' from .*names its classes in its header " \
              r"\(truck, ship, horse, \.\.\.\) otherwise than the config.json beside it \(airplane, automobile, bird"
    with pytest.raises(PretrainedWeightsError, match=refused):
        timm_cra.create_model(f'local-dir:{folder}', pretrained=True)
    assert timm_cra.create_model(f'local-dir:{folder}').num_classes == 10  # no weights read: nothing to disagree
    code, err = _cli(['--model', f'local-dir:{folder}'] + VALIDATE, tmp_path, 'timm_cra.eval')
    assert code == 2 and 'names its classes in its header (truck, ship, horse, ...) otherwise than the config.json' \
        in err, err


def test_a_run_file_that_is_a_symlink_is_never_written_through(trained, tmp_path):
    """`ln -s ../base/last.pth r2/last.pth; --resume r2/last.pth` replaced the other run's checkpoint; a run folder's
    model.safetensors linked into a published repo got this run's weights under the repo's card. A symlinked run
    file is refused before any work; the link's target is untouched."""
    import hashlib
    for name in ('last.pth', 'model.safetensors'):
        run = tmp_path / name / 'r'
        shutil.copytree(trained / 'r', run)
        (run / name).unlink()
        (run / name).symlink_to(trained / 'r' / name)
        before = hashlib.sha256((trained / 'r' / name).read_bytes()).hexdigest()
        with pytest.raises(UsageError, match=rf"'{re.escape(str(run / name))}' is a symlink to .*this run would "
                                             rf"write its {name} through it"):
            train(TINY_TRAIN + ['--epochs', '2', '--resume', str(run / 'last.pth')])
        assert hashlib.sha256((trained / 'r' / name).read_bytes()).hexdigest() == before


def test_running_out_of_memory_is_one_line_naming_what_to_lower(capsys):
    """An allocation the machine cannot hold (a batch too big for the GPU or the RAM) ended every CLI in a
    traceback of torch internals; it is one line naming the allocation and what to lower, exit 1. Other runtime
    errors keep their tracebacks (they are bugs or unexplained failures)."""
    def allocate(argv):
        torch.empty(2 ** 50, dtype=torch.uint8)  # a real failure of the CPU allocator: 1 PiB

    def raiser(err):
        def main(argv):
            raise err
        return main

    cases = [(allocate, 'out of CPU memory (an allocation of 1.0 PiB)'),
             (raiser(torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total '
                                            'capacity of 79.11 GiB of which 3.2 GiB is free.')),
              'out of GPU memory (an allocation of 20.00 GiB)'),
             (raiser(MemoryError()), 'out of CPU memory: ')]
    for main, start in cases:
        with pytest.raises(SystemExit) as e:
            run_cli(main, [])
        err = capsys.readouterr().err
        assert e.value.code == 1 and err.count('\n') == 1, err
        assert err.startswith(f'error: {start}') and 'lower --batch-size' in err, err
    with pytest.raises(RuntimeError, match='a bug'):
        run_cli(raiser(RuntimeError('a bug')), [])


@pytest.mark.parametrize('value, count, number, finite_number', [
    (3, True, True, True), (0, True, True, True), (-1, False, True, True), (True, False, False, False),
    (2.0, False, True, True), (float('nan'), False, True, False), (float('inf'), False, True, False),
    ('3', False, False, False), (None, False, False, False),
])
def test_record_values_are_checked_by_one_pair_of_predicates(value, count, number, finite_number):
    """A count or a number read from a record (results.json, a checkpoint, eval results) is judged in one place: a
    JSON ``true`` is neither, a float is no count, and only the card's checks refuse NaN / inf."""
    from timm_cra.utils.strict_json import is_count, is_number
    assert is_count(value) is count
    assert is_number(value, finite=False) is number
    assert is_number(value) is finite_number
