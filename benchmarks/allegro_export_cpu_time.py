"""CPU time per energy + forces call: our exported Allegro vs nequip-allegro's AOTInductor package.

For each molecule and dtype this script builds the preset's Allegro (random weights, seed 0,
the molecule's species) and times, interleaved call by call, eager equiforce (``fast``
kernels) and our exported package (``equiforce export``'s default ``fast`` backend, loaded with
``equiforce.export.load_exported``): ``benchmarks.export_cpu_time``'s case, reused as is. Then,
in a child process in ``.venv-nequip``, the same weights as nequip's ``GraphModel``
(``equiforce.interop.to_nequip_allegro``) are compiled to nequip's own AOTInductor package
exactly as ``nequip-compile --mode aotinductor --device cpu --target ase`` does it
(``nequip.utils.aot.aot_export_model`` with the ``ase`` target's fields, static frame count and
the model's metadata), loaded as ``NequIPCalculator.from_compiled_model`` loads it
(``load_compiled_model``) and called as the calculator calls it, on our batch's edges (the
neighbour list is not timed for either package; with ``--md-step`` each runs behind its ASE
calculator, ``NequIPCalculator.from_compiled_model`` for nequip's, neighbour lists included:
``benchmarks.export_cpu_time``'s module docstring). One torch thread; the CPU time of the calling
thread (``time.thread_time`` through ``equiforce.measure.timing``), median of ``--repeats``
after ``--warmup``. The child checks nequip's package against our eager model on the same
batch (max |ΔE|, max |ΔF|).

Molecules: ``acac`` (15 atoms) and ``3bpa`` (27 atoms), as in ``benchmarks.export_cpu_time``.

    OMP_NUM_THREADS=1 python -m benchmarks.allegro_export_cpu_time --preset allegro-tiny \\
        --molecules acac 3bpa --dtypes float32 float64

Output: ``<out>/allegro_export_cpu_time_<time>.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import DEFAULT_DATA_DIR, preset_with_species, run_record
from benchmarks.export_cpu_time import (
    MOLECULE_SPECIES,
    add_target_argument,
    add_timing_arguments,
    child_json,
    export_case,
    md_step,
    molecule,
    summary,
    table,
    target_table,
    thread_timed,
)
from equiforce.data import keys
from equiforce.measure.timing import CallTime
from equiforce.models import save_model
from equiforce.models.presets import PRESETS
from equiforce.workflows.bench.report import write_json

__all__ = ["main"]

_PEER = "nequip-aoti"


def _nequip_package(model: torch.nn.Module, data: dict[str, torch.Tensor], path: Path) -> None:
    """Write nequip's ``--target ase`` AOTInductor package of ``model`` to ``path``.

    The steps of ``nequip.scripts.compile.main`` for ``--mode aotinductor --device cpu``,
    without its checkpoint loading: metadata (model + global state, bools as "0"/"1"), the
    ``ase`` target's fields and batch map, ``aot_export_model`` (which checks the package
    against ``model`` on ``data``).
    """
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT
    from nequip.scripts.compile import _AOT_METADATA_KEY, _COMPILE_SEED
    from nequip.utils.aot import aot_export_model
    from nequip.utils.aoti_metadata import (
        NEQUIP_AOTI_INPUTS_KEY,
        NEQUIP_AOTI_OUTPUTS_KEY,
        serialize_aoti_keys,
    )
    from nequip.utils.global_state import get_latest_global_state

    target = COMPILE_TARGET_DICT["ase"]
    metadata = {**model.metadata, **get_latest_global_state(only_metadata_related=True)}
    metadata = {k: str(int(v)) if isinstance(v, bool) else str(v) for k, v in metadata.items()}
    metadata[NEQUIP_AOTI_INPUTS_KEY] = serialize_aoti_keys(target["input"])
    metadata[NEQUIP_AOTI_OUTPUTS_KEY] = serialize_aoti_keys(target["output"])
    dim = torch.export.Dim
    batch_map = {
        "graph": dim.STATIC,
        "node": dim("num_nodes", min=2, max=torch.inf),
        "edge": dim("num_edges", min=2, max=torch.inf),
    }
    aot_export_model(
        model=model,
        device="cpu",
        input_fields=target["input"],
        output_fields=target["output"],
        data=target["data_settings"](dict(data)),
        batch_map=target["batch_map_settings"](batch_map),
        output_path=str(path),
        inductor_configs={_AOT_METADATA_KEY: metadata},
        seed=_COMPILE_SEED,
    )


def _child_nequip(args: argparse.Namespace) -> int:
    """In ``.venv-nequip``: build, load and time nequip's package; JSON on stdout."""
    from nequip.data import AtomicDataDict as D
    from nequip.integrations.ase import NequIPCalculator
    from nequip.model.inference_models import load_compiled_model
    from nequip.utils.global_state import set_global_state

    from equiforce.export.package import atoms_batch
    from equiforce.interop import to_nequip_allegro
    from equiforce.models import load_model

    torch.set_num_threads(1)
    set_global_state(allow_tf32=False)
    potential = load_model(args.child_model, map_location="cpu", backend="fast").eval()
    atoms = molecule(args.molecules[0], DEFAULT_DATA_DIR)
    batch = atoms_batch(atoms, list(potential.type_names), potential.r_max, torch.device("cpu"))
    want = {k: v.detach() for k, v in potential(batch, compute_forces=True).items()}
    # nequip's ASE path (from_ase) carries positions, cell and shifts in float64
    data = {
        D.POSITIONS_KEY: batch[keys.POSITIONS].double(),
        D.EDGE_INDEX_KEY: batch[keys.EDGE_INDEX],
        D.ATOM_TYPE_KEY: batch[keys.ATOM_TYPE],
        D.CELL_KEY: batch[keys.CELL].double(),
        D.EDGE_CELL_SHIFT_KEY: batch[keys.EDGE_SHIFT].double(),
    }
    path = Path(args.child_model).with_suffix(".nequip.pt2")
    # a molecule's zero cell makes nequip's stress NaN (by design), which fails the package's
    # eager-vs-compiled check; compile on a 100 Å box (shifts are zero: same energy, forces)
    example = {**data, D.CELL_KEY: 100.0 * torch.eye(3, dtype=torch.float64)[None]}
    start = time.perf_counter()
    _nequip_package(to_nequip_allegro(potential), example, path)
    compile_s = time.perf_counter() - start
    target = NequIPCalculator._get_aoti_compile_target()
    package, _ = load_compiled_model(str(path), "cpu", target["input"], target["output"])
    if args.md_step:  # nequip's calculator over its package: its neighbour list and conversions
        calculator = NequIPCalculator.from_compiled_model(str(path), device="cpu")
        times = thread_timed({_PEER: md_step(calculator, atoms.copy())}, args)[_PEER]
    else:
        times = thread_timed({_PEER: lambda: package(dict(data))}, args)[_PEER]
    out = {k: v.detach() for k, v in package(dict(data)).items()}
    print(
        json.dumps(
            {
                "cpu_ms": [t.cpu_ms for t in times],
                "wall_ms": [t.wall_ms for t in times],
                "compile_s": compile_s,
                "energy_eV": float((out[D.TOTAL_ENERGY_KEY].sum() - want["energy"].sum()).abs()),
                "forces_eV_per_A": float((out[D.FORCE_KEY] - want["forces"]).abs().max()),
            }
        )
    )
    return 0


def _peer(name: str, dtype: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """nequip's package on the case's weights, timed in a child (its JSON, or the error)."""
    model = preset_with_species(args.preset, MOLECULE_SPECIES[name], dtype, args.seed)
    model_file = save_model(model, folder / f"{name}_{dtype}.pt")
    command = [args.nequip_python, "-m", "benchmarks.allegro_export_cpu_time"]
    command += ["--molecules", name, "--child-model", str(model_file)]
    command += ["--warmup", str(args.warmup), "--repeats", str(args.repeats)]
    command += ["--settle", str(args.settle)] + ["--md-step"] * args.md_step
    return child_json(command)


_PARITY = (
    ("max dE nequip (eV)", "nequip_energy_eV"),
    ("max dF nequip (eV/A)", "nequip_forces_eV_per_A"),
)


def _table(cases: list[dict[str, Any]]) -> str:
    """The results table with nequip's package as the peer."""
    return table(cases, _PEER, _PARITY)


def main(argv: list[str] | None = None) -> int:
    """Export, compile, time and report every (molecule, dtype) case (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    allegro = sorted(k for k, v in PRESETS.items() if v[0] == "allegro")
    p.add_argument("--preset", default="allegro-tiny", choices=allegro)
    p.add_argument("--molecules", nargs="+", default=["acac", "3bpa"], choices=MOLECULE_SPECIES)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=30)
    add_timing_arguments(p)
    add_target_argument(p)
    p.add_argument("--nequip-python", default=".venv-nequip/bin/python")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--child-model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    # export_cpu_time's case: seed-0 weights, the fast export backend, no mace-torch peer
    args.seed, args.backend, args.data_dir, args.mace_python = 0, "fast", DEFAULT_DATA_DIR, ""
    torch.set_num_threads(1)
    if args.child_model is not None:
        return _child_nequip(args)
    if not Path(args.nequip_python).exists():
        raise FileNotFoundError(f"{args.nequip_python} not found (make install-nequip)")
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"allegro_export_cpu_time_{stamp}.json"
    document: dict[str, Any] = {
        **run_record("benchmarks.allegro_export_cpu_time", argv),
        "cases": [],
        "measure": "md-step" if args.md_step else "call",
        "load_average_start": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory(prefix="allegro-export-cpu-time-") as scratch:
        for name in args.molecules:
            for dtype in args.dtypes:
                result = export_case(name, dtype, args, Path(scratch))
                peer = _peer(name, dtype, args, Path(scratch))
                if "error" in peer:
                    result[_PEER] = peer
                else:
                    pairs = zip(peer["cpu_ms"], peer["wall_ms"], strict=True)
                    times = [CallTime(w, c) for c, w in pairs]
                    result["cpu_ms"][_PEER], result["wall_ms"][_PEER] = summary(times)
                    result["nequip_compile_s"] = peer["compile_s"]
                    result["parity"]["nequip_energy_eV"] = peer["energy_eV"]
                    result["parity"]["nequip_forces_eV_per_A"] = peer["forces_eV_per_A"]
                document["cases"].append(result)
                document["load_average_end"] = os.getloadavg()
                write_json(document, path)
                print(_table(document["cases"][-1:]), flush=True)
    print(_table(document["cases"]))
    if len(args.cpu_targets) > 1:
        print(target_table(document["cases"], args.cpu_targets))
    print(f"load average {document['load_average_start']} -> {document['load_average_end']}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
