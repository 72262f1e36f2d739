"""The console scripts (``[project.scripts]`` in pyproject.toml), one per command-line tool.

Each runs its module's ``main(argv)`` under :func:`~timm_cra.utils.errors.run_cli` (bad input: one ``error:``
line, exit 2; Ctrl-C: ``interrupted``, exit 130) through :func:`~timm_cra.utils.extras.run_command`, importing the
module only then, so a missing optional extra is that one line too (checked by the
command once its arguments are parsed: ``--help`` works without it) and ``timm-cra-hub-mirror`` imports neither
torch nor timm. ``python -m <module>`` (the second column) runs the same ``main`` the same way.
"""
from .utils.extras import run_command

#: console script -> the module whose ``main`` it runs (also ``python -m <module>``)
COMMANDS = {
    'timm-cra-train': 'timm_cra.train',
    'timm-cra-validate': 'timm_cra.eval',
    'timm-cra-export': 'timm_cra.export',
    'timm-cra-publish': 'timm_cra.hub.publish',
    'timm-cra-convert': 'timm_cra.hub.convert_official',
    'timm-cra-checkpoint': 'timm_cra.train.checkpoint',
    'timm-cra-hub-mirror': 'timm_cra.hub.server',
}
#: where a package's ``main`` lives (its ``__init__`` imports the whole package; the CLI needs only this)
_MAIN_MODULES = {'timm_cra.train': 'timm_cra.train.trainer', 'timm_cra.eval': 'timm_cra.eval.validate',
                 'timm_cra.export': 'timm_cra.export.cli'}


def _run(script: str) -> None:
    module = COMMANDS[script]
    run_command(_MAIN_MODULES.get(module, module))


def train() -> None:
    _run('timm-cra-train')


def validate() -> None:
    _run('timm-cra-validate')


def export() -> None:
    _run('timm-cra-export')


def publish() -> None:
    _run('timm-cra-publish')


def convert() -> None:
    _run('timm-cra-convert')


def checkpoint() -> None:
    _run('timm-cra-checkpoint')


def hub_mirror() -> None:
    _run('timm-cra-hub-mirror')
