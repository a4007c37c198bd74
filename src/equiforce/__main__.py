"""``python -m equiforce``: the ``equiforce`` command line (what ``torchrun -m equiforce`` runs)."""

import sys

from equiforce.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
