"""``equiforce convert``: mace-torch model files as equiforce model files, checked before writing
(nequip-allegro files: ``test_convert_nequip.py``).

Runs where mace-torch is installed (``.venv-mace``, ``make test-interop-mace``).
"""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest
import torch

mace_modules = pytest.importorskip("mace.modules")

from equiforce.cli.main import main  # noqa: E402
from equiforce.data import keys  # noqa: E402
from equiforce.export.package import atoms_batch  # noqa: E402
from equiforce.interop import convert as convert_module  # noqa: E402
from equiforce.interop.default_dtype import default_dtype  # noqa: E402
from equiforce.interop.mace_torch import mace_inputs  # noqa: E402
from equiforce.models import load_model  # noqa: E402
from equiforce.testing.structures import peer_parity_structures  # noqa: E402
from tests.interop.test_mace_torch import _NONLINEAR, TYPE_NAMES, _mace_model  # noqa: E402


def test_a_mace_model_file_converts_and_equals_mace_torch(tmp_path, capsys):
    model = _mace_model(pair_repulsion=True)
    torch.save(model, tmp_path / "mace.model")
    assert main(["convert", str(tmp_path / "mace.model"), str(tmp_path / "ours.pt")]) == 0
    printed = capsys.readouterr().out
    assert "vs mace-torch" in printed and printed.count(" ok") == 4  # the four structures
    potential = load_model(tmp_path / "ours.pt")
    assert potential.spec.pair_repulsion
    _assert_equal_to_mace_torch(potential, model)


def _assert_equal_to_mace_torch(potential, model) -> None:
    """``potential``'s energies and forces equal the mace-torch ``model``'s (float64)."""
    for atoms in peer_parity_structures():
        batch = atoms_batch(atoms, TYPE_NAMES, potential.r_max, torch.device("cpu"))
        with default_dtype(torch.float64):
            want = model(mace_inputs(batch, len(TYPE_NAMES), torch.float64), compute_force=True)
        got = potential(batch, compute_forces=True)
        np.testing.assert_allclose(got[keys.ENERGY].detach(), want["energy"].detach(), rtol=1e-10)
        np.testing.assert_allclose(
            got[keys.FORCES].detach(), want["forces"].detach(), rtol=0, atol=1e-9
        )


def test_a_charge_aware_mace_file_is_checked_on_ions_too(tmp_path, capsys):
    """A model conditioned on the charge and spin (``embedding_specs``) is checked against
    mace-torch on the molecule as a cation and an anion doublet as well (those its charge
    table embeds: here -1..1)."""
    from tests.interop.test_mace_torch import _STATE_SPECS

    specs = {**_STATE_SPECS}
    specs["total_charge"] = {**specs["total_charge"], "num_classes": 3, "offset": 1}
    model = _mace_model(embedding_specs=specs, use_embedding_readout=True)
    torch.save(model, tmp_path / "omol.model")
    assert main(["convert", str(tmp_path / "omol.model"), str(tmp_path / "ours.pt")]) == 0
    printed = capsys.readouterr().out
    assert printed.count(" ok") == 6, printed
    assert "charge +1, doublet" in printed and "charge -1, doublet" in printed
    assert "conditions on each structure's total_charge and total_spin" in printed


def test_a_head_is_chosen_and_bad_files_are_named(tmp_path, capsys):
    heads = ["pt_head", "Default"]
    e0 = np.array([[-13.6, -1029.8, -2041.9], [-13.1, -1030.4, -2040.2]])
    model = _mace_model(
        heads=heads, atomic_energies=e0, atomic_inter_scale=[1.7, 0.8], atomic_inter_shift=[0, 1]
    )
    torch.save(model, tmp_path / "two_heads.model")
    source, out = str(tmp_path / "two_heads.model"), str(tmp_path / "ours.pt")
    assert main(["convert", source, out]) == 2
    assert "has the heads pt_head, Default" in capsys.readouterr().err
    assert not (tmp_path / "ours.pt").exists()
    assert main(["convert", source, out, "--head", "Default"]) == 0
    assert load_model(out).spec.atomic_energies == tuple(e0[1])
    torch.save({"weights": torch.zeros(3)}, tmp_path / "dict.model")
    assert main(["convert", str(tmp_path / "dict.model"), str(tmp_path / "x.pt")]) == 2
    assert "dict.model: holds <class 'dict'>, not a mace-torch model" in capsys.readouterr().err


@pytest.mark.skipif(find_spec("allegro") is not None, reason="nequip-allegro is installed here")
def test_a_nequip_file_without_nequip_names_the_missing_peer(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "last.ckpt"), str(tmp_path / "ours.pt")]) == 2
    assert "nequip-allegro is not installed here" in capsys.readouterr().err


def test_a_converted_model_that_disagrees_is_not_written(tmp_path, monkeypatch):
    """The comparison guards the file: a converter error (here, one weight perturbed after
    conversion) stops the write and names the structures that disagree."""
    from equiforce.interop import mace_torch

    convert = mace_torch.from_mace_torch

    def wrong(model, head=None):
        potential = convert(model, head)
        with torch.no_grad():
            next(potential.parameters()).add_(1e-3)
        return potential

    monkeypatch.setattr(mace_torch, "from_mace_torch", wrong)
    torch.save(_mace_model(), tmp_path / "mace.model")
    with pytest.raises(convert_module.ConversionError, match="disagrees with mace-torch") as err:
        convert_module.convert_model_file(tmp_path / "mace.model", tmp_path / "ours.pt")
    assert not (tmp_path / "ours.pt").exists()
    assert not any(row["within_tolerance"] for row in err.value.figures)


def test_an_equiforce_mace_goes_back_to_a_mace_torch_file(tmp_path, capsys):
    """``--to mace-torch``: a converted MH-style model (non-linear blocks, envelope after the
    MLPs), its weights moved as fine-tuning would, written as a mace-torch file after the
    check; mace-torch loads it (``torch.load``) and equals ours, and converting it again
    gives back every weight. An Allegro file, or ``--head`` with ``--to``, is refused by
    name; a disagreeing copy is not written."""
    from equiforce.models import save_model
    from equiforce.precision import apply_policy, from_name
    from equiforce.testing.models import tiny_allegro

    nonlinear = {"interaction_cls": mace_modules.interaction_classes[_NONLINEAR]}
    model = _mace_model(
        **nonlinear, interaction_cls_first=nonlinear["interaction_cls"], apply_cutoff=False
    )
    torch.save(model, tmp_path / "mh.model")
    assert main(["convert", str(tmp_path / "mh.model"), str(tmp_path / "ours.pt")]) == 0
    capsys.readouterr()
    tuned = load_model(tmp_path / "ours.pt")
    with torch.no_grad():
        for parameter in tuned.parameters():
            parameter.mul_(1.01)  # "fine-tuned"
    save_model(tuned, tmp_path / "tuned.pt")
    argv = ["convert", str(tmp_path / "tuned.pt"), str(tmp_path / "tuned.model")]
    assert main([*argv, "--to", "mace-torch"]) == 0
    printed = capsys.readouterr().out
    assert "for mace-torch" in printed and printed.count(" ok") == 4
    back = torch.load(tmp_path / "tuned.model", map_location="cpu", weights_only=False)
    _assert_equal_to_mace_torch(tuned, back)
    assert main(["convert", str(tmp_path / "tuned.model"), str(tmp_path / "again.pt")]) == 0
    again = load_model(tmp_path / "again.pt").state_dict()
    for name, value in tuned.state_dict().items():
        torch.testing.assert_close(again[name], value, rtol=1e-12, atol=1e-12, msg=name)

    # saved with a bf16 policy (float32 weights): written in float32, compared in plain float32
    save_model(apply_policy(tuned, from_name("bf16-mixed")), tmp_path / "bf16.pt")
    bf16 = ["convert", str(tmp_path / "bf16.pt"), str(tmp_path / "bf16.model")]
    assert main([*bf16, "--to", "mace-torch"]) == 0
    written = torch.load(tmp_path / "bf16.model", map_location="cpu", weights_only=False)
    assert {p.dtype for p in written.parameters()} == {torch.float32}
    save_model(tiny_allegro(), tmp_path / "allegro.pt")
    out = str(tmp_path / "x.model")
    assert main(["convert", str(tmp_path / "allegro.pt"), out, "--to", "mace-torch"]) == 2
    assert "allegro.pt: to_mace_torch exports MACE models" in capsys.readouterr().err
    assert main([*argv, "--to", "mace-torch", "--head", "Default"]) == 2
    assert "--head selects a head of a mace-torch source" in capsys.readouterr().err


def test_a_mace_torch_copy_that_disagrees_is_not_written(tmp_path, monkeypatch):
    from equiforce.interop import mace_torch_export
    from equiforce.models import save_model
    from equiforce.testing.models import tiny_mace

    export = mace_torch_export.to_mace_torch

    def wrong(potential):
        model = export(potential)
        with torch.no_grad():
            next(model.parameters()).add_(1e-3)
        return model

    monkeypatch.setattr(mace_torch_export, "to_mace_torch", wrong)
    save_model(tiny_mace(type_names=TYPE_NAMES), tmp_path / "ours.pt")
    with pytest.raises(convert_module.ConversionError, match="mace-torch's copy disagrees"):
        convert_module.export_mace_torch_file(tmp_path / "ours.pt", tmp_path / "x.model")
    assert not (tmp_path / "x.model").exists()
