#!/usr/bin/env python
"""Train the CIFAR-10 attention comparison (ResNet-20 base / SE / ECA / CRA variants), run by run.

  python scripts/cifar_campaign.py --seeds 0 1 2                       # every ResNet-20 variant
  python scripts/cifar_campaign.py --variants resnet20 cra_max4_resnet20 --seeds 0

Finished runs (a JSON in --results) are skipped and interrupted ones resume from their last.pth, so a
campaign can be split over processes (disjoint --variants) and sessions. Summarise with
scripts/cifar_report.py.
"""
import argparse

from timm_cra.train.campaign import CAMPAIGN_EPOCHS, CIFAR_VARIANTS, run_campaign

RESNET20 = [v for v in CIFAR_VARIANTS if v.endswith('resnet20')]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--variants', nargs='+', default=RESNET20, choices=list(CIFAR_VARIANTS))
    p.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    p.add_argument('--data-dir', default='../shared/data/cifar10')
    p.add_argument('--output', default='output/cifar10-campaign', help='run folders (checkpoints, logs)')
    p.add_argument('--results', default='results/cifar10', help='one JSON record per finished run')
    p.add_argument('--epochs', type=int, default=CAMPAIGN_EPOCHS)
    args = p.parse_args()
    run_campaign(args.variants, args.seeds, args.data_dir, args.output, args.results, args.epochs)


if __name__ == '__main__':
    main()
