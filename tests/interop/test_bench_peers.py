"""``equiforce bench --peers`` end to end in a peer's venv: ratios and parity are reported.

Runs wherever mace-torch or nequip-allegro is installed (``make test-interop-*``); each case
skips without its peer. The driver, our worker and the peer worker all use this python.
"""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch

from equiforce.models import save_model
from equiforce.testing.models import tiny_allegro, tiny_mace
from equiforce.workflows.bench.run import BenchConfig, run_bench

CASES = {
    "mace-torch": ("mace", lambda: tiny_mace(torch.float64, type_names=("H", "C", "O"))),
    "nequip-allegro": ("allegro", lambda: tiny_allegro(torch.float64, type_names=("H", "C", "O"))),
}


@pytest.mark.parametrize(
    "kind, same_backward",
    [("inference", False), ("train", False), ("train", True)],
    ids=["inference", "train", "train-same-backward"],
)
@pytest.mark.parametrize("peer", sorted(CASES))
def test_bench_runs_the_peer_on_the_same_weights(peer, kind, same_backward, tmp_path):
    module, make_model = CASES[peer]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{peer} is not installed here")
    save_model(make_model(), tmp_path / "model.pt")
    config = BenchConfig(
        model=str(tmp_path / "model.pt"),
        systems=("batch2",),
        precision="float64",
        kind=kind,
        peers=True,
        peers_same_backward=same_backward,
        repeats=2,
        warmup=0,
        threads=1,
        peer_python={peer: sys.executable},
    )
    (result,) = run_bench(config, log=lambda line: None)["results"]
    assert set(result["implementations"]) == {"equiforce", peer}
    info = result["implementations"][peer]["info"]
    assert info["kind"] == kind
    assert info["backward"] == ("parameters" if same_backward else "loss.backward()")
    assert info["n_edges"] == result["n_edges"]
    ratio = result["ratios"][peer]
    assert ratio["time"] > 0 and len(result["implementations"][peer]["times_ms"]) == 2
    assert ratio["parity"]["max_abs_force_eV_per_A"] > 0.01
    assert ratio["parity"]["max_abs_force_diff_eV_per_A"] < 1e-10
    assert ratio["parity"]["max_abs_energy_diff_per_atom_eV"] < 1e-10
