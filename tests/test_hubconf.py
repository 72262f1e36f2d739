"""``hubconf.py``: ``torch.hub.load(<clone>, <architecture>, source='local')`` builds the clone's models and resolves
weights as ``timm.create_model`` does (offline here: the bundled copy of the published CIFAR weights)."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

REPO_ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = REPO_ROOT / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10' / 'model.safetensors'


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_torch_hub_load_from_the_clone_gives_the_published_weights(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}  # the clone is imported via torch.hub only
    env.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path / 'empty-cache'), OMP_NUM_THREADS='1')
    code = textwrap.dedent(f'''
        import hashlib, json, torch
        repo = {str(REPO_ROOT)!r}
        model = torch.hub.load(repo, 'cra_cifar_resnet20', source='local', pretrained=True)
        small = torch.hub.load(repo, 'cra_cifar_resnet20', source='local', num_classes=3, in_chans=1)
        base = torch.hub.load(repo, 'cifar_resnet20', source='local', pretrained=True, pretrained_cfg='cifar10_e50')
        import importlib.util, timm, timm_cra
        spec = importlib.util.spec_from_file_location('hubconf', repo + '/hubconf.py')
        hubconf = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(hubconf)
        # what torch.hub.list(<github repo>) returns: the public callables of hubconf
        names = [n for n in dir(hubconf) if callable(getattr(hubconf, n)) and not n.startswith('_')]
        print(json.dumps({{
            'file': timm_cra.__file__, 'names': names, 'small': [small.num_classes, small.conv1.in_channels],
            'doc': hubconf.cra_cifar_resnet20.__doc__,
            'registered': timm_cra.models.list_package_models(),
            'base_fc': hashlib.sha256(base.fc.weight.detach().contiguous().numpy().tobytes()).hexdigest(),
            'sha': {{k: hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest()
                    for k, v in model.state_dict().items()}}}}))
    ''')
    proc = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out['file']).is_relative_to(REPO_ROOT)  # the clone's code
    assert sorted(out['names']) == sorted(out['registered']) and {'cra_resnet50', 'cifar_resnet20'} <= set(out['names'])
    base_fc = load_file(str(PUBLISHED.parents[1] / 'cifar_resnet20.cifar10_e50' / 'model.safetensors'))['fc.weight']
    assert out['base_fc'] == hashlib.sha256(base_fc.contiguous().numpy().tobytes()).hexdigest()  # the baseline too
    assert 'CRA in every block' in out['doc'] and out['small'] == [3, 1]
    published = load_file(str(PUBLISHED))
    assert sorted(out['sha']) == sorted(published)
    for k, v in published.items():
        assert out['sha'][k] == hashlib.sha256(v.contiguous().numpy().tobytes()).hexdigest(), k
