"""``equiforce convert``: the files nequip's own tools write (``nequip-train``'s ``*.ckpt``,
``nequip-package build``'s ``*.nequip.zip``) as equiforce model files, equal to nequip's model.

Runs where nequip-allegro is installed (``.venv-nequip``, ``make test-interop-nequip``): a
module fixture trains two tiny Allegro models for one epoch with ``nequip-train`` and
packages both, ~5 s per command.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

pytest.importorskip("allegro")

from ase import Atoms  # noqa: E402
from ase.calculators.emt import EMT  # noqa: E402
from ase.calculators.singlepoint import SinglePointCalculator  # noqa: E402
from ase.io import write  # noqa: E402

from equiforce.cli.main import main  # noqa: E402
from equiforce.data import keys  # noqa: E402
from equiforce.export.package import atoms_batch  # noqa: E402
from equiforce.interop.nequip_allegro import nequip_global_state, nequip_inputs  # noqa: E402
from equiforce.models import load_model  # noqa: E402
from equiforce.testing.structures import peer_parity_structures, squeezed  # noqa: E402

SPECIES = ["H", "C", "O"]


def _training_data(path: Path) -> None:
    """Eight distorted C2H4O molecules labelled by ASE's EMT, as extxyz."""
    rng = np.random.default_rng(0)
    base = Atoms(
        "CCOHHHH",
        positions=[
            [0.0, 0.0, 0.0],
            [1.5, 0.0, 0.0],
            [2.2, 1.1, 0.0],
            [-0.5, 0.9, 0.2],
            [-0.5, -0.9, 0.1],
            [1.9, -0.9, 0.3],
            [3.1, 1.0, 0.1],
        ],
    )
    frames = []
    for _ in range(8):
        atoms = base.copy()
        atoms.positions += 0.1 * rng.standard_normal(atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    write(path, frames)


def _config(data: Path, dtype: str, type_names: list[str], zbl: bool) -> dict:
    """A nequip-train config: one epoch of a tiny Allegro on ``data``."""
    transforms = [
        {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": 4.0},
        {
            "_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
            "model_type_names": type_names,
            "chemical_species_to_atom_type_map": dict(zip(SPECIES, type_names, strict=True)),
        },
    ]
    loader = {"_target_": "torch.utils.data.DataLoader", "batch_size": 4}
    model = {
        "_target_": "allegro.model.AllegroModel",
        "seed": 3,
        "model_dtype": dtype,
        "type_names": type_names,
        "r_max": 4.0,
        "l_max": 1,
        "radial_chemical_embed": {
            "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
            "num_bessels": 6,
            "polynomial_cutoff_p": 6,
        },
        "scalar_embed_mlp_hidden_layers_width": 8,
        "num_layers": 2,
        "num_scalar_features": 8,
        "num_tensor_features": 4,
        "allegro_mlp_hidden_layers_width": 8,
        "readout_mlp_hidden_layers_width": 8,
        "avg_num_neighbors": 5.0,
        "per_type_energy_scales": 1.3,
        "per_type_energy_shifts": dict(zip(type_names, [-1.0, -2.0, -3.0], strict=True)),
    }
    if zbl:
        model["pair_potential"] = {
            "_target_": "nequip.nn.pair_potential.ZBL",
            "units": "metal",
            "chemical_species": SPECIES,
        }
    metric = {"name": "force_MSE", "field": "forces", "coeff": 1}
    return {
        "run": ["train"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule",
            "seed": 1,
            "train_file_path": str(data),
            "val_file_path": str(data),
            "transforms": transforms,
            "train_dataloader": loader,
            "val_dataloader": loader,
        },
        "trainer": {
            "_target_": "lightning.Trainer",
            "max_epochs": 1,
            "enable_progress_bar": False,
            "logger": False,
            "callbacks": [
                {
                    "_target_": "lightning.pytorch.callbacks.ModelCheckpoint",
                    "dirpath": "${hydra:runtime.output_dir}",
                    "save_last": True,
                }
            ],
        },
        "training_module": {
            "_target_": "nequip.train.NequIPLightningModule",
            "loss": {
                "_target_": "nequip.train.MetricsManager",
                "metrics": [{**metric, "metric": {"_target_": "nequip.train.MeanSquaredError"}}],
            },
            "val_metrics": {
                "_target_": "nequip.train.MetricsManager",
                "metrics": [{**metric, "metric": {"_target_": "nequip.train.MeanSquaredError"}}],
            },
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.01},
            "model": model,
        },
        "global_options": {"seed": 5, "allow_tf32": False},
    }


def _nequip_tool(name: str, *args: str) -> None:
    """Run one of nequip's scripts (beside this interpreter); fail with its output."""
    tool = Path(sys.executable).with_name(name)
    done = subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def nequip_files(tmp_path_factory) -> dict[str, Path]:
    """``nequip-train`` checkpoints (float64 with types Hy, Ca, Ox for H, C, O; float32 with
    ZBL) and both as ``nequip-package`` files."""
    root = tmp_path_factory.mktemp("nequip")
    _training_data(root / "data.xyz")
    runs = {
        "type_names": ("float64", ["Hy", "Ca", "Ox"], False),
        "float32_zbl": ("float32", SPECIES, True),
    }
    files = {}
    for name, (dtype, type_names, zbl) in runs.items():
        (root / f"{name}.yaml").write_text(
            yaml.safe_dump(_config(root / "data.xyz", dtype, type_names, zbl))
        )
        out = root / name
        _nequip_tool("nequip-train", "-cp", str(root), "-cn", name, f"hydra.run.dir={out}")
        files[name] = out / "last.ckpt"
    for name, run in (("package", "float32_zbl"), ("type_names_package", "type_names")):
        files[name] = root / f"{run}.nequip.zip"
        _nequip_tool("nequip-package", "build", str(files[run]), str(files[name]))
    return files


def _assert_equals_nequip(source: Path, out: Path, tolerance: float) -> None:
    """The converted file's energies and forces equal nequip's own model of ``source`` on
    molecules and cells (squeezed, so a ZBL term would act)."""
    from nequip.model.saved_models.load_utils import load_saved_model

    with nequip_global_state():
        model = load_saved_model(str(source))
    potential = load_model(out)
    structures = peer_parity_structures()
    for atoms in structures + [squeezed(a) for a in structures]:
        batch = atoms_batch(atoms, potential.type_names, potential.r_max, torch.device("cpu"))
        want = model(nequip_inputs(batch))
        got = potential(batch, compute_forces=True)
        assert want["forces"].abs().max() > 0.05  # a wrong weight would show
        for ours, theirs in ((keys.ENERGY, "total_energy"), (keys.FORCES, "forces")):
            np.testing.assert_allclose(
                got[ours].detach().double(),
                want[theirs].detach().double().reshape(got[ours].shape),
                rtol=tolerance,
                atol=tolerance,
                err_msg=f"{ours} of {atoms.get_chemical_formula()}",
            )


@pytest.mark.parametrize(
    ("source", "tolerance", "zbl"),
    [
        ("type_names", 1e-10, False),  # types Hy, Ca, Ox named by the species mapped to them
        ("float32_zbl", 1e-4, True),
        ("package", 1e-4, True),
    ],
)
def test_nequip_checkpoints_and_packages_convert(
    nequip_files, tmp_path, capsys, source, tolerance, zbl
):
    out = tmp_path / "ours.pt"
    assert main(["convert", str(nequip_files[source]), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "vs nequip-allegro" in printed and printed.count(" ok") == 4  # the four structures
    assert load_model(out).spec.pair_repulsion == zbl
    assert list(load_model(out).type_names) == SPECIES
    _assert_equals_nequip(nequip_files[source], out, tolerance)


def test_nequip_files_that_cannot_convert_are_named(nequip_files, tmp_path, capsys):
    out = str(tmp_path / "ours.pt")
    assert main(["convert", str(nequip_files["type_names_package"]), out]) == 2
    assert "type names Hy, Ox are not chemical symbols" in capsys.readouterr().err
    assert main(["convert", str(nequip_files["type_names"]), out, "--head", "Default"]) == 2
    assert "--head selects a head of a mace-torch model" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "model.nequip.pt2"), out]) == 2
    assert "compiled nequip model (nequip-compile) holds no modules" in capsys.readouterr().err
    (tmp_path / "broken.ckpt").write_bytes(b"not a checkpoint")
    assert main(["convert", str(tmp_path / "broken.ckpt"), out]) == 2
    assert "broken.ckpt: nequip could not load this nequip-allegro file" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "ours.pt").exists()


@pytest.mark.skipif(find_spec("mace") is not None, reason="mace-torch is installed here")
def test_a_mace_file_without_mace_torch_names_the_missing_peer(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "mace.model"), str(tmp_path / "ours.pt")]) == 2
    assert "mace-torch is not installed here" in capsys.readouterr().err
