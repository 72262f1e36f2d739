"""``python -m timm_cra.eval ...``: the validation CLI from a pip install (same as ``scripts/validate.py``)."""
import sys

from ..data.errors import UsageError
from .validate import main

if __name__ == '__main__':
    try:
        main()
    except UsageError as e:  # bad input: one clear message, no traceback
        print(f'error: {e}', file=sys.stderr)
        sys.exit(2)
