"""Smoke test of ``python -m benchmarks.profile_models``: a profiled MACE training step."""

from __future__ import annotations

import json

from benchmarks.profile_models import main


def test_profile_models_prints_op_tables_by_category(tmp_path, capsys):
    argv = ["--presets", "mace-small", "--dtypes", "float64", "--systems", "molecule"]
    argv += ["--kinds", "train", "--threads", "1", "--warmup", "0", "--repeats", "1"]
    argv += ["--backend", "reference", "--out", str(tmp_path)]
    assert main(argv) == 0
    (run,) = json.loads(next(tmp_path.glob("profile_models_*.json")).read_text())["runs"]
    (result,) = run["results"]
    profile = result["implementations"]["equiforce"]["profile"]
    assert profile["top_ops"] and profile["by_category_ms"]["matmul"] > 0
    printed = capsys.readouterr().out
    assert "**equiforce, preset mace-small, molecule, float64, train**" in printed
    assert "By category: " in printed
