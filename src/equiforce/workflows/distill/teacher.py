"""Teachers: an equiforce model or any ASE calculator, behind one labelling interface.

``load_teacher`` turns a ``TeacherConfig`` into a ``Teacher`` and checks it early: a missing
module or class, a class that is not an ASE calculator, keyword arguments the class rejects,
or a calculator that fails (or returns non-finite or mis-shaped results) on a probe structure
all raise ``TeacherError`` with a message that names the spec.

A teacher labels structures (energy eV, forces eV/Å, stress eV/Å^3 where the structure is
periodic in 3D), computes Hessian-vector products (autograd for equiforce teachers, central
differences of forces otherwise) and drives MD through ``calculator()``. Its ``fingerprint``
(the model file's SHA-256, or a hash of the calculator spec, its kwargs and the SHA-256 of every
file a kwarg names, e.g. a mace-torch model file) keys the label cache.
"""

from __future__ import annotations

import abc
import hashlib
import importlib
import json
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from equiforce.data import keys
from equiforce.data.batch import batch_to, collate
from equiforce.data.dataset import file_sha256
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.models.hessian import hessian_vector_product
from equiforce.models.io import load_model
from equiforce.models.potential import NODE_FEATURES, Potential
from equiforce.precision import current_policy, precision_scope
from equiforce.workflows.distill.config import TeacherConfig


class TeacherError(ValueError):
    """The teacher spec is unusable; the message says why and names the spec."""


@dataclass(frozen=True)
class Labels:
    """Teacher labels of one structure.

    Attributes:
        energy: total energy, eV.
        forces: (n_atoms, 3) float64, eV/Å.
        stress: (3, 3) float64, eV/Å^3 (ASE sign), or None for non-periodic structures.
        features: (n_atoms, n_features) float32 invariant node features, or None.
    """

    energy: float
    forces: np.ndarray
    stress: np.ndarray | None = None
    features: np.ndarray | None = None


def is_periodic(atoms) -> bool:
    """Whether ``atoms`` is periodic along all three cell vectors (stress is defined)."""
    return bool(np.all(atoms.pbc)) and abs(atoms.cell.volume) > 0


class Teacher(abc.ABC):
    """Common interface of ``ModelTeacher`` and ``CalculatorTeacher``.

    Attributes:
        fingerprint: hash identifying the teacher (keys the label cache).
        description: human-readable spec (model path or ``module:Class``).
        has_features: whether ``label(..., features=True)`` is supported.
    """

    fingerprint: str
    description: str
    has_features: bool = False

    @abc.abstractmethod
    def label(self, structures: Sequence[Any], features: bool = False) -> list[Labels]:
        """Labels of ASE ``Atoms`` structures (features only for model teachers)."""

    @abc.abstractmethod
    def hvp(self, atoms, vectors: np.ndarray, step: float) -> np.ndarray:
        """Hessian-vector products (n_vectors, n_atoms, 3) float64, eV/Å^2 per unit vector.

        Args:
            atoms: the structure.
            vectors: (n_vectors, n_atoms, 3) float64 probe directions.
            step: central-difference step, Å (calculator teachers).
        """

    @abc.abstractmethod
    def calculator(self):
        """An ASE calculator of the teacher (MD, normal modes)."""

    @abc.abstractmethod
    def n_parameters(self) -> int | None:
        """Number of trainable parameters, or None when unknown."""


class ModelTeacher(Teacher):
    """An equiforce ``Potential`` as teacher.

    Args:
        model: the potential (put in eval mode).
        fingerprint: hash identifying its weights.
        description: e.g. the model file path.
        device: where it runs.
        batch_size: structures per forward pass.
    """

    has_features = True

    def __init__(
        self,
        model: Potential,
        fingerprint: str,
        description: str,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
    ):
        self.model = model.to(device).eval()
        self.fingerprint = fingerprint
        self.description = description
        self.device = torch.device(device)
        self.batch_size = batch_size

    def _batch(self, structures: Sequence[Any]) -> dict[str, torch.Tensor]:
        graphs = []
        for k, atoms in enumerate(structures):
            config = atoms_to_configuration(atoms, source=f"structure {k}")
            graphs.append(configuration_to_graph(config, self.model.type_names, self.model.r_max))
        return batch_to(collate(graphs), self.device)

    def label(self, structures: Sequence[Any], features: bool = False) -> list[Labels]:
        """Batched labels; see ``Teacher.label``."""
        out: list[Labels] = []
        for start in range(0, len(structures), self.batch_size):
            chunk = structures[start : start + self.batch_size]
            batch = self._batch(chunk)
            stress = any(is_periodic(a) for a in chunk)
            with torch.enable_grad(), precision_scope(current_policy(self.model)):
                pred = self.model(
                    batch,
                    compute_forces=True,
                    compute_stress=stress,
                    create_graph=False,
                    extra_outputs=(NODE_FEATURES,) if features else (),
                )
            ptr = batch[keys.PTR].tolist()
            for g, atoms in enumerate(chunk):
                rows = slice(ptr[g], ptr[g + 1])
                feats = pred.get(NODE_FEATURES) if features else None
                out.append(
                    Labels(
                        energy=float(pred[keys.ENERGY][g].detach()),
                        forces=pred[keys.FORCES][rows].detach().cpu().double().numpy(),
                        stress=(
                            pred[keys.STRESS][g].detach().cpu().double().numpy()
                            if is_periodic(atoms)
                            else None
                        ),
                        features=(
                            None if feats is None else feats[rows].detach().cpu().float().numpy()
                        ),
                    )
                )
        return out

    def hvp(self, atoms, vectors: np.ndarray, step: float) -> np.ndarray:
        """Exact products by double backward (``step`` is unused)."""
        batch = self._batch([atoms])
        v = torch.as_tensor(vectors, dtype=torch.float64, device=self.device)
        with torch.enable_grad():
            products = hessian_vector_product(self.model, batch, v)
        return products.detach().cpu().numpy()

    def calculator(self):
        """``EquiforceCalculator`` on the teacher model."""
        from equiforce.md.calculator import EquiforceCalculator

        return EquiforceCalculator(self.model, device=self.device)

    def n_parameters(self) -> int:
        """Trainable parameters of the model."""
        return sum(p.numel() for p in self.model.parameters())


class CalculatorTeacher(Teacher):
    """Any ASE calculator as teacher (structures labelled one at a time).

    Args:
        calc: the calculator instance.
        fingerprint: hash of the spec and keyword arguments.
        description: the spec.
    """

    def __init__(self, calc, fingerprint: str, description: str):
        self.calc = calc
        self.fingerprint = fingerprint
        self.description = description

    def _evaluate(self, atoms, stress: bool) -> Labels:
        atoms = atoms.copy()
        atoms.calc = self.calc
        energy = float(atoms.get_potential_energy())
        forces = np.array(atoms.get_forces(), dtype=np.float64)
        value = None
        if stress:
            from ase.stress import voigt_6_to_full_3x3_stress

            value = voigt_6_to_full_3x3_stress(np.asarray(atoms.get_stress(), dtype=np.float64))
        return Labels(energy=energy, forces=forces, stress=value)

    def label(self, structures: Sequence[Any], features: bool = False) -> list[Labels]:
        """Labels one structure at a time (``features`` must be False)."""
        if features:
            raise TeacherError(f"teacher {self.description}: a calculator has no features")
        return [self._evaluate(atoms, is_periodic(atoms)) for atoms in structures]

    def hvp(self, atoms, vectors: np.ndarray, step: float) -> np.ndarray:
        """``H v ~ -(F(x + h v) - F(x - h v)) / (2 h)``, two force calls per vector."""
        products = []
        for vector in vectors:
            shifted = []
            for sign in (1.0, -1.0):
                moved = atoms.copy()
                moved.positions = atoms.positions + sign * step * vector
                shifted.append(self._evaluate(moved, stress=False).forces)
            products.append(-(shifted[0] - shifted[1]) / (2.0 * step))
        return np.stack(products)

    def calculator(self):
        """The calculator instance."""
        return self.calc

    def n_parameters(self) -> int | None:
        """Parameters of ``calc.models`` (mace-torch calculators), else None."""
        models = getattr(self.calc, "models", None)
        if not models:
            return None
        return sum(p.numel() for p in models[0].parameters())


def load_teacher(config: TeacherConfig, probe) -> Teacher:
    """Build the teacher and check it on ``probe``.

    Args:
        config: the teacher section.
        probe: an ASE ``Atoms`` (a training structure) the teacher must label.

    Returns:
        A ``ModelTeacher`` or ``CalculatorTeacher``.

    Raises:
        TeacherError: the model file is missing or unreadable, the calculator spec cannot be
            imported or constructed, is not an ASE calculator, or fails on the probe.
    """
    if config.model is not None:
        teacher = _model_teacher(config)
    else:
        teacher = _calculator_teacher(config)
    _probe(teacher, probe)
    return teacher


def _model_teacher(config: TeacherConfig) -> ModelTeacher:
    try:
        model = load_model(config.model, map_location=config.device)
    except FileNotFoundError:
        raise TeacherError(f"teacher.model: {config.model} does not exist") from None
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported the same way
        raise TeacherError(f"teacher.model: cannot load {config.model}: {err}") from err
    fingerprint = "model-" + file_sha256(config.model)
    return ModelTeacher(model, fingerprint, str(config.model), config.device, config.batch_size)


def _calculator_teacher(config: TeacherConfig) -> CalculatorTeacher:
    from ase.calculators.calculator import BaseCalculator

    spec = config.calculator
    module_name, _, class_name = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise TeacherError(
            f"teacher.calculator {spec!r}: cannot import {module_name!r}: {err}"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise TeacherError(f"teacher.calculator {spec!r}: {module_name} has no {class_name!r}")
    if not (isinstance(cls, type) and issubclass(cls, BaseCalculator)):
        raise TeacherError(
            f"teacher.calculator {spec!r}: {class_name} is not an ASE calculator class "
            "(a subclass of ase.calculators.calculator.BaseCalculator)"
        )
    try:
        calc = cls(**dict(config.kwargs))
    except TypeError as err:
        raise TeacherError(
            f"teacher.calculator {spec!r}: keyword arguments {dict(config.kwargs)} were "
            f"rejected: {err}"
        ) from err
    except Exception as err:  # noqa: BLE001 - constructors raise anything
        raise TeacherError(f"teacher.calculator {spec!r}: construction failed: {err}") from err
    files = {path: file_sha256(path) for path in _file_arguments(config.kwargs)}
    content = {"calculator": spec, "kwargs": config.kwargs, "files": files}
    text = json.dumps(content, sort_keys=True, default=str)
    fingerprint = "calc-" + hashlib.sha256(text.encode()).hexdigest()
    return CalculatorTeacher(calc, fingerprint, spec)


def _file_arguments(value: Any) -> list[str]:
    """Paths of existing files among (nested) keyword-argument values, e.g. model files."""
    if isinstance(value, str):
        return [value] if os.path.isfile(value) else []
    if isinstance(value, Mapping):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        return [path for item in value for path in _file_arguments(item)]
    return []


def _probe(teacher: Teacher, atoms) -> None:
    """Label ``atoms`` once; raise ``TeacherError`` on failure or bad results."""
    try:
        (labels,) = teacher.label([atoms])
    except TeacherError:
        raise
    except Exception as err:  # noqa: BLE001 - report any failure of the teacher clearly
        raise TeacherError(
            f"teacher {teacher.description} failed on a probe structure "
            f"({atoms.get_chemical_formula()}): {type(err).__name__}: {err}"
        ) from err
    n_atoms = len(atoms)
    if labels.forces.shape != (n_atoms, 3):
        raise TeacherError(
            f"teacher {teacher.description} returned forces of shape {labels.forces.shape} "
            f"for {n_atoms} atoms"
        )
    finite = np.isfinite(labels.energy) and np.isfinite(labels.forces).all()
    if labels.stress is not None:
        finite = finite and np.isfinite(labels.stress).all()
    if not finite:
        raise TeacherError(f"teacher {teacher.description} returned non-finite labels")
