"""``python -m benchmarks.gpu_mace`` (issue 18's prepared GPU script) on the CPU, tiny box.

The script's logic, parity and report run here so that a lent GPU machine's few minutes go to
timing: ours and ours with the cueq backend everywhere (cuEquivariance's plain-torch method
on the CPU); mace-torch and mace-torch's own cuEquivariance model where they are installed
(``make test-interop-mace``; the latter, whose conversion takes ~30 s on one CPU core, in
``make test-slow``), otherwise reported as unavailable.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks.gpu_mace import main


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


REQUIRES = {
    "equiforce": (),
    "equiforce-cueq": ("cuequivariance_torch",),
    "mace-torch": ("mace",),
    "mace-torch-cueq": ("mace", "cuequivariance_torch"),
}


@pytest.mark.parametrize(
    "impls",
    [
        ("equiforce", "equiforce-cueq", "mace-torch"),
        pytest.param(("equiforce", "mace-torch-cueq"), marks=pytest.mark.slow),
    ],
    ids=["ours-cueq-mace", "mace-cueq"],
)
def test_gpu_script_times_every_implementation_on_the_same_weights(impls, tmp_path):
    argv = ["--device", "cpu", "--preset", "mace-small", "--sizes", "12", "--impls", *impls]
    argv += ["--kinds", "inference", "train", "--precisions", "float32", "bf16-mixed"]
    argv += ["--warmup", "0", "--repeats", "1", "--budget-s", "600", "--out", str(tmp_path)]
    assert main(argv) == 0
    record = json.loads(next(tmp_path.glob("gpu_mace_*.json")).read_text())
    assert record["device"] == "cpu" and record["gpu"] is None
    assert [(c["kind"], c["n_atoms"]) for c in record["cases"]] == [
        ("inference", 12),
        ("train", 12),
    ]
    for case in record["cases"]:
        results = case["implementations"]
        assert results["equiforce float32"]["median_ms"] > 0
        ours_bf16 = results["equiforce bf16-mixed"]["parity_vs_equiforce_float32"]
        assert 0 < ours_bf16["max_abs_force_diff_eV_per_A"] < 0.05  # bf16's rounding, no more
        for impl in impls[1:]:
            precisions = ("float32", "bf16-mixed") if impl.startswith("equiforce") else ("float32",)
            for name in (f"{impl} {p}" for p in precisions):
                if not _installed(*REQUIRES[impl]):
                    assert name not in results and name in record["unavailable"]
                    continue
                parity = results[name]["parity_vs_equiforce_float32"]
                tolerance = 1e-4 if name.endswith("float32") else 0.05
                assert parity["max_abs_force_diff_eV_per_A"] < tolerance, (name, parity)
                assert results[name]["median_ms"] > 0
                if impl.startswith("mace-torch"):
                    assert case["ratios"][f"{name} / equiforce float32"] > 0
