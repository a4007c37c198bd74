"""equiforce.data: structures, extxyz reading, graphs, batching, datasets and statistics."""

from equiforce.data.batch import AtomicBatch, collate
from equiforce.data.dataset import (
    GraphDataset,
    load_dataset,
    load_train_validation,
    make_loader,
    split_indices,
    split_train_validation,
)
from equiforce.data.extxyz import (
    CloseAtomsWarning,
    DataError,
    KeySpec,
    configuration_from_atoms,
    read_configurations,
)
from equiforce.data.graph import (
    Configuration,
    atoms_to_configuration,
    configuration_to_graph,
    model_inputs,
    type_indices,
)
from equiforce.data.neighbors import neighbor_list
from equiforce.data.statistics import (
    DatasetStatistics,
    compute_statistics,
    read_isolated_atom_energies,
    species_names,
)

__all__ = [
    "AtomicBatch",
    "CloseAtomsWarning",
    "Configuration",
    "DataError",
    "DatasetStatistics",
    "GraphDataset",
    "KeySpec",
    "atoms_to_configuration",
    "collate",
    "compute_statistics",
    "configuration_from_atoms",
    "configuration_to_graph",
    "load_dataset",
    "load_train_validation",
    "make_loader",
    "model_inputs",
    "neighbor_list",
    "read_configurations",
    "read_isolated_atom_energies",
    "species_names",
    "split_indices",
    "split_train_validation",
    "type_indices",
]
