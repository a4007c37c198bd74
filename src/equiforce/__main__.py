"""``python -m equiforce``: the ``equiforce`` command line (what ``torchrun -m equiforce`` runs)."""

from equiforce.cli.main import script

if __name__ == "__main__":
    script()
