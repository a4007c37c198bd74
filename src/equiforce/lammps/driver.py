"""Run a LAMMPS input with ``pair_style equiforce``: LAMMPS as a library, the model in Python.

``run_lammps`` loads MPI (the ``mpich`` wheel's ``libmpi.so.12``, global symbols, before
LAMMPS), builds or finds the plugin (``equiforce.lammps.build``), registers the callbacks of a
``ModelSession`` with it, starts LAMMPS on ``MPI_COMM_WORLD`` (so ``mpirun -np N`` runs N
domains), ``plugin load``s the plugin and runs the input file. The plugin hands each rank's
atoms and full neighbour list to ``ModelSession.compute`` by pointer (no copies on the way in)
and gets the forces on local and ghost atoms, the per-atom energies and the energy back.
"""

from __future__ import annotations

import ctypes
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from equiforce.lammps.build import lammps_package_dir, plugin_path
from equiforce.lammps.domain import evaluate_domain, lammps_order, lammps_state
from equiforce.models.io import load_model
from equiforce.models.potential import Potential

_INT_P, _DOUBLE_P = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_double)
_LOAD = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.c_char_p, _INT_P, _DOUBLE_P, _INT_P, ctypes.c_void_p, ctypes.c_int
)
_MAP_TYPES = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.c_char_p),
    _INT_P,
    ctypes.c_void_p,
    ctypes.c_int,
)
_COMPUTE = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,  # handle
    ctypes.c_void_p,  # pair
    ctypes.c_int,  # n_local
    ctypes.c_int,  # n_ghost
    _INT_P,  # model types (n_all,), -1 for NULL
    ctypes.c_int,  # n_edges
    _INT_P,  # centre
    _INT_P,  # neighbour
    _DOUBLE_P,  # rij (n_edges, 3)
    _DOUBLE_P,  # x (n_all, 3) with one row per copy, or NULL
    _DOUBLE_P,  # pair_gradient (n_edges, 3), written
    _DOUBLE_P,  # eatom (n_local,) or NULL
    _DOUBLE_P,  # centroid_virial (n_all, 9), written, or NULL
    _DOUBLE_P,  # energy
    ctypes.c_void_p,  # err
    ctypes.c_int,  # errlen
)


class _Callbacks(ctypes.Structure):
    _fields_ = [("load", _LOAD), ("map_types", _MAP_TYPES), ("compute", _COMPUTE)]


@dataclass
class CallRecord:
    """One ``compute`` call of one rank (``run_lammps(timing=True)``), wall seconds.

    With timing on, every rank meets the others in an ``MPI_Barrier`` when the call starts,
    before each halo exchange and before the call returns (``equiforce_barrier``): the time
    a rank spends there is its wait for the slowest rank (load imbalance, or a rank that got
    less CPU), counted in ``wait`` and in no other field but ``callback`` (and ``exchange``,
    which ``exchange_wait`` of it is).

    Attributes:
        n_local, n_ghost, n_edges: the rank's local atoms, ghost rows (distinct atoms of
            other ranks: LAMMPS's ghost copies and periodic images share rows) and edges
            (within r_max) in this call.
        node_rows: rows the model's node-wise work ran on (``DomainTimes.node_rows``): n_local
            for a model that skips the ghost rows (MACE), n_local + n_ghost otherwise.
        lammps: since the end of the rank's previous call (None for its first): LAMMPS's
            integration, neighbour lists and communication, the plugin's C++ edge list and
            its accumulation of forces (and virials) from dE/dr_ij (with the barriers, its
            share of waiting for other ranks is in ``wait`` of the next call).
        callback: inside the Python callback, in total (waits included).
        convert: C arrays to tensors and results back.
        forward, backward, exchange: ``DomainTimes`` (exchange, waits before it included,
            is inside the other two).
        wait: in the barriers (all of them, ``exchange_wait`` included).
        exchange_wait: in the barriers before the halo exchanges.
    """

    n_local: int
    n_ghost: int
    n_edges: int
    node_rows: int
    lammps: float | None
    callback: float
    convert: float
    forward: float
    backward: float
    exchange: float
    wait: float = 0.0
    exchange_wait: float = 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        """The fields as a plain dict (JSON)."""
        return asdict(self)


class LammpsError(RuntimeError):
    """LAMMPS stopped with an error (the message is LAMMPS's, or the model's)."""


def _preload_libraries() -> None:
    """Load MPI, then LAMMPS, with global symbols, before the plugin that needs both.

    ``liblammps.so`` is loaded by the path the ``lammps`` module uses, so the module gets this
    same copy (the wheel ships a second, identical file ``liblammps.so.0``).
    """
    library = Path(sys.prefix) / "lib" / "libmpi.so.12"
    ctypes.CDLL(str(library) if library.exists() else "libmpi.so.12", mode=ctypes.RTLD_GLOBAL)
    ctypes.CDLL(str(lammps_package_dir() / "liblammps.so"), mode=ctypes.RTLD_GLOBAL)


def _array(pointer, shape: tuple[int, ...]) -> np.ndarray:
    """A NumPy view of a C array (an empty array for zero elements, whose pointer may be NULL)."""
    if 0 in shape:
        return np.empty(shape, dtype=np.ctypeslib.as_ctypes_type(pointer._type_))
    return np.ctypeslib.as_array(pointer, shape=shape)


def _reporting(call: Callable[..., None]) -> Callable[..., int]:
    """A C callback from ``call``, whose C signature ends with (err, errlen).

    The callback returns 0 on success, else 1 with the exception's message in ``err``
    (Python's traceback goes to stderr).
    """

    def wrapped(*args) -> int:
        err, errlen = args[-2], args[-1]
        try:
            call(*args[:-2])
        except Exception as exc:  # noqa: BLE001 (any failure must reach LAMMPS, not vanish)
            traceback.print_exc()
            message = f"equiforce: {type(exc).__name__}: {exc}".encode()[: errlen - 1]
            ctypes.memmove(err, message + b"\0", len(message) + 1)
            return 1
        return 0

    return wrapped


class ModelSession:
    """The Python side of ``pair_style equiforce``: models by handle and their evaluation.

    Args:
        plugin: the loaded plugin library (``equiforce_exchange`` is called through it).
        device: torch device of the models.
        precision: precision mode name for every model (None: as saved).
        timing: keep a ``CallRecord`` of every ``compute`` call in ``records``.
    """

    def __init__(
        self,
        plugin: ctypes.CDLL,
        device: str = "cpu",
        precision: str | None = None,
        timing: bool = False,
    ):
        self.plugin = plugin
        self.device = torch.device(device)
        self.precision = precision
        self.potentials: list[Potential] = []
        self.states: list[dict[str, float]] = []  # per model: the system's charge and spin
        self.records: list[CallRecord] | None = [] if timing else None
        self._last_end: float | None = None
        self.callbacks = _Callbacks(
            _LOAD(_reporting(self.load)),
            _MAP_TYPES(_reporting(self.map_types)),
            _COMPUTE(_reporting(self.compute)),
        )
        plugin.equiforce_exchange.argtypes = [
            ctypes.c_void_p,
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.c_int,
        ]
        plugin.equiforce_barrier.argtypes = [ctypes.c_void_p]

    def _barrier(self, pair) -> float:
        """Seconds waited in an MPI barrier with the other ranks (timing only; else 0)."""
        if self.records is None:
            return 0.0
        start = time.perf_counter()
        self.plugin.equiforce_barrier(pair)
        return time.perf_counter() - start

    def load(self, settings: bytes, handle, r_max, strictly_local) -> None:
        """``pair_style equiforce PATH [charge Q] [spin S]``: load the model; its handle,
        r_max (Å) and whether it is strictly local (``equiforce.models.contract``; 1 or 0).
        ``charge`` and ``spin``: the whole system's net charge and spin multiplicity, for a
        model that conditions on them (default: a neutral singlet; ``lammps_state``)."""
        path, *words = settings.decode().split()
        given = dict(zip(words[::2], words[1::2], strict=False))
        unknown = sorted(set(given) - {"charge", "spin"})
        if len(words) % 2 or unknown:
            raise ValueError(
                f"pair_style equiforce {settings.decode()}: expected MODEL [charge Q] [spin S]"
            )
        potential = load_model(path, map_location=self.device, precision=self.precision)
        values = {key: _number(value, key) for key, value in given.items()}
        where = "pair_style equiforce"
        state = lammps_state(potential, where, values.get("charge"), values.get("spin"))
        self.states.append(state)
        self.potentials.append(potential.eval())
        handle[0] = len(self.potentials) - 1
        r_max[0] = potential.r_max
        strictly_local[0] = int(potential.energy_model.strictly_local)

    def map_types(self, handle: int, n_types: int, elements, model_types) -> None:
        """``pair_coeff * * C H O``: the model's type index of each LAMMPS type's element
        (-1 for ``NULL``)."""
        type_names = self.potentials[handle].type_names
        for index in range(n_types):
            element = elements[index].decode()
            if element == "NULL":  # pair_style hybrid: another style covers this type
                model_types[index] = -1
                continue
            if element not in type_names:
                raise ValueError(
                    f"pair_coeff maps atom type {index + 1} to {element}, which the model "
                    f"does not know (its elements: {' '.join(type_names)})"
                )
            model_types[index] = type_names.index(element)

    def compute(
        self,
        handle,
        pair,
        n_local,
        n_ghost,
        types,
        n_edges,
        centre,
        neighbour,
        rij,
        x,
        pair_gradient,
        eatom,
        centroid_virial,
        energy,
    ) -> None:
        """One rank's energy, dE/dr_ij, per-atom energies and, when ``centroid_virial`` is
        not NULL, heat-flux virials (``pair_equiforce.h``)."""
        start = time.perf_counter()
        wait_start = self._barrier(pair)
        begun = time.perf_counter()
        potential = self.potentials[handle]
        n_all = n_local + n_ghost
        atom_type = torch.from_numpy(_array(types, (n_all,)).astype(np.int64))
        edge_index = torch.empty((2, n_edges), dtype=torch.int64)
        edge_index.numpy()[0] = _array(centre, (n_edges,))
        edge_index.numpy()[1] = _array(neighbour, (n_edges,))
        edge_vec = torch.from_numpy(_array(rij, (n_edges, 3)))
        positions = torch.from_numpy(_array(x, (n_all, 3))) if centroid_virial else None
        exchange_wait = 0.0

        def communicate(rows: torch.Tensor, reverse: bool) -> None:
            nonlocal exchange_wait
            exchange_wait += self._barrier(pair)
            self.plugin.equiforce_exchange(pair, rows.data_ptr(), rows.shape[1], int(reverse))

        converted = time.perf_counter()
        result = evaluate_domain(
            potential,
            atom_type,
            n_local,
            edge_index,
            edge_vec,
            communicate,
            positions,
            self.states[handle],
        )
        back = time.perf_counter()
        _array(pair_gradient, (n_edges, 3))[:] = result.pair_gradient.cpu().numpy()
        if centroid_virial:
            virial = lammps_order(result.centroid_virial[:n_all].cpu().numpy())
            _array(centroid_virial, (n_all, 9))[:] = virial
        if eatom:
            _array(eatom, (n_local,))[:] += result.node_energy.cpu().numpy()
        energy[0] = result.energy
        written = time.perf_counter()
        wait_end = self._barrier(pair)
        end = time.perf_counter()
        if self.records is not None:
            times = result.times
            self.records.append(
                CallRecord(
                    n_local,
                    n_ghost,
                    n_edges,
                    times.node_rows,
                    None if self._last_end is None else start - self._last_end,
                    end - start,
                    (converted - begun) + (written - back),
                    times.forward,
                    times.backward,
                    times.exchange,
                    wait_start + exchange_wait + wait_end,
                    exchange_wait,
                )
            )
        self._last_end = end


def _number(text: str, keyword: str) -> float:
    """A ``pair_style`` keyword's value as a float, or an error naming it."""
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"pair_style equiforce: {keyword} {text!r} is not a number") from None


def run_lammps(
    input_path: str | Path,
    device: str = "cpu",
    precision: str | None = None,
    variables: dict[str, str] | None = None,
    log: str | None = "log.lammps",
    screen: bool = True,
    finalize: bool = False,
    timing: bool = False,
) -> list[CallRecord] | None:
    """Run a LAMMPS input file that uses ``pair_style equiforce`` (on ``MPI_COMM_WORLD``).

    Args:
        input_path: the LAMMPS input.
        device: torch device of the models.
        precision: precision mode of the models (``equiforce.precision.MODES``; None: as
            saved).
        variables: ``-var NAME VALUE`` definitions for the input.
        log: LAMMPS log file; None: no log.
        screen: LAMMPS's screen output on (rank 0's stdout).
        finalize: end MPI afterwards (a command's last run: no LAMMPS can start after it in
            this process).
        timing: record where this rank's time went, call by call.

    Returns:
        This rank's ``CallRecord`` of every pair ``compute`` call when ``timing``, else None.

    Raises:
        LammpsError: LAMMPS or the model stopped the run (LAMMPS's message). An error on
            some ranks only ends every rank of a multi-rank run (``MPI_Abort``), since the
            others would wait for them forever.
    """
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"LAMMPS input {input_path} does not exist")
    _preload_libraries()
    library = plugin_path()
    plugin = ctypes.CDLL(str(library))
    session = ModelSession(plugin, device, precision, timing)
    from lammps import lammps  # after MPI is loaded
    from lammps.core import MPIAbortException

    args = ["-log", log or "none"] + ([] if screen else ["-screen", "none"])
    for name, value in (variables or {}).items():
        args += ["-var", name, str(value)]
    plugin.equiforce_set_callbacks(ctypes.byref(session.callbacks))
    lmp = lammps(cmdargs=args)
    try:
        lmp.command(f"plugin load {library}")
        lmp.file(str(input_path))
    except MPIAbortException as err:  # an error on some ranks only (LAMMPS's error->one)
        if lmp.extract_setting("world_size") > 1:  # the others wait in a collective: end all
            print(f"equiforce lammps: error: {err}", file=sys.stderr, flush=True)
            plugin.equiforce_mpi_abort(1)
        raise LammpsError(str(err)) from err
    except Exception as err:  # the lammps module raises plain Exception
        raise LammpsError(str(err)) from err
    finally:
        lmp.finalize() if finalize else lmp.close()
        plugin.equiforce_set_callbacks(ctypes.byref(_Callbacks()))  # no dangling callbacks
    return session.records
