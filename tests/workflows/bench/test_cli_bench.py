"""``equiforce bench`` end to end on a tiny model, presets, and clear errors for bad options."""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

from equiforce.cli.main import main
from equiforce.models import save_model
from equiforce.models.presets import PRESETS, preset_potential, with_dtype
from equiforce.testing.models import tiny_mace

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny_model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(tiny_mace(torch.float64, type_names=("H", "C", "O")), path)
    return path


def test_bench_writes_json_and_plot_for_a_model_file(tiny_model_file, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", str(tiny_model_file), "--systems", "batch2", "box-60"]
    argv += ["--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "bench.json").read_text())
    assert (out / "bench.png").read_bytes().startswith(PNG_SIGNATURE)
    assert report["settings"]["precision"] == "float32" and report["settings"]["repeats"] == 2
    assert report["model"]["family"] == "mace" and report["model"]["spec"]["dtype"] == "float32"
    for key in ("torch_version", "git_commit", "cpu_count"):
        assert key in report["machine"]
    atoms = {r["system"]: r["n_atoms"] for r in report["results"]}
    assert atoms == {"batch2": 30, "box-60": 60}
    for result in report["results"]:
        assert result["n_edges"] > 0 and result["neighbour_list_ms"] > 0
        ours = result["implementations"]["equiforce"]
        assert len(ours["times_ms"]) == 2 and ours["timing"]["n"] == 2
        assert len(ours["cpu_times_ms"]) == 2 and min(ours["cpu_times_ms"]) > 0
        assert ours["timing"]["median_cpu_ms"] == pytest.approx(sum(ours["cpu_times_ms"]) / 2)
        median = ours["timing"]["median_ms"]
        assert ours["ms_per_atom_step"] == pytest.approx(median / result["n_atoms"])
        assert ours["atom_steps_per_s"] == pytest.approx(1000.0 * result["n_atoms"] / median)
        assert ours["memory"]["peak_mb"] >= ours["memory"]["baseline_mb"] > 0
        assert ours["info"]["dtype"] == "float32" and ours["info"]["threads"] == 1
        assert result["ratios"] == {}
    table = capsys.readouterr().out
    assert "box-60" in table and "cpu ms" in table and "x cpu" in table


def test_a_failing_peer_is_dropped_and_reported_while_ours_is_timed(tiny_model_file, tmp_path):
    out = tmp_path / "bench"
    argv = ["bench", str(tiny_model_file), "--systems", "molecule", "--peers"]
    argv += ["--mace-python", shutil.which("false"), "--repeats", "1", "--warmup", "0"]
    assert main([*argv, "--threads", "1", "--out", str(out)]) == 1
    (result,) = json.loads((out / "bench.json").read_text())["results"]
    assert list(result["implementations"]) == ["equiforce"] and result["ratios"] == {}
    assert "exited without replying" in result["failed"]["mace-torch"]


def test_presets_have_the_issue_hyperparameters():
    mace = preset_potential("mace-128-l1").spec
    assert (mace.num_channels, mace.max_L, mace.correlation, mace.num_interactions) == (
        128,
        1,
        3,
        2,
    )
    assert (mace.max_ell, mace.r_max, mace.radial_mlp) == (3, 5.0, (64, 64, 64))
    big = preset_potential("allegro-big", "float64").spec
    assert (big.l_max, big.num_layers, big.num_scalar_features, big.num_tensor_features) == (
        2,
        2,
        128,
        64,
    )
    assert big.dtype == "float64" and set(PRESETS) >= {"mace-small", "allegro-small"}
    tiny = preset_potential("allegro-tiny-al").spec
    assert (tiny.l_max, tiny.num_layers, tiny.num_scalar_features, tiny.r_max) == (1, 1, 32, 4.0)
    assert preset_potential("mace-128-l1-al").spec.num_channels == 128
    for name, (_, fields, _) in PRESETS.items():
        scaling = name.endswith("-al")  # the fcc aluminium scaling models
        assert fields["type_names"] == (("H", "O", "Al") if scaling else ("H", "C", "O"))


def test_with_dtype_keeps_the_weights():
    model = tiny_mace(torch.float64)
    single = with_dtype(model, "float32")
    assert single.spec.dtype == "float32" and single.dtype == torch.float32
    for (name, a), b in zip(model.state_dict().items(), single.state_dict().values(), strict=True):
        torch.testing.assert_close(a.float(), b, msg=name)
    # a policy cast the parameters to float32 under a float64 spec: still converted
    from equiforce.precision import apply_policy, from_name

    cast = apply_policy(tiny_mace(torch.float64), from_name("bf16-mixed"))
    assert with_dtype(cast, "float64").dtype == torch.float64


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--preset", "mace-huge"], "unknown preset 'mace-huge'; known"),
        (["--preset", "mace-small", "--systems", "box-xl"], "unknown system 'box-xl'"),
        ([], "either a model file or --preset"),
        (["MODEL", "--preset", "mace-small"], "either a model file or --preset"),
        (["--preset", "mace-small", "--repeats", "0"], "--repeats >= 1"),
        (["--preset", "mace-small", "--precision", "float16"], "precision"),
        (["--preset", "mace-small", "--backend", "warp-drive"], "warp-drive"),
        (["--preset", "mace-small", "--compile", "--warmup", "0"], "--warmup >= 1"),
        (["missing.pt"], "missing.pt does not exist"),
        (
            ["--preset", "mace-small", "--peers", "--mace-python", "/nowhere/python"],
            "--mace-python /nowhere/python: does not exist",
        ),
        (["--preset", "mace-small", "--threads", "0"], "--threads must be >= 1"),
    ],
)
def test_bad_arguments_give_clear_errors(options, message, tiny_model_file, tmp_path, capsys):
    options = [str(tiny_model_file) if o == "MODEL" else o for o in options]
    assert main(["bench", *options, "--out", str(tmp_path / "never")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "never").exists()


def test_a_device_torch_does_not_know_is_refused_while_parsing(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--preset", "mace-small", "--device", "gpu"])
    assert "'gpu' is not a torch device" in capsys.readouterr().err
