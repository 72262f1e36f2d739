#!/usr/bin/env python
"""Publish a finished CIFAR campaign run as a Hub repo folder in hub/ (dry run; push with python -m timm_cra.hub.publish).

Validates the run's weights on the CIFAR-10 test split shipped in data/cifar10 (the number the card and the
README's no-argument validate command show for the main job's tag), writes results/<arch>.<tag>.json, then exports
hub/timm-cra/<arch>.<tag>/ (config.json, model.safetensors, README.md) with ``timm_cra.hub.publish`` (the one
publishing path; the run's config.json supplies the model kwargs), and regenerates its config.json and card as
tools/generate_hub.py does for every registered tag. The tag names the campaign (cifar10: e15, cifar10_<recipe>:
that recipe) and must be registered first.

  python tools/publish_cifar.py cra_max4_resnet20 0 --tag cifar10        # the e15 campaign's run
  python tools/publish_cifar.py cra_max4_resnet20 0 --tag cifar10_e50    # the e50 campaign's run
"""
import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import timm  # noqa: E402

import timm_cra  # noqa: E402,F401  (registers the models)
from timm_cra.eval.validate import create_parser, validate  # noqa: E402
from timm_cra.hub import publish  # noqa: E402
from timm_cra.hub.card import code_span  # noqa: E402
from tools.generate_hub import generate_hub  # noqa: E402
from timm_cra.utils.errors import UsageError, run_cli  # noqa: E402
from timm_cra.utils.io import atomic_path  # noqa: E402
from timm_cra.utils.strict_json import read_json  # noqa: E402
from timm_cra.utils.strict_yaml import load_config_file  # noqa: E402
from tools.cifar_campaign import CIFAR_VARIANTS, RECIPES, campaign_dirs  # noqa: E402
from tools.cifar_report import (campaign_context, convergence_sentence, double_budget_dir, load_records,  # noqa: E402
                                read_record, summarize)
from tools.doc_blocks import ROOT, readme_weight_tags  # noqa: E402

#: The tag scripts/validate.py (the README's main job) validates with no arguments.
MAIN_JOB_TAG = 'cra_cifar_resnet20.cifar10'


def tag_recipe(tag: str) -> str:
    """The campaign a CIFAR weight tag publishes: ``cifar10`` the first (e15), ``cifar10_<recipe>`` that recipe."""
    recipe = 'e15' if tag == 'cifar10' else tag[len('cifar10_'):] if tag.startswith('cifar10_') else None
    if recipe not in RECIPES:
        raise ValueError(f"--tag {tag} names no campaign: use cifar10 (e15) or cifar10_<recipe>, a recipe of "
                         f"{list(RECIPES)}")
    return recipe


def check_run_is_the_record(run_dir: Path, record: dict) -> None:
    """The run folder holds the run its campaign record describes (a --runs folder of another seed or budget
    would publish its weights under this record's card): the trainer's results.json and args.yaml must name the
    same architecture, kwargs, seed and epochs, and its last evaluation must be the record's."""
    results = read_json(run_dir / 'results.json', "the run's results.json")
    args = load_config_file(run_dir / 'args.yaml', "The run's args.yaml")
    final = results.get('final') if isinstance(results.get('final'), dict) else {}
    ran = dict(model=results.get('model'), model_kwargs=args.get('model_kwargs') or {}, seed=args.get('seed'),
               epochs=results.get('epochs'), final_top1=final.get('eval_top1'))
    differ = [f'{k} {ran[k]!r} (the record: {record.get(k)!r})' for k in ran if ran[k] != record.get(k)]
    if differ:
        raise UsageError(f"{run_dir} is not the run of its campaign record: {'; '.join(differ)}. Give --runs the "
                         f"folder tools/cifar_campaign.py wrote for this record.")


def reproduce_text(name: str) -> str:
    """How a reader of the card re-measures its number from a clone of the repository."""
    if name == MAIN_JOB_TAG:
        return 'Reproduce with `python scripts/validate.py` in the timm-cra repository (no arguments).'
    return (f'Reproduce with `python scripts/validate.py --model local-dir:hub/timm-cra/{name} --pretrained '
            f'--data-dir data/cifar10 --split test` in the timm-cra repository.')


def campaign_numbers_text(record: dict, top1: float) -> str:
    """The campaign's numbers are the trainer's evaluation at the end of training; where that ran under autocast
    (bfloat16) it differs a little from the float32 validation the card reports: say both."""
    if abs(top1 - record['final_top1']) <= 1e-6:
        return ''
    autocast = ' under bfloat16 autocast' if '--amp' in record['command'].split() else ''
    return (f" The campaign's numbers below are the trainer's evaluation at the end of training{autocast}; "
            f"this seed scored {record['final_top1']:.2f}% there and {top1:.2f}% in float32 (the number above).")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('variant', choices=list(CIFAR_VARIANTS))
    p.add_argument('seed', type=int)
    p.add_argument('--tag', default='cifar10', help='cifar10 (the e15 campaign) or cifar10_<recipe>, e.g. '
                   'cifar10_e50: the tag names the campaign its weights come from')
    p.add_argument('--recipe', default=None, choices=list(RECIPES),
                   help='the campaign the run belongs to (default: the one the tag names; another is refused)')
    p.add_argument('--runs', type=Path, default=None, help='its run folders (default: the recipe\'s, as '
                   'tools/cifar_campaign.py writes them)')
    args = p.parse_args(argv)
    try:
        recipe = tag_recipe(args.tag)
    except ValueError as e:
        p.error(str(e))
    if args.recipe not in (None, recipe):
        p.error(f'--tag {args.tag} names the {recipe} campaign, not --recipe {args.recipe}: the tag would carry '
                f'another budget\'s weights (use --tag cifar10_{args.recipe})')
    args.recipe = recipe

    runs_dir, results_dir = (ROOT / d for d in campaign_dirs(args.recipe))
    record_path = results_dir / f'{args.variant}-s{args.seed}.json'
    if not record_path.is_file():
        raise UsageError(f'No campaign record {record_path}: run tools/cifar_campaign.py --recipe {args.recipe} '
                         f'--variants {args.variant} --seeds {args.seed} first.')
    try:  # every record the card quotes, before anything is validated or written
        record = read_record(record_path)
        records = load_records(str(results_dir))
        double = double_budget_dir(results_dir)
        convergence = convergence_sentence(records, load_records(str(double))) if double else ''
    except ValueError as e:
        raise UsageError(str(e)) from e
    run_dir = (args.runs or runs_dir) / f'{args.variant}-s{args.seed}'
    name = f"{record['model']}.{args.tag}"
    if name not in timm.list_pretrained(record['model'] + '.*'):
        raise UsageError(f"{name} is not a registered weight tag: register it in timm_cra/models/cifar_resnet.py "
                         f"(default_cfgs) before publishing it.")
    check_run_is_the_record(run_dir, record)
    val = validate(create_parser().parse_args([
        '--model', f'local-dir:{run_dir}', '--pretrained', '--data-dir', str(ROOT / 'data' / 'cifar10'),
        '--split', 'test', '--batch-size', '500', '--workers', '0', '--no-progress']))
    if abs(val['top1'] - record['final_top1']) > 1e-6:
        print(f"note: validation top-1 {val['top1']} (float32) differs from the training run's "
              f"{record['final_top1']} (the card states both)")
    results = dict(
        model=name, top1=val['top1'], top5=val['top5'], dataset='cifar10', split='test', source='measured',
        img_size=val['img_size'], crop_pct=val['crop_pct'], interpolation=val['interpolation'],
        recipe=(f"{record['epochs']} epochs on the 50k CIFAR-10 training images with timm-cra's trainer, "
                f"seed {record['seed']}: {code_span(record['command'])}"),
        notes=('Evaluated on the 10k CIFAR-10 test images of a JPEG re-encoded copy of CIFAR-10 (about 28-32 dB '
               'PSNR against the originals): close to, not identical with, accuracy on the original release. '
               + reproduce_text(name) + campaign_numbers_text(record, val['top1']) + ' '
               + campaign_context(summarize(records), args.variant, args.seed)
               + (' ' + convergence if convergence else '')).rstrip(),
    )
    results_path = ROOT / 'results' / f'{name}.json'
    print(json.dumps(val, indent=2))
    with atomic_path(str(results_path)) as tmp:  # in place only once the repo folder is written
        Path(tmp).write_text(json.dumps(results, indent=2) + '\n')
        # the library's publishing path, not its CLI: the CLI warns that a registered tag's name would pass for
        # the project's weights, which here they are
        weights, out = str(run_dir / 'model.safetensors'), str(ROOT / 'hub' / 'timm-cra' / name)
        publish.check_inputs(weights, out, tmp)
        folder = publish.build_repo_folder(name, weights, out, results=tmp, overwrite=True,
                                           model_kwargs=record['model_kwargs'], repo_id=publish.default_repo_id(name))
        print(f'Wrote {folder}')
    print(f'Wrote {results_path}')
    shown = readme_weight_tags().get(name)
    if shown is not None and shown != f"{val['top1']:.2f}":
        print(f"note: README.md's weight-tag row for {name} shows {shown}%, the weights now published score "
              f"{val['top1']:.2f}%: update that row and its seed / mean text (tests/test_docs.py holds them equal)")
    # The registered tag's folder is what tools/generate_hub.py derives from the registry and the results file (a
    # test holds hub/ to it): its config.json and card replace the run-derived ones, the weights stay.
    generate_hub(ROOT / 'hub', ROOT / 'results', names=[name])


if __name__ == '__main__':
    run_cli(main)
