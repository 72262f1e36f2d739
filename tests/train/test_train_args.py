"""Trainer arguments: timm flag names, YAML configs (defaults) vs CLI (overrides), bundled recipes."""
import pytest
import timm
import torch

from timm_cra.data import UsageError
from timm_cra.train import create_optimizer, create_scheduler, list_recipes, parse_args
from timm_cra.utils.errors import run_cli


def test_recipes_bundled_and_parse():
    assert {'paper_imagenet', 'timm_modern', 'cifar', 'finetune'} <= set(list_recipes())
    for name in list_recipes():
        parse_args(['--config', name])


def test_paper_recipe_values():
    a = parse_args(['--config', 'paper_imagenet'])
    assert (a.epochs, a.batch_size, a.opt, a.lr, a.momentum, a.weight_decay) == (100, 256, 'sgd', 0.1, 0.9, 1e-4)
    assert (a.sched, a.decay_epochs, a.decay_rate, a.warmup_epochs) == ('step', 30, 0.1, 0)
    assert a.img_size == 224 and a.color_jitter == 0 and a.aa is None and a.smoothing == 0
    assert a.mixup == 0 and a.cutmix == 0 and not a.bce_loss
    assert (a.interpolation, a.crop_pct) == ('bicubic', 0.875)  # resize 256 -> crop 224
    assert a.filter_bias_and_bn is False


def test_cli_overrides_config(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('lr: 0.5\nepochs: 7\nmodel-ema: true\n')
    a = parse_args(['--config', str(cfg), '--lr', '0.01'])
    assert a.lr == 0.01 and a.epochs == 7 and a.model_ema is True
    assert parse_args(['--config', 'paper_imagenet', '--filter-bias-and-bn']).filter_bias_and_bn is True


def test_bad_configs(tmp_path):
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('learning_rate: 0.5\n')
    with pytest.raises(UsageError, match='unknown keys: learning_rate'):
        parse_args(['--config', str(cfg)])
    with pytest.raises(UsageError, match='neither a file nor a bundled recipe'):
        parse_args(['--config', 'no_such_recipe'])


def test_non_finite_settings_are_refused(tmp_path):
    """--lr inf (or `lr: .nan` in a config) would train to NaN weights and exit 0."""
    with pytest.raises(UsageError, match=r'Non-finite values: --lr inf'):
        parse_args(['--model', 'cra_cifar_resnet20', '--lr', 'inf'])
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('lr: .nan\nweight_decay: .inf\n')
    with pytest.raises(UsageError, match=r'Non-finite values: (?=.*--lr nan)(?=.*--weight-decay inf)'):
        parse_args(['--model', 'cra_cifar_resnet20', '--config', str(cfg)])


def test_data_values_are_checked_as_validate_checks_them(tmp_path):
    """train runs validate's check of the shared data flags (utils.cli.check_shared_values), config values
    included: --std 0 was torchvision's traceback, a NaN mean in a config trained on NaN inputs, and
    --train-num-samples -1 silently dropped the last example."""
    base = ['--model', 'cra_cifar_resnet20']
    with pytest.raises(UsageError, match=r'--std 1.0 0.0 1.0: every value must be above 0'):
        parse_args(base + ['--std', '1', '0', '1'])
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('mean: [0.5, .nan, 0.5]\ncrop_pct: 0.9\n')
    with pytest.raises(UsageError, match=r'Non-finite values: --mean 0.5 nan 0.5;'):
        parse_args(base + ['--config', str(cfg)])
    cfg.write_text('crop_pct: 0\n')
    with pytest.raises(UsageError, match=r'--crop-pct 0 must be in \(0, 2\]'):
        parse_args(base + ['--config', str(cfg)])
    for flag in ('--train-num-samples', '--val-num-samples'):
        with pytest.raises(UsageError, match=f'{flag} must be a positive integer, not -1'):
            parse_args(base + [flag, '-1'])
    with pytest.raises(UsageError, match=r'--img-size 32 and --input-size 3 16 16 set different sizes: pass one'):
        parse_args(base + ['--img-size', '32', '--input-size', '3', '16', '16'])
    # either size flag replaces a config's size (the cifar recipe's img_size: 32), as any flag replaces its config key
    args = parse_args(base + ['--config', 'cifar', '--input-size', '3', '16', '16'])
    assert (args.img_size, args.input_size) == (None, [3, 16, 16])
    assert parse_args(base + ['--config', 'cifar', '--img-size', '24']).img_size == 24
    assert parse_args(base + ['--img-size', '16', '--input-size', '3', '16', '16']).img_size == 16  # the same size
    args = parse_args(base + ['--img-size', '4096', '--crop-pct', '1.15', '--workers', '0', '--std', '0.25'])
    assert (args.img_size, args.crop_pct, args.workers, args.std) == (4096, 1.15, 0, [0.25])


def test_paper_recipe_decays_all_params():
    model = timm.create_model('cra_resnet18', layers=(1, 1, 1, 1), num_classes=10)
    n_params = sum(1 for _ in model.parameters())
    opt = create_optimizer(model, parse_args(['--config', 'paper_imagenet']))
    assert sum(len(g['params']) for g in opt.param_groups) == n_params
    assert all(g['weight_decay'] == 1e-4 for g in opt.param_groups)
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]['momentum'] == 0.9
    # timm's default exempts biases and norm weights -- the reason the recipe turns the filter off.
    timm_default = create_optimizer(model, parse_args(['--weight-decay', '1e-4']))
    assert {g['weight_decay'] for g in timm_default.param_groups} == {0.0, 1e-4}


def test_paper_recipe_lr_per_epoch():
    args = parse_args(['--config', 'paper_imagenet'])
    model = torch.nn.Linear(2, 2)
    opt = create_optimizer(model, args)
    sched, num_epochs = create_scheduler(opt, args, updates_per_epoch=10)
    assert num_epochs == 100
    lrs = []
    for epoch in range(num_epochs):  # the trainer's order: lr of epoch e, then step(e + 1) at its end
        lrs.append(opt.param_groups[0]['lr'])
        sched.step(epoch + 1)
    expected = [0.1] * 30 + [0.01] * 30 + [0.001] * 30 + [0.0001] * 10  # torch MultiStepLR([30, 60, 90])
    assert lrs == pytest.approx(expected)


def test_finetune_recipe_takes_input_config_from_the_model():
    """The recipe forced img_size 224 (a 32-px CIFAR model fine-tuned at 224 px) and kept a matching head."""
    a = parse_args(['--config', 'finetune'])
    assert a.img_size is None and a.input_size is None and a.mean is None and a.std is None
    assert a.crop_pct is None and a.interpolation == ''
    assert a.pretrained is True and a.reset_head is True


def test_pretrained_and_reset_head_switch_off():
    a = parse_args(['--config', 'finetune', '--no-pretrained', '--no-reset-head'])
    assert a.pretrained is False and a.reset_head is False
    assert parse_args(['--pretrained']).pretrained is True
    assert parse_args([]).in_chans is None and parse_args(['--in-chans', '1']).in_chans == 1


def test_default_workers_not_above_the_cpus(tmp_path):
    import os
    cpus = len(os.sched_getaffinity(0))
    assert 0 < parse_args([]).workers <= min(4, cpus)
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('workers: 512\n')
    assert parse_args(['--config', str(cfg)]).workers <= cpus  # a recipe's count is capped too
    assert parse_args(['--config', str(cfg), '--workers', '3']).workers == 3  # an explicit flag is not


@pytest.mark.parametrize('typo,suggestion', [('cra_resnet5O', 'cra_resnet50'),
                                             ('cra_cifar_resnt20.cifar10', 'cra_cifar_resnet20.cifar10')])
def test_model_typo_suggests_close_names(typo, suggestion):
    with pytest.raises(UsageError, match=f"Unknown --model '{typo}'. Did you mean: .*{suggestion}"):
        parse_args(['--model', typo])
    parse_args(['--model', 'local-dir:/nowhere'])  # sources timm resolves itself are not checked here


@pytest.mark.parametrize('script', ['timm-cra-train', 'timm-cra-validate'])
@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_model_typo_cli_one_line_exit_2(run_command, script, tmp_path):
    r = run_command(script, ['--model', 'cra_resnet5O', '--data-dir', tmp_path])
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        r.stderr.strip()] and r.stderr.startswith("error: Unknown --model 'cra_resnet5O'. Did you mean: cra_resnet50")


def test_cuda_device_without_cuda_is_one_line():
    from timm_cra.train.distributed import init_distributed
    if torch.cuda.is_available():
        pytest.skip('a CUDA device is available here')
    with pytest.raises(UsageError, match='no CUDA device is available here; pass --device cpu'):
        init_distributed('cuda:0')
    assert init_distributed('').device == torch.device('cpu')


@pytest.mark.parametrize('env', [{'WORLD_SIZE': '2'}, {'SLURM_NTASKS': '2', 'SLURM_PROCID': '0'}])
def test_a_stale_world_size_without_a_rendezvous_is_one_line(monkeypatch, env):
    """A shell that once ran torchrun (WORLD_SIZE=2) or an interactive SLURM allocation (SLURM_NTASKS=2), without
    MASTER_ADDR: torch's env:// rendezvous raised a ValueError traceback. One line names the variables and the fix."""
    from timm_cra.train.distributed import init_distributed
    for var in ('MASTER_ADDR', 'MASTER_PORT', 'RANK', 'WORLD_SIZE', 'SLURM_NTASKS', 'SLURM_PROCID'):
        monkeypatch.delenv(var, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    name = next(iter(env))
    with pytest.raises(UsageError, match=rf"^{name}=2 in the environment asks for a multi-process run, but "
                                         rf"MASTER_ADDR, MASTER_PORT.* not set: start it with torchrun .* unset {name}"):
        init_distributed('cpu')


def test_a_rendezvous_says_what_it_waits_for_before_waiting(cli_env):
    """With MASTER_ADDR set, the join waited silently (30 min by default) for ranks that never come: it now says
    first, in one line, how many processes it waits for and where."""
    import socket
    import subprocess
    import sys
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = dict(cli_env, WORLD_SIZE='2', RANK='0', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    proc = subprocess.Popen([sys.executable, '-c', 'from timm_cra.train.distributed import init_distributed; '
                             'init_distributed("cpu")'], env=env, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
    finally:
        proc.kill()
        proc.communicate()
    assert line.startswith(f'Waiting for 2 processes at 127.0.0.1:{port} (WORLD_SIZE=2; this is rank 0)'), line


def test_a_runs_args_yaml_repeats_the_run(cifar_run):
    """args.yaml records what the run started from (``initial_weights``, not a flag) and still works as --config."""
    import yaml
    _, run = cifar_run
    recorded = yaml.safe_load((run / 'args.yaml').read_text())
    assert 'initial_weights' in recorded and recorded['initial_weights'] is None  # random initialisation
    a = parse_args(['--config', str(run / 'args.yaml')])
    assert a.model == recorded['model'] and a.epochs == recorded['epochs']


def _one_error_line(argv, capsys) -> str:
    """``parse_args(argv)`` as the train CLI runs it: exit 2 and one ``error:`` line, which is returned."""
    from timm_cra.utils.errors import run_cli
    with pytest.raises(SystemExit) as e:
        run_cli(parse_args, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith('error: ') and err.count('\n') == 1, err
    return err


def test_config_values_of_the_wrong_type_are_one_line(tmp_path, capsys):
    """A list for lr, a word for epochs, a non-string key, a bad choice: one line naming the key and the fix (they
    were tracebacks, or reached the trainer); what YAML reads as strings (1e-3) and numbers for string flags work,
    and a run's own args.yaml still works as a config."""
    import yaml
    cases = {'lr: [1, 2]\n': 'lr must be a number, not [1, 2]',
             'epochs: ten\n': "epochs must be an integer, not 'ten'",
             'epochs: 1.5\n': 'epochs must be an integer, not 1.5',
             'amp: "yes"\n': "amp must be true or false, not 'yes'",
             'experiment: no\n': "experiment must be a string (YAML reads an unquoted yes / no / on / off / true / "
                                 "false as a boolean: quote it, e.g. 'no'), not False",
             'mean: [0.5, a, 0.5]\n': 'mean must be a list of one or more numbers',
             'input_size: [3, 32]\n': 'input_size must be a list of 3 integers',
             'amp_dtype: float64\n': 'amp_dtype must be one of float16, bfloat16',
             'model_kwargs: [1]\n': 'model_kwargs must be a mapping of keyword names to values',
             '1: x\n': 'has a key that is not a name (1)',
             'lr: null\n': 'lr must be a number, not None'}
    for i, (text, says) in enumerate(cases.items()):
        cfg = tmp_path / f'c{i}.yaml'
        cfg.write_text(text)
        err = _one_error_line(['--model', 'cra_cifar_resnet20', '--config', cfg], capsys)
        assert says in err and 'fix it in the file' in err or 'argument names' in err, err
    cfg = tmp_path / 'ok.yaml'
    cfg.write_text('lr: 1e-3\nbatch_size: "64"\nexperiment: 2024\nscale: [0.1, 1]\ninput_size: [3, 32, 32]\n'
                   'model_kwargs: {drop_rate: 0.1}\n')
    a = parse_args(['--model', 'cra_cifar_resnet20', '--config', str(cfg)])
    assert (a.lr, a.batch_size, a.experiment, a.scale, a.input_size) == (1e-3, 64, '2024', [0.1, 1], [3, 32, 32])
    recorded = tmp_path / 'args.yaml'  # what the trainer writes (_prepare_output) must read back as a config
    recorded.write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in vars(a).items()}))
    assert vars(parse_args(['--config', str(recorded)])) == dict(vars(a), config=str(recorded))


def test_config_numbers_are_read_as_written_not_as_yaml_1_1_base_60_or_octal(tmp_path, capsys):
    """YAML 1.1 forms were read silently: `epochs: 1:30` as 90 (base 60), `seed: 0777` as 511 (octal; the command
    line's --seed 0777 is 777). A leading zero is decimal as on the command line; a base-60 form stays the string
    written, named by the flag's type check in one line."""
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('seed: 0777\nlr: 0.05\nepochs: 0012\n')
    a = parse_args(['--model', 'cra_cifar_resnet20', '--config', str(cfg)])
    assert (a.seed, a.epochs) == (777, 12) == (parse_args(['--model', 'cra_cifar_resnet20', '--seed', '0777',
                                                           '--epochs', '0012']).seed, 12)
    for text, says in (('epochs: 1:30\n', "epochs must be an integer, not '1:30'"),
                       ('lr: 1:30.5\n', "lr must be a number, not '1:30.5'")):
        cfg.write_text(text)
        assert says in _one_error_line(['--model', 'cra_cifar_resnet20', '--config', cfg], capsys)


def test_zero_or_negative_batch_sizes_are_one_line(tmp_path, capsys):
    """-b -1 was torch's ValueError traceback; -b 0 / -vb 0 never yield a batch; also from a config."""
    for argv, says in [(['-b', '-1'], '--batch-size must be a positive integer, not -1'),
                       (['-b', '0'], '--batch-size must be a positive integer, not 0'),
                       (['-vb', '0'], '--validation-batch-size must be a positive integer, not 0')]:
        assert says in _one_error_line(['--model', 'cra_cifar_resnet20'] + argv, capsys)
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('batch_size: -8\n')
    assert '--batch-size must be a positive integer, not -8' in _one_error_line(['--config', cfg], capsys)


def test_a_config_that_records_resume_does_not_resume_by_itself(tmp_path, capsys):
    """A resumed run's args.yaml records `resume: <its last.pth>`: reused as --config for a new experiment it
    silently resumed that run. Refused in one line naming both fixes; --resume on the command line decides."""
    import yaml
    a = parse_args(['--model', 'cra_cifar_resnet20', '--resume', str(tmp_path / 'run' / 'last.pth')])
    recorded = tmp_path / 'args.yaml'
    recorded.write_text(yaml.safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in vars(a).items()}))
    err = _one_error_line(['--config', recorded, '--experiment', 'new'], capsys)
    assert f"sets resume: {tmp_path / 'run' / 'last.pth'}, and a config file never resumes a run by itself" in err
    assert "--resume ''" in err, err
    assert parse_args(['--config', str(recorded), '--resume', '']).resume == ''
    assert parse_args(['--config', str(recorded), f"--resume={a.resume}"]).resume == a.resume


def test_a_seed_outside_numpys_range_is_one_line(run_command, tmp_path, capsys):
    """`--seed -1`, `--seed 2**64` and a config's `seed: -1` reached numpy's / torch's seeding at set-up: tracebacks
    after the data was read. Now one line before any work (0 <= seed < 2**32), from the flag and from a config."""
    r = run_command('timm-cra-train', ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'none',
                                       '--output', tmp_path / 'out', '--seed', '-1'])
    assert r.returncode == 2 and r.stderr == 'error: --seed -1 must be an integer from 0 to 2**32 - 1 (numpy seeds ' \
                                             'its generator with it).\n', r.stderr[-2000:]
    assert not (tmp_path / 'out').exists()
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('seed: -1\n')
    for argv, says in [(['--seed', str(2 ** 64)], f'--seed {2 ** 64} must be an integer from 0 to 2**32 - 1'),
                       (['--config', cfg, '--seed', str(2 ** 32)], f'--seed {2 ** 32} must be an integer'),
                       (['--config', cfg], '--seed -1 must be an integer from 0 to 2**32 - 1')]:
        assert says in _one_error_line(['--model', 'cra_cifar_resnet20'] + argv, capsys), argv
    assert parse_args(['--model', 'cra_cifar_resnet20', '--seed', str(2 ** 32 - 1)]).seed == 2 ** 32 - 1


def test_a_recipe_name_that_is_also_a_file_here_is_refused(tmp_path, monkeypatch):
    """`--config finetune` (the README's) with a stray file `finetune` in the current folder trained with that file
    (lr 7.5) while args.yaml recorded only `config: finetune`. The clash is one line; `./finetune` reads the file,
    and without the file the name reads the bundled recipe."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / 'finetune').write_text('lr: 7.5\n')
    with pytest.raises(UsageError, match=r"names both a bundled recipe and a file in this folder: pass \./finetune"):
        parse_args(['--config', 'finetune'])
    assert parse_args(['--config', './finetune']).lr == 7.5
    (tmp_path / 'finetune').unlink()
    assert parse_args(['--config', 'finetune']).pretrained is True


@pytest.mark.parametrize('argv,says', [
    (['--device', 'bogus'], "--device 'bogus' is not a device: pass --device cpu, cuda or cuda:N"),
    (['--device', 'cuda:99'], '--device cuda:99: '),  # no CUDA here, or not 100 GPUs: one line either way
    (['--epochs', '0'], '--epochs must be a positive integer, not 0.'),
    (['--epochs', '-2'], '--epochs must be a positive integer, not -2.'),
    (['--lr', '-1'], '--lr -1.0 must be 0 or more.'),
    (['--weight-decay', '-1'], '--weight-decay -1.0 must be 0 or more.'),
    (['--momentum', '-0.5'], '--momentum -0.5 must be 0 or more.'),
    (['-b', '-4'], '--batch-size must be a positive integer, not -4.'),
    (['--workers', '-1'], '--workers -1 must be 0 (load in this process) or more.'),
    (['--log-interval', '0'], '--log-interval must be a positive integer, not 0.'),
    (['--decay-epochs', '0'], '--decay-epochs must be a positive number, not 0.0.'),
    (['--warmup-epochs', '-1'], '--warmup-epochs -1 must be 0 or more.'),
    (['--hflip', '1.5'], '--hflip 1.5 must be from 0 to 1.'),
    (['--model-ema-decay', '2'], '--model-ema-decay 2.0 must be from 0 to 1.'),
    (['--smoothing', '1.5'], '--smoothing 1.5 must be from 0 to below 1.'),
    (['--mean', '1e300', '0.5', '0.5'], '--mean 1e+300 0.5 0.5: every value must be from 0 to 1'),
    (['--drop', '1'], '--drop 1.0 must be from 0 to below 1.'),
    (['--opt-betas', '0.9', '1'], '--opt-betas 0.9 1.0 must be from 0 to below 1.'),
])
def test_nonsense_numbers_for_the_trainers_flags_are_one_line(argv, says, tmp_path, capsys):
    """`--device bogus`, `--epochs 0`, `--lr -1`, `--momentum -1` were tracebacks once the data was read (torch's
    device parser, timm's scheduler assert, torch's optimizers); `--weight-decay -1` trained until the loss was NaN.
    Each is one line from the trainer's CLI before any work (the checks of parse_args, so a config's values too)."""
    from timm_cra.train.trainer import main
    with pytest.raises(SystemExit) as e:
        run_cli(main, ['--model', 'cra_cifar_resnet20', '--data-dir', str(tmp_path / 'none'),
                       '--output', str(tmp_path / 'out')] + argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith(f'error: {says}') and err.count('\n') == 1, err
    assert not (tmp_path / 'out').exists()
    import yaml
    from timm_cra.train import create_parser
    dest = next(a.dest for a in create_parser()._actions if argv[0] in a.option_strings)
    cfg = tmp_path / 'c.yaml'  # the same value from a config file (YAML strings: read as the flag reads them)
    cfg.write_text(yaml.safe_dump({dest: argv[1] if len(argv) == 2 else argv[1:]}))
    assert says in _one_error_line(['--model', 'cra_cifar_resnet20', '--config', cfg], capsys)


def test_a_bogus_device_through_the_installed_cli(run_command, tmp_path):
    r = run_command('timm-cra-train', ['--model', 'cra_cifar_resnet20', '--data-dir', tmp_path / 'none',
                                       '--output', tmp_path / 'out', '--device', 'bogus'])
    assert r.returncode == 2 and r.stderr.startswith("error: --device 'bogus' is not a device") \
        and r.stderr.count('\n') == 1, r.stderr[-2000:]


def test_checkpoint_upgrade_help_describes_its_arguments(capsys):
    """`timm-cra-checkpoint upgrade --help` listed `src` and `dst` with no word on what they are."""
    from timm_cra.train.checkpoint import main
    with pytest.raises(SystemExit) as e:
        main(['upgrade', '--help'])
    out = capsys.readouterr().out
    assert e.value.code == 0 and 'the trainer checkpoint to read (a last.pth)' in out
    assert 'where to write the upgraded checkpoint' in out


def test_a_config_with_aliases_or_over_the_size_cap_is_one_line_at_once(tmp_path, capsys):
    """Nine levels of YAML aliases under `mean:` (440 bytes) hung training while its memory grew past 1.8 GB; a
    10 MB config took 36 s and 865 MB to be refused. Aliases are refused as composed, a config over
    MAX_CONFIG_BYTES before it is parsed."""
    from timm_cra.utils.strict_yaml import MAX_CONFIG_BYTES
    bomb = tmp_path / 'bomb.yaml'
    lines = ['a0: &a0 [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]']
    lines += [f'a{i}: &a{i} [{", ".join([f"*a{i - 1}"] * 9)}]' for i in range(1, 10)]
    bomb.write_text('\n'.join(lines) + '\nmean: *a9\n')
    err = _one_error_line(['--config', bomb], capsys)
    assert err == (f"error: Config '{bomb}' uses the YAML alias *a0 (line 2): configs are read without anchors and "
                   f"aliases (nested ones multiply a few bytes into gigabytes); write the value out.\n")
    merge = tmp_path / 'merge.yaml'  # a merge key was "could not determine a constructor for the tag ..."
    merge.write_text('epochs: 1\n<<: {lr: 0.02}\n')
    assert _one_error_line(['--config', merge], capsys) == (
        f"error: Config '{merge}' is not valid YAML: '<<' (line 2) is a YAML merge key: configs are read without "
        f"merge keys, anchors and aliases; write the keys out in \"{merge}\", line 2, column 1\n")
    big = tmp_path / 'big.yaml'
    big.write_text('lr: 0.1\n' + '#' * MAX_CONFIG_BYTES + '\n')
    err = _one_error_line(['--config', big], capsys)
    assert err.startswith(f'error: Config {big} is over 1 MiB, more than any training config holds'), err


def test_args_yaml_holds_no_alias_when_two_arguments_share_a_value(tmp_path):
    """yaml.safe_dump writes a value held under two keys as an anchor and an alias, which configs refuse; the
    trainer's args.yaml is written without them (utils.strict_yaml.safe_dump), so it stays a usable --config."""
    from timm_cra.utils.strict_yaml import safe_dump
    shared = [0.5, 0.5, 0.5]
    cfg = tmp_path / 'args.yaml'
    cfg.write_text(safe_dump({'mean': shared, 'std': shared, 'model': 'cra_cifar_resnet20'}))
    assert '&' not in cfg.read_text() and '*' not in cfg.read_text()
    a = parse_args(['--config', str(cfg)])
    assert a.mean == a.std == shared


def test_an_interpolation_timm_does_not_know_is_one_line(tmp_path, capsys):
    """--interpolation foo (flag or config) reached timm's transform as a KeyError traceback after the data loaded."""
    expected = ("error: --interpolation 'foo' is not one timm knows: nearest, bilinear, bicubic, box, hamming, "
                "lanczos.\n")
    assert _one_error_line(['--model', 'cra_cifar_resnet20', '--interpolation', 'foo'], capsys) == expected
    cfg = tmp_path / 'c.yaml'
    cfg.write_text('interpolation: foo\n')
    assert _one_error_line(['--model', 'cra_cifar_resnet20', '--config', cfg], capsys) == expected
    assert parse_args(['--model', 'cra_cifar_resnet20', '--interpolation', 'bicubic']).interpolation == 'bicubic'
    assert _one_error_line(['--model', 'cra_cifar_resnet20', '--train-interpolation', 'foo'], capsys) == (
        "error: --train-interpolation 'foo' is not one timm knows: random, nearest, bilinear, bicubic, box, hamming, "
        "lanczos.\n")
    assert parse_args(['--model', 'cra_cifar_resnet20', '--train-interpolation', 'random']).train_interpolation == 'random'


def test_a_config_that_records_overwrite_does_not_replace_a_run_by_itself(tmp_path):
    """An --overwrite run's args.yaml records `overwrite: true` with its own --output / --experiment: reused as
    --config (`--config out/ft/args.yaml --epochs 1`) it replaced that 8-epoch run with a 1-epoch one, exit 0.
    Replacing a run is the command line's choice: the recorded key is not taken, --overwrite still is."""
    from timm_cra.utils.strict_yaml import safe_dump
    a = parse_args(['--model', 'cra_cifar_resnet20', '--output', str(tmp_path), '--experiment', 'ft', '--overwrite'])
    recorded = tmp_path / 'args.yaml'
    recorded.write_text(safe_dump({k: list(v) if isinstance(v, tuple) else v for k, v in vars(a).items()}))
    assert 'overwrite: true' in recorded.read_text()
    again = parse_args(['--config', str(recorded), '--epochs', '1'])
    assert again.overwrite is False and again.experiment == 'ft'
    assert parse_args(['--config', str(recorded), '--overwrite']).overwrite is True


def test_a_control_character_in_a_config_is_named_not_blamed_on_the_encoding(tmp_path, capsys):
    """`lr: 0.1\\0` was 'not UTF-8 text ... save it as UTF-8': NUL is UTF-8, and saving again changes nothing."""
    cfg = tmp_path / 'nul.yaml'
    cfg.write_bytes(b'lr: 0.1\0\n')
    assert _one_error_line(['--model', 'cra_cifar_resnet20', '--config', cfg], capsys) == (
        f"error: Config '{cfg}' holds the character U+0000 (character 7), which YAML does not allow (control "
        f"characters, U+FFFE / U+FFFF): remove it.\n")


def test_a_usage_error_fits_on_a_screen(capsys):
    """argparse printed train's whole usage, 48 lines, before the error line: past a few lines the usage is a pointer
    to --help (utils.cli.CommandParser, every command's parser); a short usage is printed as argparse does."""
    from timm_cra.train.checkpoint import main as checkpoint_main
    with pytest.raises(SystemExit) as e:
        parse_args(['--bogus'])
    assert e.value.code == 2 and capsys.readouterr().err == (
        'usage: timm-cra-train [options]  (timm-cra-train --help lists them)\n'
        'timm-cra-train: error: unrecognized arguments: --bogus\n')
    with pytest.raises(SystemExit) as e:
        checkpoint_main([])
    assert e.value.code == 2 and capsys.readouterr().err.startswith('usage: timm-cra-checkpoint [-h] {upgrade}')


def test_resume_compares_settings_by_value_and_only_those_the_optimizer_holds():
    """A config's `weight_decay: 0` (an int) against the flag's 0.0 was a changed setting; so was --momentum on an
    AdamW run, whose groups hold none. Both change nothing: accepted. A real change is still refused, naming it."""
    import argparse
    from timm_cra.train.resume import _check_same_settings
    ckpt = {'args': {'weight_decay': 0, 'momentum': 0.9, 'opt_eps': 1e-8, 'opt_kwargs': {}},
            'optimizer': {'param_groups': [{'weight_decay': 0, 'eps': 1e-8, 'betas': [0.9, 0.999], 'lr': 0.1}]}}
    same = argparse.Namespace(weight_decay=0.0, momentum=0.5, opt_eps=1e-8, opt_kwargs={})
    _check_same_settings('last.pth', ckpt, same)
    with pytest.raises(UsageError, match=r"changed settings \(--weight-decay 0 -> 0\.1\)"):
        _check_same_settings('last.pth', ckpt, argparse.Namespace(**dict(vars(same), weight_decay=0.1)))
    ckpt['optimizer']['param_groups'][0]['momentum'] = 0.9  # SGD: momentum is the run's
    with pytest.raises(UsageError, match=r"changed settings \(--momentum 0\.9 -> 0\.5\)"):
        _check_same_settings('last.pth', ckpt, same)
    # --lr was taken without a word and ignored (the schedule restarts from the groups' initial_lr), while args.yaml
    # recorded it: refused as the other optimizer settings are
    ckpt['args']['lr'], same.momentum, same.lr = 0.1, 0.9, 0.1
    _check_same_settings('last.pth', ckpt, same)
    with pytest.raises(UsageError, match=r"changed settings \(--lr 0\.1 -> 0\.5\)"):
        _check_same_settings('last.pth', ckpt, argparse.Namespace(**dict(vars(same), lr=0.5)))
    # a string where the flag gives a number was worded as a changed command line
    with pytest.raises(UsageError, match=r"records --weight-decay as '5e-4', which the flag never gives, so it was "
                                         r"edited or damaged"):
        _check_same_settings('last.pth', dict(ckpt, args=dict(ckpt['args'], weight_decay='5e-4')), same)
    with pytest.raises(UsageError, match=r"changed settings \(--img-size None -> 40\)"):  # not given then: a change
        _check_same_settings('last.pth', dict(ckpt, args=dict(ckpt['args'], img_size=None)),
                             argparse.Namespace(**dict(vars(same), img_size=40)))


def test_resume_says_which_other_settings_it_takes(caplog):
    """--min-lr, --drop-path, --smoothing, --warmup-epochs changed on --resume were taken without a word (the schedule
    changed from the next epoch) while args.yaml then recorded them as the whole run's. Allowed, as in timm, but said
    in one warning naming each; where the run goes and how long (--workers, --epochs) are not."""
    import argparse
    import logging
    from timm_cra.train.resume import _check_same_settings
    ckpt = {'epoch': 2, 'args': {'min_lr': 0.0, 'drop_path': None, 'workers': 2, 'epochs': 3},
            'optimizer': {'param_groups': [{'lr': 0.1}]}}
    with caplog.at_level(logging.WARNING):
        _check_same_settings('last.pth', ckpt, argparse.Namespace(min_lr=0.0, drop_path=None, workers=0, epochs=9))
        assert caplog.text == ''
        _check_same_settings('last.pth', ckpt, argparse.Namespace(min_lr=0.01, drop_path=0.2, workers=0, epochs=9))
    assert ("Resuming 'last.pth' with settings other than the run's (--drop-path None -> 0.2; --min-lr 0.0 -> 0.01): "
            "they apply from epoch 2 on") in caplog.text, caplog.text
