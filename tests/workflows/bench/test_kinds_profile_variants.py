"""The bench's call kinds, profiler tables, model variants and memory skips."""

from __future__ import annotations

import pytest
import torch

from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models import save_model
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.workflows.bench.kinds import check_kind, potential_call, step_loss
from equiforce.workflows.bench.options import (
    Variant,
    apply_chunk_edges,
    apply_whole_graph,
)
from equiforce.workflows.bench.profile import category, format_profile, profile_call
from equiforce.workflows.bench.report import extrapolated_peak_mb
from equiforce.workflows.bench.run import BenchConfig, run_bench
from equiforce.workflows.bench.systems import make_system


def _batch(model, name: str = "batch2") -> dict[str, torch.Tensor]:
    graphs = [
        configuration_to_graph(atoms_to_configuration(a), model.type_names, model.r_max)
        for a in make_system(name, seed=1)
    ]
    return collate(graphs)


def test_a_training_step_gives_the_inference_outputs_and_the_loss_gradients():
    model = tiny_mace(torch.float64)
    batch = _batch(model)
    energy, forces = potential_call(model, batch, "inference")()
    assert not model.training and energy.shape == (2,) and forces.shape == (30, 3)
    step = potential_call(model, batch, "train")
    for _ in range(2):  # gradients are those of one step, not accumulated
        train_energy, train_forces = step()
        first = [p.grad.clone() for p in model.parameters()]
    assert model.training and not train_forces.requires_grad
    torch.testing.assert_close(train_energy, energy.detach())
    torch.testing.assert_close(train_forces, forces.detach())
    model.zero_grad(set_to_none=True)
    out = model(batch, compute_forces=True, create_graph=True)
    step_loss(out["energy"], out["forces"]).backward()
    for expected, got in zip((p.grad for p in model.parameters()), first, strict=True):
        torch.testing.assert_close(got, expected)
    assert torch.equal(step_loss(torch.ones(2), torch.full((3, 3), 2.0)), torch.tensor(4.002))
    with pytest.raises(ValueError, match="known: \\['inference', 'train', 'train-step'\\]"):
        check_kind("md")


def test_profile_splits_op_time_into_categories_and_python_overhead():
    assert category("aten::mm") == category("aten::bmm") == "matmul"
    assert category("aten::index_add_") == "gather/scatter"
    assert category("aten::fill_") == "copy/cat/fill"
    assert category("equiforce::cwtp_node_out") == "equiforce kernels"
    assert category("aten::mul") == "elementwise/other"
    model = tiny_mace(torch.float64)
    profile = profile_call(potential_call(model, _batch(model), "inference"), top=5)
    assert len(profile["top_ops"]) == 5
    assert profile["op_self_total_ms"] == pytest.approx(sum(profile["by_category_ms"].values()))
    assert profile["by_category_ms"]["matmul"] > 0
    assert 0 <= profile["python_overhead_share"] < 1 and profile["profiled_wall_ms"] > 0
    text = format_profile("tiny", profile)
    assert text.startswith("**tiny**") and text.count("\n| `") == 5
    assert "By category: " in text


def test_variants_set_chunks_or_the_whole_graph_and_name_their_worker_options():
    mace, allegro = tiny_mace(torch.float64), tiny_allegro(torch.float64)
    assert apply_chunk_edges(mace, 0).energy_model.chunk_edges is None
    assert apply_chunk_edges(mace, 64).energy_model.chunk_edges == 64
    assert apply_chunk_edges(mace, None).energy_model.chunk_edges == 64
    with pytest.raises(ValueError, match="allegro models have no receiver chunks"):
        apply_chunk_edges(allegro, 8)
    assert allegro.blocking is not None and apply_whole_graph(allegro, True).blocking is None
    variant = Variant("both", compile=True, chunk_edges=0, whole_graph=True)
    assert variant.worker_options() == [
        *("--compile", "--compile-backend", "inductor", "--chunk-edges", "0", "--whole-graph")
    ]
    assert Variant("plain").worker_options() == []
    with pytest.raises(ValueError, match="chunk_edges must be >= 0"):
        Variant("bad", chunk_edges=-1)
    with pytest.raises(ValueError, match="variant names must differ"):
        BenchConfig(preset="mace-small", variants=(Variant("mace-torch"),))
    with pytest.raises(ValueError, match="--compile needs --warmup >= 1"):
        BenchConfig(preset="mace-small", warmup=0, variants=(Variant("c", compile=True),))
    with pytest.raises(ValueError, match="unknown call kind"):
        BenchConfig(preset="mace-small", kind="md")
    with pytest.raises(ValueError, match="--settle >= 0"):
        BenchConfig(preset="mace-small", settle=-1)


def _measured(atoms: int, *peaks_mb: float) -> dict:
    implementations = {f"impl{k}": {"memory": {"peak_mb": mb}} for k, mb in enumerate(peaks_mb)}
    return {"system": f"box-{atoms}", "n_atoms": atoms, "implementations": implementations}


def test_peak_memory_is_extrapolated_linearly_from_the_two_largest_systems():
    skipped = {"system": "box-9000", "n_atoms": 9000, "error": "skipped", "skipped": True}
    done = [_measured(100, 50.0), _measured(1000, 80.0, 100.0), _measured(2000, 150.0), skipped]
    # largest peaks 100 MB at 1000 atoms and 150 MB at 2000 atoms: 0.05 MB per atom
    assert extrapolated_peak_mb(done, 10000) == pytest.approx(550.0)
    assert extrapolated_peak_mb(done[:1], 10000) == 0.0


def test_bench_runs_variants_training_steps_and_profiles_and_skips_by_memory(tmp_path):
    save_model(tiny_mace(torch.float64, type_names=("H", "C", "O")), tmp_path / "tiny.pt")
    config = BenchConfig(
        model=str(tmp_path / "tiny.pt"),
        systems=("molecule", "batch2", "batch3"),
        precision="float64",
        backend="reference",
        kind="train",
        variants=(Variant("one pass", chunk_edges=0),),
        profile=True,
        repeats=1,
        warmup=0,
        settle=1,
        threads=1,
        max_peak_gb=1e-3,
    )
    report = run_bench(config, log=lambda line: None)
    assert report["settings"]["settle"] == 1
    molecule, batch, skipped = report["results"]
    assert skipped["skipped"] and "predicted peak" in skipped["error"]
    assert skipped["n_atoms"] == 45
    for result in (molecule, batch):
        ours, other = result["implementations"]["equiforce"], result["implementations"]["one pass"]
        assert ours["info"]["kind"] == "train" and other["info"]["chunk_edges"] == 0
        assert ours["profile"]["top_ops"] and other["profile"]["op_self_total_ms"] > 0
        parity = result["ratios"]["one pass"]["parity"]
        assert parity["max_abs_force_diff_eV_per_A"] < 1e-10 < parity["max_abs_force_eV_per_A"]
    assert report["settings"]["variants"][0]["name"] == "one pass"
