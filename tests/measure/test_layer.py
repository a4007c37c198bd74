"""``equiforce.measure`` is a low tier: importing it loads no other equiforce package."""

from __future__ import annotations

import subprocess
import sys


def test_measure_imports_no_other_equiforce_package():
    script = (
        "import sys, equiforce.measure; "
        "print(' '.join(m for m in sys.modules if m.startswith('equiforce')))"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    loaded = set(done.stdout.split())
    assert "equiforce.measure.protocol" in loaded
    # equiforce.cpu_features: a leaf (the standard library only), /proc/cpuinfo's flags
    leaves = {"equiforce", "equiforce.cpu_features"}
    assert all(m in leaves or m.startswith("equiforce.measure") for m in loaded), loaded
