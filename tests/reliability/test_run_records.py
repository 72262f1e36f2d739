"""What a run records about its weights is what validate scores and publish quotes: the preprocessing a run trained
with, the weights a validate result scored, which weights a resumed run starts from, and a weights file's header
checked against the model before any tensor is read. One tiny run (cra_cifar_resnet20, 3 colour classes, trained
with an extreme --mean/--std so that another preprocessing scores it at chance) feeds every test."""
import json
import logging
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import timm_cra
from timm_cra import PretrainedWeightsError
from timm_cra.eval.validate import main as validate_main
from timm_cra.hub import publish
from timm_cra.train import train
from timm_cra.train.args import parse_args
from timm_cra.utils.errors import UsageError

RUN_MEAN, RUN_STD = [0.9, 0.1, 0.1], [0.05, 0.05, 0.05]


@pytest.fixture(scope='module')
def colour_run(tmp_path_factory, single_torch_thread):
    """``(data folder, run folder)``: red / green / blue images, trained 3 epochs with RUN_MEAN / RUN_STD."""
    root = tmp_path_factory.mktemp('colour_run')
    rng = np.random.default_rng(0)
    for split, n in (('train', 8), ('val', 3)):
        for i, c in enumerate('abc'):
            for j in range(n):
                img = rng.integers(0, 40, (32, 32, 3), dtype=np.uint8)
                img[..., i] += 180
                path = root / 'data' / split / c / f'{j}.png'
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(path)
    train(['--model', 'cra_cifar_resnet20', '--data-dir', str(root / 'data'), '--dataset', 'folder', '--epochs', '3',
           '-b', '8', '--lr', '0.05', '--mean', *map(str, RUN_MEAN), '--std', *map(str, RUN_STD), '--output',
           str(root / 'out'), '--experiment', 'run', '--device', 'cpu', '-j', '0', '--no-plot'])
    return root / 'data', root / 'out' / 'run'


def _validate(data, *args):
    return validate_main(['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--split', 'val', '--no-progress',
                          '--device', 'cpu', '-j', '0', *map(str, args)])


def test_validate_scores_a_checkpoint_with_the_preprocessing_its_run_recorded(colour_run, tmp_path, caplog):
    data, run = colour_run
    folder = _validate(data, '--model', f'local-dir:{run}')  # the run's config.json: the reference
    assert folder['mean'] == pytest.approx(RUN_MEAN) and folder['top1'] == 100.0
    alone = tmp_path / 'alone'  # last.pth without its folder: the run's arguments inside it
    alone.mkdir()
    shutil.copy(run / 'last.pth', alone / 'last.pth')
    for checkpoint, source in ((run / 'model.safetensors', 'config.json'), (run / 'last.pth', 'config.json'),
                               (alone / 'last.pth', "run's arguments")):
        r = _validate(data, '--checkpoint', checkpoint)  # was: the architecture's mean/std, 33.3, exit 0
        assert source in r['preprocessing'] and r['mean'] == pytest.approx(RUN_MEAN), r
        assert (r['top1'], r['loss']) == (folder['top1'], folder['loss'])
    flagged = _validate(data, '--checkpoint', alone / 'last.pth', '--mean', 0.5, 0.5, 0.5)  # flags win
    assert flagged['mean'] == [0.5] * 3 and flagged['std'] == pytest.approx(RUN_STD)
    assert '--mean' in flagged['preprocessing']
    bare = tmp_path / 'bare.pth'  # a plain state dict records nothing: the defaults, said in one warning line
    torch.save(torch.load(run / 'last.pth', weights_only=True)['state_dict'], bare)
    with caplog.at_level(logging.WARNING, logger='timm_cra.validate'):
        r = _validate(data, '--checkpoint', bare)
    assert r['mean'] != pytest.approx(RUN_MEAN) and 'defaults' in r['preprocessing']
    warned = [m for m in caplog.messages if 'records no preprocessing' in m]
    assert len(warned) == 1 and '\n' not in warned[0] and '--mean' in warned[0]


def test_publish_refuses_validate_results_of_other_weights(colour_run, tmp_path):
    data, run = colour_run
    scored = tmp_path / 'scored.json'
    _validate(data, '--checkpoint', run / 'model.safetensors', '--results-file', scored)
    out = tmp_path / 'repo'
    publish.main(['cra_cifar_resnet20.col', str(run / 'model.safetensors'), '--results', str(scored),
                  '--out', str(out)])  # the weights it scored: accepted, quoted
    assert '100.0' in (out / 'README.md').read_text()
    # last.pth holds the tensors of the model.safetensors exported from it (state_dict_sha256): the same weights in
    # another file, accepted (it was refused as "other weights")
    publish.main(['cra_cifar_resnet20.col', str(run / 'last.pth'), '--results', str(scored),
                  '--out', str(tmp_path / 'same')])
    assert '100.0' in (tmp_path / 'same' / 'README.md').read_text()
    older = tmp_path / 'older.json'  # results recorded before state_dict_sha256: held to the file's own sha256
    older.write_text(json.dumps({k: v for k, v in json.loads(scored.read_text()).items()
                                 if k != 'state_dict_sha256'}))
    with pytest.raises(UsageError, match=r'scored other weights than .*last\.pth.*checkpoint_sha256 .*'
                                         r'model\.safetensors, not of this file\): publish .*model\.safetensors '
                                         r'instead, or validate .*timm-cra-validate --checkpoint'):
        publish.main(['cra_cifar_resnet20.col', str(run / 'last.pth'), '--results', str(older),
                      '--out', str(tmp_path / 'r2')])
    random_init = tmp_path / 'random.json'
    _validate(data, '--num-classes', 3, '--results-file', random_init)
    assert json.loads(random_init.read_text())['pretrained'] is False
    with pytest.raises(UsageError, match=r'scored a random initialisation .*pretrained: false'):
        publish.main(['cra_cifar_resnet20.col', str(run / 'model.safetensors'), '--results', str(random_init),
                      '--out', str(tmp_path / 'r3')])
    for count in (-3, 2.5, True, 0):
        bad = tmp_path / 'count.json'
        bad.write_text(json.dumps(dict(json.loads(scored.read_text()), count=count)))
        with pytest.raises(UsageError, match=r"'count' \(images scored\) must be a positive integer"):
            publish.main(['cra_cifar_resnet20.col', str(run / 'model.safetensors'), '--results', str(bad),
                          '--out', str(tmp_path / 'r4')])
    assert not any((tmp_path / f'r{i}').exists() for i in (2, 3, 4))


def _relabelled_header(src: Path, dst: Path, **changes) -> None:
    """``src``'s tensors saved at ``dst`` with its header metadata changed (``label_names`` / ``data_config`` given
    as Python values): what an edit after validation leaves, the tensors' digest unchanged."""
    from safetensors import safe_open
    with safe_open(str(src), 'pt') as f:
        metadata, state = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    metadata.update({k: json.dumps(v) for k, v in changes.items()})
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(dst), metadata=metadata)


def test_a_header_preprocessing_other_than_its_config_json_is_refused(colour_run, tmp_path):
    """A run folder whose model.safetensors header was given other preprocessing than the config.json beside it (an
    edit, a file copied in) was read by each reader its own way without a word: `--checkpoint` and publish took the
    config's, the file copied alone its header's. As for class names, the folder is refused until re-exported."""
    data, run = colour_run
    folder = Path(shutil.copytree(run, tmp_path / 'edited'))
    config = json.loads((folder / 'config.json').read_text())
    _relabelled_header(run / 'model.safetensors', folder / 'model.safetensors',
                       data_config=dict(config['pretrained_cfg'], mean=[0.1, 0.1, 0.1], interpolation='nearest'))
    says = (r"'.*edited/model\.safetensors' records other preprocessing in its header than the config\.json beside it "
            r"\(interpolation nearest \(config\.json: bilinear\); mean \[0\.1, 0\.1, 0\.1\] \(config\.json: "
            r"\[0\.9, 0\.1, 0\.1\]\)\), so its readers would disagree .*: put back the files the run wrote, or copy "
            r"the weights out of that folder\.")
    with pytest.raises(UsageError, match=says):
        _validate(data, '--checkpoint', folder / 'model.safetensors')
    with pytest.raises(UsageError, match=says):
        publish.main(['cra_cifar_resnet20.col', str(folder / 'model.safetensors'), '--out', str(tmp_path / 'r')])
    assert not (tmp_path / 'r').exists()
    _validate(data, '--checkpoint', run / 'model.safetensors')  # the folder as the trainer wrote it: read as before


def test_publish_refuses_results_whose_class_names_or_preprocessing_the_repo_would_not_have(colour_run, tmp_path):
    """``state_dict_sha256`` is a digest of the tensors only: results that scored the outputs as other classes, or the
    images with other preprocessing, than the repo gets were published with their score (card 100%, repo 50% or at
    chance). validate records ``label_names`` (the classes scored, in output order) and ``data_config``; publish
    refuses a repo that differs, in one line naming both and the fix, and writes nothing."""
    data, run = colour_run
    refused = []

    def publish_refused(match, *argv):
        out = tmp_path / f'r{len(refused)}'
        refused.append(out)
        with pytest.raises(UsageError, match=match) as e:
            publish.main([*map(str, argv), '--out', str(out)])
        assert '\n' not in str(e.value)

    # (1) a plain state dict scored by position (the data's a, b, c), published with the names in another order
    bare = tmp_path / 'bare' / 'model.pth'
    bare.parent.mkdir()
    torch.save(torch.load(run / 'last.pth', weights_only=True)['state_dict'], bare)
    by_position = tmp_path / 'by_position.json'
    _validate(data, '--checkpoint', bare, '--results-file', by_position)
    record = json.loads(by_position.read_text())
    assert record['class_mapping'] == 'by position' and record['label_names'] == ['a', 'b', 'c']
    assert record['data_config']['mean'] == pytest.approx(record['mean'])
    publish_refused(r"by_position\.json scored the outputs as the classes a, b, c, but the repo would name them b, a, "
                    r"c, .*: fix --label-names \(class-index order: a, b, c\), or validate the weights you publish",
                    'cra_cifar_resnet20.col', bare, '--num-classes', 3, '--label-names', 'b,a,c', '--results',
                    by_position)
    publish.main(['cra_cifar_resnet20.col', str(bare), '--num-classes', '3', '--label-names', 'a,b,c', '--results',
                  str(by_position), '--out', str(tmp_path / 'ok1')])  # the order scored: accepted
    publish.main(['cra_cifar_resnet20.col', str(bare), '--num-classes', '3', '--results', str(by_position),
                  '--out', str(tmp_path / 'ok2')])  # no names ('0'..'2'): scored by index as validate did

    # (2) last.pth beside a config.json naming the classes in another order: publish took the config's names while
    # validate --checkpoint took last.pth's; both now refuse, as for a model.safetensors header
    swapped = Path(shutil.copytree(run, tmp_path / 'swapped'))
    config = json.loads((swapped / 'config.json').read_text())
    config['label_names'] = ['b', 'a', 'c']
    (swapped / 'config.json').write_text(json.dumps(config))
    scored = tmp_path / 'scored.json'
    _validate(data, '--checkpoint', run / 'model.safetensors', '--results-file', scored)
    publish_refused(r"swapped/last\.pth' names its classes \(a, b, c, \.\.\.\) otherwise than the config\.json beside "
                    r"it \(b, a, c, \.\.\.\): re-export the folder", 'cra_cifar_resnet20.col', swapped / 'last.pth',
                    '--results', scored)
    with pytest.raises(UsageError, match=r"names its classes .* otherwise than the config\.json beside it"):
        _validate(data, '--checkpoint', swapped / 'last.pth')

    # (3) / (4) the weights file's header relabelled, or given other preprocessing, after validation
    relabelled = tmp_path / 'relabelled' / 'model.safetensors'
    _relabelled_header(run / 'model.safetensors', relabelled, label_names=['b', 'a', 'c'])
    publish_refused(r"scored\.json scored the outputs as the classes a, b, c, but the repo would name them b, a, c, "
                    r".*: validate the weights you publish \(timm-cra-validate --checkpoint .*relabelled",
                    'cra_cifar_resnet20.col', relabelled, '--results', scored)
    edited = tmp_path / 'edited' / 'model.safetensors'
    _relabelled_header(run / 'model.safetensors', edited,
                       data_config=dict(json.loads(scored.read_text())['data_config'], mean=[0.5] * 3,
                                        interpolation='nearest'))
    publish_refused(r"scored\.json scored the images with other preprocessing than the repo would get "
                    r"\(interpolation bilinear \(repo: nearest\); mean \[0\.9, 0\.1, 0\.1\] \(repo: \[0\.5, 0\.5, "
                    r"0\.5\]\)\): validate the weights you publish", 'cra_cifar_resnet20.col', edited, '--results', scored)

    # results of an older validate (a digest, but neither field): refused, they cannot be checked
    older = tmp_path / 'older.json'
    older.write_text(json.dumps({k: v for k, v in json.loads(scored.read_text()).items()
                                 if k not in ('label_names', 'data_config')}))
    publish_refused(r"older\.json records no label_names or data_config \(written by an older timm-cra-validate\), "
                    r".*: validate the weights you publish", 'cra_cifar_resnet20.col', run / 'model.safetensors',
                    '--results', older)
    for key, value, says in (('label_names', 'abc', "'label_names' \\(the classes scored\\) must be a list"),
                             ('data_config', [1], "'data_config' \\(the preprocessing scored with\\) must be an object"),
                             ('data_config', None, 'records no data_config'),
                             # an emptied or partial record compared nothing and passed (campaign 10)
                             ('data_config', {}, r"records no input_size, interpolation, mean, std or crop_pct in its "
                                                 r"data_config, so publish cannot tell .*: validate the weights"),
                             ('data_config', {'input_size': [3, 32, 32], 'crop_pct': 1.0},
                              r"records no interpolation, mean or std in its data_config")):
        bad = tmp_path / 'bad.json'
        bad.write_text(json.dumps(dict(json.loads(scored.read_text()), **{key: value})))
        publish_refused(says, 'cra_cifar_resnet20.col', run / 'model.safetensors', '--results', bad)
    assert not any(out.exists() for out in refused)
    for source in (run / 'model.safetensors', run / 'last.pth'):  # the weights scored, as recorded: accepted
        publish.main(['cra_cifar_resnet20.col', str(source), '--results', str(scored), '--out',
                      str(tmp_path / f'ok-{source.name}')])
        assert '100.0' in (tmp_path / f'ok-{source.name}' / 'README.md').read_text()


def test_publish_refuses_results_of_other_weights_however_validate_loaded_them(colour_run, tmp_path, hub):
    """``validate --model local-dir:<another repo>`` / ``hf-hub:`` / a registered tag recorded no digest of the
    weights scored, so publish quoted their numbers (top-1 0.0) on a card for any checkpoint, and results taken
    before a ``--resume`` passed after it. validate records ``state_dict_sha256`` (the tensors scored) whichever way
    it loaded them, and publish takes the results only for those tensors, whatever file holds them."""
    data, run = colour_run
    cifar = Path(__file__).resolve().parents[2] / 'hub' / 'timm-cra' / 'cra_cifar_resnet20.cifar10'
    named = tmp_path / 'named'  # the colour images in folders named as CIFAR-10's classes: scored by name
    for c, name in zip('abc', ('airplane', 'bird', 'cat')):
        shutil.copytree(data / 'val' / c, named / 'val' / name)
    for how, model in (('local-dir', ['--model', f'local-dir:{cifar}']),
                       ('hf-hub', ['--model', 'hf-hub:timm-cra/cra_cifar_resnet20.cifar10']),
                       ('tag', ['--model', 'cra_cifar_resnet20.cifar10', '--pretrained'])):
        results = tmp_path / f'{how}.json'
        _validate(named, *model, '--results-file', results)
        with pytest.raises(UsageError, match=r'scored other weights than .*last\.pth.* state_dict_sha256 .* the '
                                             r'tensors of .*cra_cifar_resnet20\.cifar10, not of the weights '
                                             r'published\): validate the weights you publish'):
            publish.main(['cra_cifar_resnet20.mine', str(run / 'last.pth'), '--results', str(results),
                          '--out', str(tmp_path / how)])
        assert not (tmp_path / how).exists()
    # the tag's results are those of the repo's own file (the weights the tag loads): accepted for it
    publish.main(['cra_cifar_resnet20.again', str(cifar / 'model.safetensors'), '--results',
                  str(tmp_path / 'tag.json'), '--out', str(tmp_path / 'again')])

    copy = Path(shutil.copytree(run, tmp_path / 'copy'))  # validated, then resumed for one more epoch
    before = tmp_path / 'before.json'
    _validate(data, '--model', f'local-dir:{copy}', '--results-file', before)
    publish.main(['cra_cifar_resnet20.col', str(copy / 'last.pth'), '--results', str(before),
                  '--out', str(tmp_path / 'ok')])  # the folder's weights are last.pth's: accepted
    train(['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--dataset', 'folder', '--epochs', '4', '-b', '8',
           '--lr', '0.05', '--mean', *map(str, RUN_MEAN), '--std', *map(str, RUN_STD), '--device', 'cpu', '-j', '0',
           '--resume', str(copy / 'last.pth'), '--no-plot'])
    with pytest.raises(UsageError, match=r'scored other weights than .*copy/last\.pth.* state_dict_sha256 '):
        publish.main(['cra_cifar_resnet20.col', str(copy / 'last.pth'), '--results', str(before),
                      '--out', str(tmp_path / 'after')])
    assert not (tmp_path / 'after').exists()


def test_resume_refuses_another_initial_checkpoint_and_changed_preprocessing(colour_run, tmp_path):
    data, run = colour_run
    with pytest.raises(UsageError, match=r"--resume .* would never be used: drop --initial-checkpoint"):
        parse_args(['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--resume', str(run / 'last.pth'),
                    '--initial-checkpoint', str(run / 'model.safetensors')])
    before, args_before = (run / 'last.pth').read_bytes(), (run / 'args.yaml').read_bytes()
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--dataset', 'folder', '--epochs', '4', '-b', '8',
            '--lr', '0.05', '--device', 'cpu', '-j', '0', '--resume', str(run / 'last.pth'), '--no-plot']
    for changed, shown in ((['--mean', '0.5', '0.5', '0.5', '--std', *map(str, RUN_STD)], '--mean'),
                           (['--mean', *map(str, RUN_MEAN), '--std', *map(str, RUN_STD), '--img-size', '40'],
                            '--img-size'),
                           # an optimizer setting: was worded as a checkpoint "edited or damaged"
                           (['--mean', *map(str, RUN_MEAN), '--std', *map(str, RUN_STD), '--weight-decay', '0.1'],
                            '--weight-decay'),
                           (['--mean', *map(str, RUN_MEAN), '--std', *map(str, RUN_STD), '--momentum', '0.5'],
                            '--momentum'),
                           # ignored without a word (the schedule restarts from the saved base) but written to
                           # args.yaml
                           (['--mean', *map(str, RUN_MEAN), '--std', *map(str, RUN_STD), '--lr', '0.5'], '--lr')):
        with pytest.raises(UsageError, match=rf'changed settings \({shown} '):
            train(base + changed)
    assert (run / 'last.pth').read_bytes() == before and (run / 'args.yaml').read_bytes() == args_before


def _with_extra_tensor(src: Path, dst: Path, name: str, dtype: str, shape) -> None:
    """``src``'s safetensors bytes plus one tensor ``name`` declared in the header, its data a hole: a sparse file."""
    raw = src.read_bytes()
    n = struct.unpack('<Q', raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    end = max(v['data_offsets'][1] for k, v in header.items() if k != '__metadata__')
    size = int(np.prod(shape)) * {'F32': 4, 'I8': 1}[dtype]
    header[name] = {'dtype': dtype, 'shape': list(shape), 'data_offsets': [end, end + size]}
    text = json.dumps(header).encode()
    text += b' ' * (-len(text) % 8)
    with open(dst, 'wb') as f:
        f.write(struct.pack('<Q', len(text)) + text + raw[8 + n:8 + n + end])
        f.truncate(8 + len(text) + end + size)


def test_a_weights_header_is_checked_against_the_model_before_any_tensor_is_read(colour_run, tmp_path):
    data, run = colour_run
    folder = tmp_path / 'big'
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns('*.pth'))
    # one extra tensor claiming 4 GiB (a sparse file, a megabyte on disk): safetensors' load_file read it all
    _with_extra_tensor(run / 'model.safetensors', folder / 'model.safetensors', 'extra', 'F32', (2 ** 30,))
    assert os.path.getsize(folder / 'model.safetensors') > 4 * 2 ** 30
    assert os.stat(folder / 'model.safetensors').st_blocks * 512 < 16 * 2 ** 20
    with pytest.raises(UsageError, match=r"do not fit .*unexpected keys: extra"):
        _validate(data, '--checkpoint', folder / 'model.safetensors')
    with pytest.raises(PretrainedWeightsError, match=r"unexpected keys: extra.*re-export the folder") as e:
        timm_cra.create_model(f'local-dir:{folder}', pretrained=True)
    assert '\n' not in str(e.value)
    # tensors of another shape, missing or extra: refused by the header, in one line with the counts
    state = load_file(run / 'model.safetensors')
    key = next(k for k, v in state.items() if v.ndim == 4)
    state[key] = torch.zeros(7, 7)
    state.pop('fc.bias')
    state.update(extra_a=torch.zeros(1), extra_b=torch.zeros(1))
    save_file(state, tmp_path / 'w.safetensors')
    with pytest.raises(UsageError, match=rf"missing keys: fc.bias; unexpected keys: extra_a, extra_b \(2 in all\); "
                                         rf"size mismatch: {key} \(7, 7\) vs model"):
        _validate(data, '--checkpoint', tmp_path / 'w.safetensors')


def test_class_names_that_do_not_name_the_head_of_the_checkpoint_scored(colour_run, tmp_path, caplog):
    data, run = colour_run
    state = load_file(run / 'model.safetensors')
    for names in (['a', 'b', 'c', 'd'], ['a', 'b']):  # 4 names were scored by position, 2 named an empty list
        path = tmp_path / f'{len(names)}' / 'w.safetensors'
        path.parent.mkdir()
        save_file(state, path, metadata={'format': 'pt', 'label_names': json.dumps(names)})
        with pytest.raises(UsageError, match=rf"records {len(names)} label names for a 3-class head.*re-export"):
            _validate(data, '--checkpoint', path)
    bare = tmp_path / 'bare.safetensors'  # no names: the --model folder's names are not this head's
    save_file(state, bare)
    with caplog.at_level(logging.WARNING, logger='timm_cra.validate'):
        r = _validate(data, '--model', f'local-dir:{run}', '--checkpoint', bare)
    assert r['class_mapping'] == 'by position' and any('scored by position' in m for m in caplog.messages)


@pytest.mark.slow  # over ~15 s on 2 cores (many processes or epochs): CI step 2
def test_a_checkpoint_with_a_long_list_of_numbers_is_refused_as_a_bound_not_as_damage(colour_run, tmp_path):
    from timm_cra.utils.weights import MAX_CHECKPOINT_ENTRIES
    data, run = colour_run
    path = tmp_path / 'losses.pth'
    torch.save({'state_dict': load_file(run / 'model.safetensors'), 'losses': [0.5] * MAX_CHECKPOINT_ENTRIES}, path)
    with pytest.raises(UsageError, match=rf'holds more than {MAX_CHECKPOINT_ENTRIES} entries .* the most this '
                                         rf'reader walks .*as tensors') as e:
        _validate(data, '--checkpoint', path)
    assert 'damaged' not in str(e.value) and '\n' not in str(e.value)


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_a_weights_file_copied_alone_keeps_its_preprocessing_for_validate_and_publish(colour_run, tmp_path,
                                                                                      run_command):
    """The run's model.safetensors copied on its own was published with the architecture's default preprocessing
    (rc 0, no word), while validate warned on the same file. The trainer records its data config in the weights'
    header too: validate scores the lone file with it, publish writes it into the repo's config.json (and header);
    a weights file that records none is published with one warning line saying so."""
    data, run = colour_run
    alone = tmp_path / 'alone'
    alone.mkdir()
    shutil.copy(run / 'model.safetensors', alone / 'w.safetensors')
    r = _validate(data, '--checkpoint', alone / 'w.safetensors')
    assert 'header' in r['preprocessing'] and r['mean'] == pytest.approx(RUN_MEAN) and r['top1'] == 100.0, r
    proc = run_command('timm-cra-publish', ['cra_cifar_resnet20.alone', alone / 'w.safetensors', '--out',
                                            tmp_path / 'pub'])
    assert proc.returncode == 0 and 'preprocessing' not in proc.stderr, proc.stderr[-3000:]
    cfg = json.loads((tmp_path / 'pub' / 'config.json').read_text())['pretrained_cfg']
    assert cfg['mean'] == pytest.approx(RUN_MEAN) and cfg['std'] == pytest.approx(RUN_STD)
    republished = _validate(data, '--checkpoint', tmp_path / 'pub' / 'model.safetensors')
    assert republished['mean'] == pytest.approx(RUN_MEAN) and republished['top1'] == 100.0
    bare = tmp_path / 'bare.safetensors'  # tensors only: nothing says how they were trained
    save_file(load_file(str(alone / 'w.safetensors')), str(bare))
    proc = run_command('timm-cra-publish', ['cra_cifar_resnet20.bare', bare, '--num-classes', 3, '--out',
                                            tmp_path / 'pub_bare'])
    warned = [line for line in proc.stderr.splitlines() if 'records no preprocessing' in line]
    assert proc.returncode == 0 and len(warned) == 1 and "last.pth" in warned[0], proc.stderr[-3000:]


@pytest.mark.slow  # over ~6 s on 2 cores (CLI processes, real runs): CI step 2
def test_export_of_a_checkpoint_uses_the_input_size_its_run_recorded(colour_run, tmp_path, run_command):
    """export --checkpoint <run>/last.pth of a 40-px run wrote a 32x32 graph (the architecture's size), while validate
    --checkpoint and export --model local-dir:<run> use the recorded 40: all read it with recorded_data_config (the
    run's config.json, else the header of a lone weights file, else the run's arguments); --img-size still wins."""
    pytest.importorskip('onnxruntime')
    data, _ = colour_run
    train(['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--dataset', 'folder', '--epochs', '1', '-b', '8',
           '--img-size', '40', '--output', str(tmp_path), '--experiment', 'px40', '--device', 'cpu', '-j', '0',
           '--no-plot'])
    run = tmp_path / 'px40'
    alone = tmp_path / 'alone'
    alone.mkdir()
    shutil.copy(run / 'last.pth', alone / 'last.pth')  # the run's arguments only
    shutil.copy(run / 'model.safetensors', alone / 'w.safetensors')  # the header only
    for checkpoint, flags, size in ((run / 'last.pth', [], 40), (alone / 'last.pth', [], 40),
                                    (alone / 'w.safetensors', [], 40), (run / 'last.pth', ['--img-size', 48], 48)):
        proc = run_command('timm-cra-export', ['--model', 'cra_cifar_resnet20', '--checkpoint', checkpoint, '-o',
                                               tmp_path / 'm.onnx', '--no-verify', *flags])
        assert proc.returncode == 0 and f'input (batch, 3, {size}, {size})' in proc.stdout, proc.stderr[-3000:]


@pytest.mark.parametrize('hostile', [{'mean': [float('nan')] * 3}, {'std': [0, 0, 0]}, {'mean': [120.0, 115.0, 100.0]},
                                     {'input_size': [3, 8000, 8000]}, {'interpolation': 'foo'}])
def test_publish_refuses_preprocessing_recorded_in_a_header_that_no_loader_accepts(colour_run, tmp_path, hostile):
    """A weights file alone whose header records a NaN mean, a zero std, a 0-255 mean, a huge input or an unknown
    interpolation was published with rc 0 into config.json (NaN as a bare token), which validate and
    timm_cra.create_model then refused and plain timm scored at chance. Publish checks the recorded preprocessing as
    config.json is checked on load (models._factory.pretrained_cfg_problem): one line naming where it was read."""
    _, run = colour_run
    tensors = load_file(str(run / 'model.safetensors'))
    with open(run / 'model.safetensors', 'rb') as f:
        header = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
    metadata = dict(header['__metadata__'])
    metadata['data_config'] = json.dumps({**json.loads(metadata['data_config']), **hostile})
    weights = tmp_path / 'w.safetensors'
    save_file(tensors, str(weights), metadata=metadata)
    with pytest.raises(UsageError, match=r"^The preprocessing recorded in the header of .*w\.safetensors cannot be "
                                         r"published: pretrained_cfg '(mean|std|input_size|interpolation)' "):
        publish.main(['cra_cifar_resnet20.hostile', str(weights), '--out', str(tmp_path / 'pub')])
    assert not (tmp_path / 'pub').exists()


def test_publish_holds_the_trainers_results_to_the_preprocessing_the_repo_gets(colour_run, tmp_path):
    """The trainer's results.json was checked against the weights' digest only: a config.json beside last.pth with
    another mean (or interpolation) than the run evaluated with was published under the trainer's number (card 90.00,
    the repo re-scored 88.89). The trainer records what its evals scored with, as validate does, and publish holds
    the repo to it; the run as written still publishes."""
    _, run = colour_run
    summary = json.loads((run / 'results.json').read_text())
    assert summary['data_config']['mean'] == pytest.approx(RUN_MEAN) and summary['label_names'] == ['a', 'b', 'c']
    publish.main(['cra_cifar_resnet20.colour', str(run / 'last.pth'), '--results', str(run / 'results.json'),
                  '--out', str(tmp_path / 'as_written')])
    edited = tmp_path / 'edited'
    shutil.copytree(run, edited)
    config = json.loads((edited / 'config.json').read_text())
    config['pretrained_cfg']['mean'] = [0.5, 0.5, 0.5]
    (edited / 'config.json').write_text(json.dumps(config))
    with pytest.raises(UsageError, match=r"^\S+/edited/results.json scored the images with other preprocessing "
                                         r"than the repo would get \(mean \[0.9, 0.1, 0.1\] \(repo: \[0.5, 0.5, 0.5\]\)"):
        publish.main(['cra_cifar_resnet20.colour', str(edited / 'last.pth'), '--results',
                      str(edited / 'results.json'), '--out', str(tmp_path / 'pub')])
    assert not (tmp_path / 'pub').exists()


def test_a_fine_tune_from_weights_trained_with_other_preprocessing_says_so(colour_run, tmp_path, caplog):
    """--initial-checkpoint of weights whose run recorded mean 0.9 / 0.1 / 0.1 trained on the architecture's
    defaults without a word. It may be meant (a fine-tune may change the preprocessing), so it is a warning naming
    each difference and the flags; with the same flags, nothing is said."""
    data, run = colour_run
    base = ['--model', 'cra_cifar_resnet20', '--data-dir', str(data), '--dataset', 'folder', '--epochs', '1', '-b', '8',
            '--device', 'cpu', '-j', '0', '--no-plot', '--initial-checkpoint', str(run / 'model.safetensors'),
            '--output', str(tmp_path)]
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        train(base + ['--experiment', 'defaults'])
    warned = [m for m in caplog.messages if '--initial-checkpoint was trained with other preprocessing' in m]
    assert len(warned) == 1 and f"the config.json beside {run / 'model.safetensors'}" in warned[0], caplog.messages
    assert 'mean [0.9, 0.1, 0.1] (this run: (0.4914' in warned[0] and 'std [0.05, 0.05, 0.05]' in warned[0], warned
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger='timm_cra'):
        train(base + ['--experiment', 'same', '--mean', *map(str, RUN_MEAN), '--std', *map(str, RUN_STD)])
    assert not [m for m in caplog.messages if 'other preprocessing' in m], caplog.messages


def test_a_repo_published_without_names_can_be_named_later(colour_run, tmp_path):
    """A repo published without class names records '0'..'K-1' (what transformers shows then); publishing its weights
    again with --label-names was refused as renaming classes ('records its class names (0, 1, 2): drop
    --label-names'). Numbered names are no names: naming them is accepted; renaming named classes is still refused."""
    data, run = colour_run
    bare = tmp_path / 'bare.pth'
    torch.save(torch.load(run / 'last.pth', weights_only=True)['state_dict'], bare)
    publish.main(['cra_cifar_resnet20.col', str(bare), '--num-classes', '3', '--out', str(tmp_path / 'unnamed')])
    assert json.loads((tmp_path / 'unnamed' / 'config.json').read_text())['label_names'] == ['0', '1', '2']
    publish.main(['cra_cifar_resnet20.col', str(tmp_path / 'unnamed' / 'model.safetensors'), '--label-names', 'a,b,c',
                  '--out', str(tmp_path / 'named')])
    assert json.loads((tmp_path / 'named' / 'config.json').read_text())['label_names'] == ['a', 'b', 'c']
    with pytest.raises(UsageError, match=r"records its class names \(a, b, c\): drop --label-names"):
        publish.main(['cra_cifar_resnet20.col', str(tmp_path / 'named' / 'model.safetensors'), '--label-names',
                      'x,y,z', '--out', str(tmp_path / 'renamed')])
    assert not (tmp_path / 'renamed').exists()
