"""CONTRIBUTING's "Add an architecture" checklist, followed on a toy: one cfg-table row and one thin entrypoint in
a module of ``timm_cra.models``, and nothing else edited. A pytest subprocess (timm's registry is global: the toy
never reaches this process) loads the toy module by path before collection and runs the parametrised model tests
on it, plus the checks of what is derived from the registry (hub/, the docs' tag table)."""
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import timm

import timm_cra  # noqa: F401  (registers the real models)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOY_ARCH = 'cra_resnet10t'  # timm's resnet10t (one basic block per stage) with CRA

# The two edits of the checklist, as they would go into timm_cra/models/cra_resnet.py.
TOY_MODULE = f'''
from timm.models import register_model
from timm.models.resnet import BasicBlock, ResNet

from timm_cra.models._builder import default_cfgs_marked
from timm_cra.models.cra_resnet import _cfg, _cra_args, _create_cra_resnet

default_cfgs = default_cfgs_marked({{
    '{TOY_ARCH}.untrained*': _cfg(first_conv='conv1.0'),
}}, base_weights=True)


@register_model
def {TOY_ARCH}(pretrained: bool = False, **kwargs) -> ResNet:
    """CRA-ResNet-10-T."""
    model_args = _cra_args(BasicBlock, (1, 1, 1, 1), stem_width=32, stem_type='deep_tiered', avg_down=True)
    return _create_cra_resnet('{TOY_ARCH}', pretrained, **dict(model_args, **kwargs))
'''

# A pytest plugin (-p) that imports the toy file by path as a module of timm_cra.models, before collection.
LOADER = '''
import importlib.util
import sys

import timm_cra.models

spec = importlib.util.spec_from_file_location('timm_cra.models.cra_toy', {path!r})
module = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = module
spec.loader.exec_module(module)
'''

#: The parametrised checks every new architecture must get (a test added later only adds to them).
TOY_CHECKS = {
    'test_cra_is_the_only_addition_to_the_base_model', 'test_cra_in_every_block', 'test_default_cfg_fields',
    'test_every_tag_names_real_first_conv_and_classifier', 'test_features_only_and_out_indices',
    'test_forward_intermediates', 'test_head_reset_in_chans_drop_path_global_pool',
    'test_grad_checkpointing_gives_same_gradients', 'test_channels_last_model_matches',
    'test_families_gate_in_place_at_inference_with_identical_outputs', 'test_fx_symbolic_trace', 'test_torch_export',
    'test_every_imagenet_cra_arch_has_a_gates_untrained_tag_of_timms_default_base_weights',
    'test_base_keys_map_onto_the_cra_arch', 'test_tag_loads_the_base_weights_from_the_hub',
    'test_retrofit_gives_the_cra_architecture_and_keeps_every_base_weight',
}
TEST_FILES = ['tests/models/test_cra_models.py', 'tests/models/test_cra_export.py', 'tests/models/test_retrofit.py',
              'tests/models/test_retrofit_tags.py', 'tests/hub/test_generate.py', 'tests/tools/test_model_table.py']


@pytest.mark.slow  # a minute of subprocesses: the slow step keeps the fast suite near 10 minutes
def test_a_new_architecture_is_one_table_row_and_one_entrypoint(tmp_path, cli_env):
    assert not timm.is_model(TOY_ARCH), f'{TOY_ARCH} is now a real architecture: give the toy another base'
    (tmp_path / 'cra_toy.py').write_text(TOY_MODULE)
    (tmp_path / 'toy_loader.py').write_text(LOADER.format(path=str(tmp_path / 'cra_toy.py')))
    report = tmp_path / 'report.xml'
    select = f'{TOY_ARCH} or hub_folder_has_no_drift or gates_untrained_table_is_current'
    proc = subprocess.run(
        [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'toy_loader', '-k', select,
         f'--junit-xml={report}', *TEST_FILES],
        env=dict(cli_env, PYTHONPATH=f'{tmp_path}:{cli_env["PYTHONPATH"]}'), cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=600)
    assert report.is_file(), proc.stdout[-3000:] + proc.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(report).iter('testcase'):
        failed = case.find('failure') if case.find('failure') is not None else case.find('error')
        skipped = case.find('skipped')
        outcomes[case.get('name')] = ('failed: ' + (failed.get('message') or '') if failed is not None
                                      else 'skipped' if skipped is not None else 'passed')
    ran = {name.partition('[')[0] for name in outcomes if TOY_ARCH in name}
    assert TOY_CHECKS <= ran, f'not run on the toy: {sorted(TOY_CHECKS - ran)}'
    bad = {name: o for name, o in outcomes.items() if TOY_ARCH in name and o != 'passed'}
    assert not bad, bad
    # Derived from the registry: hub/ is unchanged (the toy has no weights repo of its own) ...
    assert outcomes['test_committed_hub_folder_has_no_drift'] == 'passed'
    # ... and the docs' table of gates-untrained tags lacks the toy's row, naming the one command that adds it.
    table = outcomes['test_docs_gates_untrained_table_is_current']
    assert table.startswith('failed') and 'run python tools/model_table.py --update-docs' in table, table
