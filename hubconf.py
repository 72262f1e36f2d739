"""torch.hub entry points, as timm's own repository has them: one per architecture this package registers
(the ``cra_*`` ones and the CIFAR study's baselines, ``cifar_resnet20`` and its SE / ECA variants).

    model = torch.hub.load('<owner>/<this repo>', 'cra_cifar_resnet20', pretrained=True)
    model = torch.hub.load('path/to/clone', 'cra_resnet50', source='local', num_classes=10)

The code is the clone's (torch.hub puts the clone first on ``sys.path``, so ``import timm_cra`` below imports
it, unless the process imported ``timm_cra`` before). Each entry point is ``timm.create_model(name, ...)``:
the same arguments, pretrained tags (``pretrained_cfg='<tag>'``), Hub-first weight resolution with the
bundled fallback, and errors.
"""
dependencies = ['torch', 'timm', 'huggingface_hub', 'safetensors']

import timm as _timm

import timm_cra as _timm_cra  # registers the package's architectures with timm


def _entrypoint(name: str):
    def create(pretrained: bool = False, **kwargs):
        return _timm.create_model(name, pretrained=pretrained, **kwargs)
    create.__name__ = create.__qualname__ = name
    create.__doc__ = _timm.models.model_entrypoint(name).__doc__
    return create


globals().update({_name: _entrypoint(_name) for _name in _timm_cra.models.list_package_models()})
