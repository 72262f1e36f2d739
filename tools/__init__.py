"""Repository tooling, not shipped in the wheel: the CIFAR-10 campaign and its report, the generated
tables of the docs, data converters. Modules here import ``timm_cra``; the package never imports them.

Run them from the repository root: ``python tools/<name>.py --help``.
"""
