"""Graph datasets: no work after construction, splits, reproducible loaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from equiforce.data import (
    GraphDataset,
    keys,
    load_dataset,
    load_train_validation,
    make_loader,
    read_configurations,
    split_train_validation,
)
from equiforce.data import extxyz as extxyz_module
from equiforce.data import graph as graph_module
from equiforce.data.dataset import epoch_seed
from equiforce.testing.structures import emt_labelled, make_fcc_cu, make_triclinic_cu

R_MAX = 4.0


@pytest.fixture
def cu_file(write_frames):
    """Ten labelled Cu/Au frames of two sizes (4 and 32 atoms)."""
    frames = [
        emt_labelled(make_fcc_cu(repeat=1 + (s % 2), seed=s) if s % 3 else make_triclinic_cu(s))
        for s in range(10)
    ]
    return write_frames(frames, "cu.xyz")


def _forbid_preprocessing(monkeypatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("preprocessing after construction")

    monkeypatch.setattr(graph_module, "neighbor_list", forbidden)
    monkeypatch.setattr(extxyz_module, "neighbor_list", forbidden)
    monkeypatch.setattr(extxyz_module, "_iter_frames", forbidden)


def test_iterating_does_no_neighbour_or_ase_work(cu_file, monkeypatch):
    dataset = GraphDataset.from_configurations(read_configurations(cu_file), ["Cu", "Au"], R_MAX)
    _forbid_preprocessing(monkeypatch)
    for epoch in range(2):
        n_graphs = sum(
            int(b[keys.PTR].shape[0]) - 1 for b in make_loader(dataset, 3, True, 0, epoch)
        )
        assert n_graphs == len(dataset)


def test_batches_mix_graphs_of_different_sizes(cu_file):
    dataset = load_dataset(cu_file, R_MAX, ["Cu", "Au"])
    sizes = {int(g[keys.POSITIONS].shape[0]) for g in dataset}
    assert len(sizes) > 1
    batch = next(iter(make_loader(dataset, len(dataset), shuffle=False)))
    assert batch[keys.N_ATOMS].tolist() == [int(g[keys.POSITIONS].shape[0]) for g in dataset]
    assert int(batch[keys.PTR][-1]) == batch[keys.POSITIONS].shape[0] == dataset.n_atoms
    centre_graph = batch[keys.BATCH][batch[keys.EDGE_INDEX][0]]
    neighbour_graph = batch[keys.BATCH][batch[keys.EDGE_INDEX][1]]
    assert torch.equal(centre_graph, neighbour_graph)


def test_type_names_default_to_the_file_species_by_atomic_number(cu_file):
    assert load_dataset(cu_file, R_MAX).type_names == ("Cu", "Au")


def test_split_is_deterministic_disjoint_and_complete():
    items = list(range(50))
    train, valid = split_train_validation(items, 0.2, seed=3)
    assert (train, valid) == split_train_validation(items, 0.2, seed=3)
    assert len(valid) == 10 and sorted(train + valid) == items
    assert split_train_validation(items, 0.2, seed=4)[1] != valid


def test_split_of_a_graph_dataset_keeps_sources(cu_file):
    dataset = load_dataset(cu_file, R_MAX)
    train, valid = split_train_validation(dataset, 0.3, seed=0)
    assert isinstance(valid, GraphDataset) and len(train) + len(valid) == len(dataset)
    assert set(train.sources).isdisjoint(valid.sources)


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_split_rejects_degenerate_fractions(fraction):
    with pytest.raises(ValueError, match="valid_fraction"):
        split_train_validation(list(range(10)), fraction, seed=0)


def test_explicit_validation_file_uses_the_training_species(cu_file, write_frames):
    valid_file = write_frames([emt_labelled(make_fcc_cu(seed=99, au_fraction=0.0))], "v.xyz")
    train, valid = load_train_validation(cu_file, R_MAX, valid_path=valid_file)
    assert len(train) == 10 and len(valid) == 1
    assert valid.type_names == train.type_names == ("Cu", "Au")


def test_loader_order_depends_only_on_seed_and_epoch(cu_file):
    dataset = load_dataset(cu_file, R_MAX)

    def order(seed, epoch):
        torch.manual_seed(1234 + epoch)  # global RNG state must not matter
        np.random.seed(epoch)
        batches = make_loader(dataset, 4, shuffle=True, seed=seed, epoch=epoch)
        return [round(float(e), 8) for b in batches for e in b[keys.ENERGY]]

    assert order(0, 5) == order(0, 5)
    assert order(0, 5) != order(0, 6)
    assert order(0, 5) != order(1, 5)
    assert sorted(order(0, 5)) == sorted(order(0, 6))
    assert epoch_seed(0, 5) == epoch_seed(0, 5) != epoch_seed(5, 0)


def test_unshuffled_loader_keeps_dataset_order(cu_file):
    dataset = load_dataset(cu_file, R_MAX)
    energies = [float(e) for b in make_loader(dataset, 3, shuffle=False) for e in b[keys.ENERGY]]
    assert energies == [float(g[keys.ENERGY][0]) for g in dataset]
