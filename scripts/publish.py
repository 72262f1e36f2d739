#!/usr/bin/env python
"""Build (and optionally push) the Hub repo of a CRA weight tag from a checkpoint and its eval results.

    python scripts/publish.py cra_resnet18.a1_in1k output/train/.../model_best.pth.tar \
        --results output/train/.../results.json                  # dry run: writes hub/timm-cra/<name>/
    python scripts/publish.py ... --push                         # also create/update timm-cra/<name> on the Hub
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_cra.hub.publish import build_repo_folder, default_repo_id, push_repo_folder  # noqa: E402


def main(argv=None):
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('model_name', help='<arch>.<tag> the weights are published as, e.g. cra_resnet18.a1_in1k')
    parser.add_argument('checkpoint', help='model.safetensors or a timm trainer checkpoint (.pth.tar)')
    parser.add_argument('--results', help='eval results JSON (timm validate.py output or timm_cra schema)')
    parser.add_argument('--recipe', help='training recipe text for the model card')
    parser.add_argument('--num-classes', type=int, help='classes of the checkpoint (default: the arch default)')
    parser.add_argument('--no-ema', action='store_true', help="use 'state_dict' even if 'state_dict_ema' exists")
    parser.add_argument('--repo-id', help='Hub repo id (default: timm-cra/<model_name>)')
    parser.add_argument('--out', help='repo folder (default: hub/<repo-id>/)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing repo folder')
    parser.add_argument('--push', action='store_true', help='upload the folder to the Hub (needs a token)')
    parser.add_argument('--private', action='store_true', help='create the Hub repo as private')
    args = parser.parse_args(argv)

    repo_id = args.repo_id or default_repo_id(args.model_name)
    out = Path(args.out) if args.out else root / 'hub' / repo_id
    try:
        folder = build_repo_folder(
            args.model_name, args.checkpoint, out, results=args.results, recipe=args.recipe,
            num_classes=args.num_classes, use_ema=not args.no_ema, overwrite=args.overwrite)
        print(f'Wrote {folder} (load it with timm.create_model("local-dir:{folder}", pretrained=True))')
        if args.push:
            print(f'Pushed: {push_repo_folder(folder, repo_id, private=args.private)}')
        else:
            print(f'Dry run: not pushed. Add --push to upload to {repo_id}.')
    except (FileNotFoundError, FileExistsError, ValueError, RuntimeError) as e:
        sys.exit(f'error: {e}')


if __name__ == '__main__':
    main()
