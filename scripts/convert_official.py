#!/usr/bin/env python
"""Convert the official CRA-ResNet-50 checkpoint (syt2/CRA, Google Drive) into the cra_resnet50.paper_in1k repo.

    python scripts/convert_official.py cra_resnet50_best.pth.tar --out hub/timm-cra/cra_resnet50.paper_in1k --overwrite

The checkpoint is read with a restricted unpickler: nothing in it is executed.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from timm_cra.hub.convert_official import OFFICIAL_MODEL_NAME, convert_official  # noqa: E402


def main(argv=None):
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', help='official checkpoint file (torch pickle)')
    parser.add_argument('--out', required=True, help='repo folder to write')
    parser.add_argument('--results', default=str(root / 'results' / f'{OFFICIAL_MODEL_NAME}.json'),
                        help='eval results JSON for the card (default: the paper numbers in results/)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing folder')
    args = parser.parse_args(argv)
    results = args.results if args.results and Path(args.results).is_file() else None
    try:
        out = convert_official(args.checkpoint, args.out, results=results, overwrite=args.overwrite)
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        sys.exit(f'error: {e}')
    print(f'Wrote {out}; load it with timm.create_model("local-dir:{out}", pretrained=True)')


if __name__ == '__main__':
    main()
