"""``python -m tfc_inference ...``: the same as the ``tfc-inference`` command."""
import sys

from tfc_inference.cli import main

if __name__ == "__main__":
    sys.exit(main())
