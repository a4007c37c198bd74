"""Nudged elastic band (``equiforce.md.neb``, ``equiforce neb``): the band evaluated in one
model call per step follows ASE's image-by-image NEB exactly; the climbing image converges to
a first-order saddle point (the exact Hessian: one negative eigenvalue, along the band); the
command writes the band, the barriers and the profile, and names bad input."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.io import read, write

from equiforce.cli import neb as neb_cli
from equiforce.md.calculator import EquiforceCalculator
from equiforce.md.neb import check_ends, committee_barriers, interpolated_band, run_neb
from equiforce.md.relax import relax_structure
from equiforce.testing.structures import vacancy_hop


@pytest.fixture(scope="module")
def relaxed_ends(emt_cu_model):
    """The vacancy hop's end points relaxed with the EMT-fitted model."""
    calculator = EquiforceCalculator(emt_cu_model)
    return [relax_structure(end, calculator, fmax=0.005).atoms for end in vacancy_hop("Cu", 3.6)]


def test_band_in_one_call_follows_ases_image_by_image_neb(emt_cu_model, relaxed_ends):
    """12 FIRE steps of a 3-image climbing band: the batched band (13 model calls) and ASE's
    NEB asking each image's own calculator (39 calls) give the same images to 1e-9 Å and
    energies to 1e-9 eV (a stale band, or an image handed its neighbour's forces, fails
    it)."""
    from ase.mep import NEB
    from ase.optimize import FIRE

    calculator = EquiforceCalculator(emt_cu_model)
    band = interpolated_band(*relaxed_ends, 3)
    ours = run_neb(band, calculator, fmax=1e-6, steps=12)
    assert ours.model_calls == 13 and ours.n_steps == 12 and not ours.converged

    images = [atoms.copy() for atoms in band]
    for image in images:
        image.calc = EquiforceCalculator(emt_cu_model)
    neb = NEB(images, climb=True, method="improvedtangent")
    FIRE(neb, logfile=None).run(fmax=1e-6, steps=12)
    theirs = np.array([image.get_potential_energy() for image in images])
    np.testing.assert_allclose(ours.energies, theirs, atol=1e-9)
    for mine, reference in zip(ours.images, images, strict=True):
        np.testing.assert_allclose(mine.positions, reference.positions, atol=1e-9)


def test_climbing_image_is_a_first_order_saddle(emt_cu_model, relaxed_ends):
    """The vacancy hop, 4 images (none at the midpoint): the climbing band converges (0.01
    eV/Å) with its highest image at a first-order saddle point: its true forces vanish
    (< 0.02 eV/Å) and the exact Hessian there has one negative eigenvalue (the three
    translations aside, near zero), whose mode lies along the band (|cos| > 0.9); the ends
    are minima. Without climbing, the highest image stays below the saddle; the symmetric
    hop's two barriers agree."""
    calculator = EquiforceCalculator(emt_cu_model)
    band = interpolated_band(*relaxed_ends, 4)
    climbing = run_neb(band, calculator, fmax=0.01, steps=400)
    assert climbing.converged
    saddle = climbing.images[climbing.saddle]
    assert np.linalg.norm(saddle.get_forces(), axis=1).max() < 0.02
    eigenvalues, modes = np.linalg.eigh(calculator.get_hessian(saddle))
    assert eigenvalues[0] < -0.1 and np.sort(np.abs(eigenvalues))[3] > 0.05
    assert (eigenvalues < -1e-3).sum() == 1
    before, after = climbing.images[climbing.saddle - 1], climbing.images[climbing.saddle + 1]
    tangent = (after.positions - before.positions).ravel()
    assert abs(modes[:, 0] @ tangent) / np.linalg.norm(tangent) > 0.9
    for end in (climbing.images[0], climbing.images[-1]):
        assert (np.linalg.eigvalsh(calculator.get_hessian(end)) > -1e-3).all()
    assert climbing.forward_barrier == pytest.approx(climbing.backward_barrier, abs=2e-3)

    plain = run_neb(band, calculator, fmax=0.01, steps=400, climb=False)
    assert plain.converged and plain.energies.max() < climbing.energies.max() - 1e-3


def test_cli_writes_the_band_and_names_bad_input(emt_cu_model, tmp_path, capsys):
    """``equiforce neb``: end points relaxed first, the band file, JSON (energies, reaction
    coordinate, barriers) and figure; the written band restarts a run; mismatched end points,
    a too short band and ``--relax-ends`` with a band are refused by name."""
    parser = argparse.ArgumentParser()
    neb_cli.add_arguments(parser)
    initial, final = vacancy_hop("Cu", 3.6)
    write(tmp_path / "initial.xyz", initial)
    write(tmp_path / "final.xyz", final)
    out = tmp_path / "out"
    argv = [emt_cu_model, str(tmp_path / "initial.xyz"), str(tmp_path / "final.xyz")]
    options = ["--images", "3", "--fmax", "0.03", "--out", str(out)]
    rates = ["--rates", "300", "600"]
    assert neb_cli.run(parser.parse_args([*argv, *options, "--relax-ends", *rates])) == 0
    summary = json.loads((out / neb_cli.SUMMARY_NAME).read_text())
    forward, backward = summary["rates"]["forward"], summary["rates"]["backward"]
    assert summary["rates"]["temperature_K"] == [300.0, 600.0]
    assert forward["prefactor_Hz"] == pytest.approx(backward["prefactor_Hz"], rel=0.05)
    assert 1e11 < forward["prefactor_Hz"] < 1e14 and summary["rates"]["saddle_imaginary_cm-1"] < 0
    assert forward["classical_per_s"][0] < forward["classical_per_s"][1]
    assert summary["images"] == 5 and summary["converged"] and summary["saddle_image"] == 2
    assert 0.3 < summary["forward_barrier_eV"] < 3.0
    assert summary["relative_energies_eV"][0] == 0.0
    assert summary["model_calls"] == summary["steps"] + 1
    distances = summary["reaction_coordinate_A"]
    assert distances[0] == 0.0 and np.all(np.diff(distances) > 0)
    assert (out / neb_cli.FIGURE_NAME).stat().st_size > 0
    band = read(out / neb_cli.BAND_NAME, index=":")
    assert len(band) == 5 and band[2].get_potential_energy() == max(
        image.get_potential_energy() for image in band
    )
    printed = capsys.readouterr().out
    assert "converged" in printed and "barrier" in printed and "prefactors" in printed

    again = [emt_cu_model, str(out / neb_cli.BAND_NAME), "--fmax", "0.03"]
    assert neb_cli.run(parser.parse_args([*again, "--out", str(tmp_path / "again")])) == 0
    assert json.loads((tmp_path / "again" / neb_cli.SUMMARY_NAME).read_text())["steps"] <= 2

    with pytest.raises(ValueError, match="--rates needs the climbing image"):
        neb_cli.run(parser.parse_args([*again, "--no-climb", *rates]))
    with pytest.raises(ValueError, match="--relax-ends relaxes two end points"):
        neb_cli.run(parser.parse_args([*again, "--relax-ends"]))
    write(tmp_path / "short.xyz", [initial, initial])
    with pytest.raises(ValueError, match="needs at least 3 frames"):
        neb_cli.run(parser.parse_args([emt_cu_model, str(tmp_path / "short.xyz")]))
    with pytest.raises(ValueError, match="have 31 and 32 atoms"):
        check_ends(initial, bulk("Cu", "fcc", a=3.6, cubic=True) * (2, 2, 2))
    swapped = final.copy()
    swapped.symbols[3] = "Au"
    with pytest.raises(ValueError, match="different orders \\(atom 3: Cu and Au\\)"):
        check_ends(initial, swapped)
    with pytest.raises(ValueError, match="at least 1 interior image"):
        interpolated_band(initial, final, 0)


def test_a_committee_drives_the_band_and_reports_its_barriers_spread(emt_cu_model, tmp_path):
    """A committee folder (the EMT-fitted model and a copy with its weights perturbed):
    ``equiforce neb`` runs the band on the committee's mean, each member in one call per step,
    and reports every member's barrier along the final band (each member evaluated alone on
    the written band: 1e-6 eV) and their spread; on a band with ends of different energies the
    members' forward and backward barriers are theirs; the committee's batch is its mean of
    each structure (1e-10); ``--rates`` with a committee is refused, as is its Hessian."""
    from equiforce.md.committee import MANIFEST_NAME, CommitteeCalculator
    from equiforce.md.vibrations import vibrations
    from equiforce.models import load_model, save_model

    folder = tmp_path / "committee"
    folder.mkdir()
    model = load_model(emt_cu_model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype)
            parameter.mul_(1 + 0.02 * noise)
    save_model(load_model(emt_cu_model), folder / "a.pt")
    save_model(model, folder / "b.pt")
    (folder / MANIFEST_NAME).write_text(json.dumps({"members": ["a.pt", "b.pt"]}))
    initial, final = vacancy_hop("Cu", 3.6)
    write(tmp_path / "initial.xyz", initial)
    write(tmp_path / "final.xyz", final)
    parser = argparse.ArgumentParser()
    neb_cli.add_arguments(parser)
    argv = [str(folder), str(tmp_path / "initial.xyz"), str(tmp_path / "final.xyz")]
    options = ["--images", "3", "--fmax", "0.05", "--relax-ends", "--out", str(tmp_path / "n")]
    neb_cli.run(parser.parse_args([*argv, *options]))
    summary = json.loads((tmp_path / "n" / neb_cli.SUMMARY_NAME).read_text())
    committee = summary["committee"]
    assert committee["members"] == 2 and committee["forward_barrier_spread_eV"] > 1e-3
    band = read(tmp_path / "n" / neb_cli.BAND_NAME, index=":")
    for member, path in enumerate((folder / "a.pt", folder / "b.pt")):
        alone = EquiforceCalculator(path)
        energies = [alone.get_potential_energy(image.copy()) for image in band]
        forward = max(energies) - energies[0]
        assert committee["forward_barriers_eV"][member] == pytest.approx(forward, abs=1e-6)
    spread = np.std(committee["forward_barriers_eV"])
    assert committee["forward_barrier_spread_eV"] == pytest.approx(spread, abs=1e-12)
    committee_calculator = CommitteeCalculator.from_paths([folder])
    shortened = band[:-1]  # ends of different energies: forward and backward differ
    members = committee_barriers(shortened, committee_calculator)
    for member, path in enumerate((folder / "a.pt", folder / "b.pt")):
        alone = EquiforceCalculator(path)
        energies = [alone.get_potential_energy(image.copy()) for image in shortened]
        assert members["forward"][member] == pytest.approx(max(energies) - energies[0])
        assert members["backward"][member] == pytest.approx(max(energies) - energies[-1])
    energies, forces = committee_calculator.energies_and_forces(band[1:3])
    for image, energy, force in zip(band[1:3], energies, forces, strict=True):
        image = image.copy()
        image.calc = CommitteeCalculator.from_paths([folder])
        assert energy == pytest.approx(image.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(force, image.get_forces(), atol=1e-10)
    with pytest.raises(ValueError, match="--rates needs one model's Hessian"):
        neb_cli.run(parser.parse_args([*argv, *options, "--rates", "300"]))
    with pytest.raises(ValueError, match="CommitteeCalculator has no exact Hessian"):
        vibrations(band[0], committee_calculator)
