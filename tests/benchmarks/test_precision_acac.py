"""Smoke test of ``python -m benchmarks.precision_acac``: its three phases on a tiny MACE."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.common import DEFAULT_DATA_DIR
from benchmarks.precision_acac import main

pytestmark = pytest.mark.skipif(
    not (DEFAULT_DATA_DIR / "acac").exists(), reason=f"no AcAc data in {DEFAULT_DATA_DIR}"
)


def test_train_accuracy_and_timing_phases(tmp_path):
    common = ["--presets", "mace-tiny", "--modes", "float32", "fp16-mixed", "--n-train", "10"]
    common += ["--out", str(tmp_path)]
    assert main(["train", "--epochs", "1", *common]) == 0
    assert main(["accuracy", "--n-test", "2", "--md-ps", "0.02", *common]) == 0
    timing = ["--systems", "molecule", "train_step", "--repeats", "2", "--threads", "1"]
    assert main(["timing", *timing, *common]) == 0

    trained = json.loads((tmp_path / "train_mace-tiny.json").read_text())
    assert trained["command"].startswith("python -m benchmarks.precision_acac train")
    assert trained["results"]["mace-tiny_fp16-mixed"]["epochs"] == 1
    accuracy = json.loads((tmp_path / "accuracy_mace-tiny.json").read_text())["results"]
    for mode in ("float32", "fp16-mixed"):
        entry = accuracy[f"mace-tiny_{mode}"]
        assert entry["errors"]["test_MD_600K"]["forces"]["count"] == 2 * 15 * 3
        assert math.isfinite(entry["nve_drift_meV_per_atom_per_ps"])
    timing = json.loads((tmp_path / "timing_mace-tiny_molecule+train_step.json").read_text())
    step = timing["results"]["mace-tiny_fp16-mixed_train_step"]
    assert step["n_atoms"] == 5 * 15 and step["ms_min"] <= step["ms_median"]
    assert timing["results"]["mace-tiny_float32_molecule"]["n_atoms"] == 15
