"""Allegro (and MACE) scaling with system size: time and peak memory vs atom count (CPU).

A small Allegro model (``MODEL``: l_max 1, 1 layer, 32 scalar / 8 tensor features, r_max 4 Å,
float32) evaluates energy + forces on periodic boxes at fixed density from ~10^3 to ~10^5 atoms,
so that the edge count is proportional to the atom count:

* ``--system fcc`` (default): fcc aluminium, a = 4.05 Å (0.060 atoms/Å^3), ``--reps`` n -> an
  n x n x n supercell of the 4-atom cube (default 6, 9, 14, 20, 29 -> 864 ... 97,556 atoms;
  43 and 63 -> 318,028 and 1,000,188 atoms),
  every atom displaced by seeded Gaussian noise (0.05 Å per component) so that forces are not
  zero by symmetry. At r_max 4 Å each atom has its 12 nearest neighbours plus a few of the
  6 second neighbours (4.05 Å) that the noise brings inside: ~13-14 edges per atom.
* ``--shuffle``: the same boxes with the atoms in random order (seeded), so that consecutive
  atoms are not neighbours in space (the blocks' halos are largest).
* ``--system water``: water at 1 g/cm^3, n^3 molecules on a simple cubic lattice with seeded
  random orientations (3 n^3 atoms; ~27 edges per atom at r_max 4 Å, so ~2x the memory per
  atom of the fcc box: 10^5 atoms would not fit in 8 GB). The log-log slopes of time and memory
against atom count are fitted by least squares (Allegro is strictly local: the ideal exponent
is 1).

Method, one fresh subprocess per (implementation, size):

* build the model (``--seed``), build the box;
* neighbour list: median wall time of ``--nl-repeats`` calls of the implementation's own
  neighbour list (equiforce: ``equiforce.data.neighbors.neighbor_list`` = vesin + sort, and the
  full graph/batch construction ``configuration_to_graph`` + ``collate``; nequip:
  ``compute_neighborlist_`` with its default backend, matscipy); reported separately, not part
  of the model time;
* model: ``--warmup`` untimed energy+forces calls, then ``--repeats`` timed calls (forces by
  autograd from float64 positions, eval mode, no graph kept); median and minimum are reported
  and both are fitted (on a loaded shared machine the minimum is the less noisy estimate);
* memory: ``equiforce.measure.memory.MemoryProbe`` around the model calls (freed heap handed
  back to the OS, the resident set read, the kernel's peak-RSS mark reset, ``VmHWM`` read
  after all calls):
  ``call_rss_increase_mb`` is what the energy+forces calls added on top of the resident model,
  box and graph; ``peak_rss_mb`` is the process's peak including the graph construction.
  ``tracemalloc`` does not see torch's allocations, hence RSS.

Sizes run smallest first; before each size the peak is extrapolated linearly in atoms from the
previous sizes, and the size is skipped (recorded as such) when the prediction exceeds
``--max-peak-gb`` (default 8 GB; the machine is shared) or the available memory.

Ours runs with ``Potential``'s default ``blocking`` (inference of strictly local models in
blocks of centre atoms, ``equiforce.models.local_blocks``); ``--whole`` also runs ours with
``blocking = None`` (one pass over the whole graph, as before blocks existed), interleaved.

``--family mace`` times the issue's MACE instead (``MACE_MODEL``: 128 channels, L = 1,
correlation 3, 2 interactions, max_ell 3, r_max 5 Å; the ``mace-128-l1`` bench preset on this
script's species); at r_max 5 Å the fcc box has ~43 edges per atom. ``--backend`` picks the
kernel backend of ours (default ``auto``: the fast kernels on CPU).

``--peer`` (Allegro only) also runs nequip-allegro 0.8 (eager) on identical weights: a random
``allegro.model.AllegroModel`` is built from the seed and both workers use it (ours converted
with ``equiforce.interop.from_nequip_allegro``), so this needs the nequip environment::

    .venv/bin/python benchmarks/allegro_scaling.py                     # ours (~10 min)
    .venv-nequip/bin/python benchmarks/allegro_scaling.py --peer       # ours and nequip-allegro
    .venv/bin/python benchmarks/allegro_scaling.py --smoke             # ~1 min check
    .venv/bin/python benchmarks/allegro_scaling.py --family mace --max-peak-gb 12
    .venv/bin/python benchmarks/allegro_scaling.py --reps 43,63 --threads 1   # 3x10^5, 10^6
    .venv/bin/python benchmarks/allegro_scaling.py --combine A.json B.json  # docs/scaling.png

``--combine`` joins runs of the same family into one series (e.g. the peer run to 10^5 and an
ours-only run to 10^6) and refits.

Without ``--peer`` ours is built from ``AllegroSpec`` directly (same hyperparameters, its own
random weights: timing does not depend on the weights).

Output: ``bench_out/<family>_scaling_<timestamp>.json`` and ``.png`` (log-log time and
memory with the fitted slopes in the legend); a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info, mem_available_gb  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
WATER_MOLAR_VOLUME_A3 = 18.015 / 6.02214076e23 * 1e24  # Å^3 per molecule at 1 g/cm^3
TYPE_NAMES = ("H", "O", "Al")
FCC_A = 4.05  # Å, aluminium

# The small model: one layer so that 10^5 fcc atoms (1.3 M edges) stay under ~8 GB (ours).
MODEL: dict[str, Any] = {
    "r_max": 4.0,
    "l_max": 1,
    "parity": True,
    "num_layers": 1,
    "num_scalar_features": 32,
    "num_tensor_features": 8,
    "two_body_mlp_hidden": [32],
    "latent_mlp_hidden": [32],
    "readout_mlp_hidden": [16],
    "mlp_nonlinearity": "silu",
    "num_bessels": 8,
    "polynomial_cutoff_p": 6,
    "avg_num_neighbors": 13.0,
}
# The MACE (``equiforce.models.presets`` "mace-128-l1" on this script's species).
MACE_MODEL: dict[str, Any] = {
    "r_max": 5.0,
    "num_channels": 128,
    "max_L": 1,
    "max_ell": 3,
    "correlation": 3,
    "num_interactions": 2,
    "num_radial_basis": 8,
    "radial_mlp": [64, 64, 64],
    "avg_num_neighbors": 43.0,
}
IMPLS = {
    "ours": "equiforce",
    "ours_whole": "equiforce whole-graph",
    "nequip": "nequip-allegro",
}


def model_settings(family: str) -> dict[str, Any]:
    """Hyperparameters of the timed model of ``family``."""
    return MACE_MODEL if family == "mace" else MODEL


# ---------------------------------------------------------------------------------------------
# structures and models
# ---------------------------------------------------------------------------------------------


def water_box(reps: int, seed: int):
    """Periodic cubic box of ``reps**3`` water molecules at 1 g/cm^3 (``ase.Atoms``).

    Molecules sit on a simple cubic lattice (spacing from the density) with seeded random
    orientations (O-H 0.9572 Å, H-O-H 104.52 degrees); O-O distance 3.10 Å.
    """
    import numpy as np
    from ase import Atoms

    rng = np.random.default_rng(seed)
    spacing = WATER_MOLAR_VOLUME_A3 ** (1.0 / 3.0)
    angle = np.deg2rad(104.52)
    local = 0.9572 * np.array(
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [np.cos(angle), np.sin(angle), 0.0]]
    )
    grid = np.stack(np.meshgrid(*[np.arange(reps)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rotations, _ = np.linalg.qr(rng.normal(size=(len(grid), 3, 3)))
    centres = spacing * (grid + 0.5)
    positions = centres[:, None, :] + np.einsum("ka,mba->mkb", local, rotations)
    symbols = ["O", "H", "H"] * len(grid)
    return Atoms(
        symbols, positions=positions.reshape(-1, 3), cell=np.eye(3) * spacing * reps, pbc=True
    )


def fcc_box(reps: int, seed: int):
    """Periodic fcc aluminium supercell (``reps``^3 cubes of 4 atoms, a = 4.05 Å), rattled."""
    import numpy as np
    from ase.build import bulk

    atoms = bulk("Al", "fcc", a=FCC_A, cubic=True).repeat((reps, reps, reps))
    rng = np.random.default_rng(seed)
    atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
    return atoms


def make_box(system: str, reps: int, seed: int):
    """The benchmark box of ``system`` ("fcc" or "water") at size ``reps``."""
    return fcc_box(reps, seed) if system == "fcc" else water_box(reps, seed)


def box_atoms(system: str, reps: int) -> int:
    """Atom count of ``make_box(system, reps)``."""
    return (4 if system == "fcc" else 3) * reps**3


def nequip_model(dtype: str, seed: int):
    """Random nequip-allegro ``AllegroModel`` with the ``MODEL`` hyperparameters."""
    import torch
    from allegro.model import AllegroModel
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    options = {
        "seed": seed,
        "model_dtype": dtype,
        "type_names": list(TYPE_NAMES),
        "r_max": MODEL["r_max"],
        "l_max": MODEL["l_max"],
        "parity": MODEL["parity"],
        "radial_chemical_embed": {
            "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
            "num_bessels": MODEL["num_bessels"],
            "polynomial_cutoff_p": MODEL["polynomial_cutoff_p"],
        },
        "scalar_embed_mlp_hidden_layers_depth": len(MODEL["two_body_mlp_hidden"]),
        "scalar_embed_mlp_hidden_layers_width": MODEL["two_body_mlp_hidden"][0],
        "num_layers": MODEL["num_layers"],
        "num_scalar_features": MODEL["num_scalar_features"],
        "num_tensor_features": MODEL["num_tensor_features"],
        "allegro_mlp_hidden_layers_depth": len(MODEL["latent_mlp_hidden"]),
        "allegro_mlp_hidden_layers_width": MODEL["latent_mlp_hidden"][0],
        "readout_mlp_hidden_layers_depth": len(MODEL["readout_mlp_hidden"]),
        "readout_mlp_hidden_layers_width": MODEL["readout_mlp_hidden"][0],
        "avg_num_neighbors": MODEL["avg_num_neighbors"],
        "per_type_energy_scales": 0.5,
        "per_type_energy_shifts": {"H": -1.0, "O": -3.0, "Al": -2.0},
    }
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return AllegroModel(**options).eval()


def ours_model(dtype: str, seed: int, peer: bool, family: str = "allegro", backend: str = "auto"):
    """Equiforce ``Potential``: converted from ``nequip_model`` (``peer``) or built directly."""
    from equiforce.kernels import use_backend
    from equiforce.models.registry import build_model

    if peer:
        from equiforce.interop import from_nequip_allegro

        return use_backend(from_nequip_allegro(nequip_model(dtype, seed)), backend).eval()
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in model_settings(family).items()}
    spec = {
        "type_names": TYPE_NAMES,
        "dtype": dtype,
        "seed": seed,
        "atomic_energies": (-1.0, -3.0, -2.0),
        **fields,
    }
    spec["scale"] = 0.5 if family == "allegro" else 0.7
    return build_model(family, spec, backend=backend).eval()


# ---------------------------------------------------------------------------------------------
# worker (one fresh process per implementation and size)
# ---------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _median_ms(fn, repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times), times


def worker(args: argparse.Namespace) -> dict:
    """Time and memory of one implementation on one box."""
    import torch

    torch.set_num_threads(args.threads)
    atoms = make_box(args.system, args.size_reps, args.seed)
    if args.shuffle:
        import numpy as np

        atoms = atoms[np.random.default_rng(args.seed).permutation(len(atoms))]
    result: dict[str, Any] = {
        "impl": args.impl,
        "reps": args.size_reps,
        "n_atoms": len(atoms),
        "threads": torch.get_num_threads(),
    }
    if args.impl in ("ours", "ours_whole"):
        from equiforce.data.batch import collate
        from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
        from equiforce.data.neighbors import neighbor_list

        model = ours_model(args.dtype, args.seed, args.peer, args.family, args.backend)
        if args.impl == "ours_whole":
            model.blocking = None
        result["blocking"] = None if model.blocking is None else vars(model.blocking)
        r_max = model.r_max
        result["backend"] = sorted(
            {type(m).__name__ for m in model.modules() if hasattr(m, "descriptor")}
        )
        config = atoms_to_configuration(atoms, args.system)
        result["nl_ms"], _ = _median_ms(
            lambda: neighbor_list(config.positions, config.cell, config.pbc, r_max),
            args.nl_repeats,
        )
        result["graph_ms"], _ = _median_ms(
            lambda: collate([configuration_to_graph(config, model.type_names, r_max)]),
            args.nl_repeats,
        )
        batch = collate([configuration_to_graph(config, model.type_names, r_max)])
        gc.collect()
        result["n_edges"] = int(batch["edge_index"].shape[1])

        def call():
            out = model(batch, compute_forces=True)
            return out["energy"].detach(), out["forces"].detach()
    else:
        from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase

        model = nequip_model(args.dtype, args.seed)
        types = torch.tensor([TYPE_NAMES.index(s) for s in atoms.get_chemical_symbols()])

        def make():
            data = from_ase(atoms)
            data[AtomicDataDict.ATOM_TYPE_KEY] = types
            return compute_neighborlist_(data, MODEL["r_max"])

        result["nl_ms"], _ = _median_ms(make, args.nl_repeats)
        result["graph_ms"] = result["nl_ms"]
        data = make()
        gc.collect()
        result["n_edges"] = int(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1])

        def call():
            out = model(dict(data))
            return (
                out[AtomicDataDict.TOTAL_ENERGY_KEY].detach(),
                out[AtomicDataDict.FORCE_KEY].detach(),
            )

    from equiforce.measure.memory import MemoryProbe

    result["process_peak_before_call_mb"] = _rss_mb()
    probe = MemoryProbe(torch.device("cpu"))
    probe.start()
    result["rss_before_call_mb"] = probe.baseline_mb
    start = time.perf_counter()
    energy, forces = call()
    result["first_call_ms"] = (time.perf_counter() - start) * 1000.0
    result["energy_eV"] = float(energy.double().sum())
    result["max_abs_force_eV_per_A"] = float(forces.double().abs().max())
    result["forces_sample"] = forces[:4].double().tolist()
    del energy, forces
    for _ in range(args.warmup):
        call()
    result["median_ms"], result["times_ms"] = _median_ms(call, args.repeats)
    result["min_ms"] = min(result["times_ms"])
    memory = probe.stop()
    result["memory_source"] = memory["source"]
    result["peak_rss_mb"] = max(result["process_peak_before_call_mb"], memory["peak_mb"])
    result["call_rss_increase_mb"] = memory["peak_minus_baseline_mb"]
    return result


# ---------------------------------------------------------------------------------------------
# driver
# ---------------------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace, impl: str, reps: int) -> dict:
    """Run one worker subprocess and parse its ``RESULT`` line (or record the failure)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--impl",
        impl,
        "--size-reps",
        str(reps),
        "--threads",
        str(args.threads),
        "--dtype",
        args.dtype,
        "--seed",
        str(args.seed),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--nl-repeats",
        str(args.nl_repeats),
        "--system",
        args.system,
        "--family",
        args.family,
        "--backend",
        args.backend,
    ]
    command += ["--peer"] if args.peer else []
    command += ["--shuffle"] if args.shuffle else []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=args.case_timeout_s
        )
    except subprocess.TimeoutExpired:
        return {
            "impl": impl,
            "reps": reps,
            "n_atoms": box_atoms(args.system, reps),
            "error": f"timeout after {args.case_timeout_s} s",
        }
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result["worker_wall_s"] = time.perf_counter() - start
            return result
    tail = (proc.stderr or proc.stdout)[-1500:]
    return {
        "impl": impl,
        "reps": reps,
        "n_atoms": box_atoms(args.system, reps),
        "error": f"worker exited {proc.returncode}: {tail}",
    }


def predicted_peak_gb(done: list[dict], n_atoms: int) -> float:
    """Peak RSS extrapolated linearly in atoms from the two largest sizes done (0 if < 2)."""
    ok = sorted((r for r in done if "peak_rss_mb" in r), key=lambda r: r["n_atoms"])
    if len(ok) < 2:
        return 0.0
    a, b = ok[-2], ok[-1]
    slope = (b["peak_rss_mb"] - a["peak_rss_mb"]) / max(1, b["n_atoms"] - a["n_atoms"])
    return (b["peak_rss_mb"] + slope * (n_atoms - b["n_atoms"])) / 1024.0


def fit_exponent(
    rows: list[dict], key: str, min_atoms: int = 0, max_atoms: float = math.inf
) -> dict | None:
    """Least-squares slope and prefactor of log(value) vs log(n_atoms)."""
    import numpy as np

    points = [
        (r["n_atoms"], r[key])
        for r in rows
        if r.get(key) and r[key] > 0 and min_atoms <= r["n_atoms"] <= max_atoms
    ]
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    return {
        "exponent": float(slope),
        "prefactor": float(math.exp(intercept)),
        "n_points": len(points),
        "min_atoms": min(p[0] for p in points),
        "max_atoms": max(p[0] for p in points),
    }


def add_fits(report: dict) -> None:
    """Fit every size (``fits``) and the sizes up to 10^5 atoms (``fits_to_1e5``)."""
    fitted = ("median_ms", "min_ms", "nl_ms", "graph_ms", "peak_rss_mb", "call_rss_increase_mb")
    for name, max_atoms in (("fits", math.inf), ("fits_to_1e5", 1.0e5)):
        report[name] = {
            impl: {key: fit_exponent(rows, key, max_atoms=max_atoms) for key in fitted}
            for impl, rows in report["results"].items()
        }


def merge_reports(reports: list[dict]) -> list[dict]:
    """One report per family: the rows of runs of the same family joined (sizes sorted).

    Each run's own skipped/failed rows are dropped where another run measured that size.
    """
    merged: dict[str, dict] = {}
    for report in reports:
        family = report["settings"].get("family", "allegro")
        if family not in merged:
            merged[family] = {**report, "results": {}}
        results = merged[family]["results"]
        for impl, rows in report["results"].items():
            results.setdefault(impl, []).extend(rows)
    for report in merged.values():
        for impl, rows in report["results"].items():
            measured = {r["n_atoms"] for r in rows if "median_ms" in r}
            rows = [r for r in rows if "median_ms" in r or r["n_atoms"] not in measured]
            report["results"][impl] = sorted(rows, key=lambda r: r["n_atoms"])
        add_fits(report)
    return list(merged.values())


def model_title(report: dict) -> str:
    """One-line description of a report's model."""
    m, settings = report["model"], report["settings"]
    if settings.get("family", "allegro") == "mace":
        head = (
            f"MACE {m['num_channels']} ch, L={m['max_L']}, corr {m['correlation']}, "
            f"{m['num_interactions']} layers"
        )
    else:
        head = (
            f"Allegro l_max {m['l_max']}, {m['num_layers']} layer(s), "
            f"{m['num_scalar_features']}/{m['num_tensor_features']} features"
        )
    return f"{head}, r_max {m['r_max']}"


def plot(reports: list[dict], path: Path) -> None:
    """Log-log time and memory vs atoms of one or more reports, fitted slopes in the legends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.6))
    markers = {"ours": "o", "ours_whole": "^", "nequip": "s"}
    color = 0
    for report in reports:
        family = report["settings"].get("family", "allegro")
        for impl, rows in report["results"].items():
            rows = [r for r in rows if "median_ms" in r]
            if not rows:
                continue
            name = f"{IMPLS[impl]} {family}" if len(reports) > 1 else IMPLS[impl]
            n = [r["n_atoms"] for r in rows]
            fits = report["fits"][impl]
            for key, ax, label, style in (
                ("min_ms", ax_t, f"{name} model (min)", "-"),
                ("median_ms", ax_t, f"{name} model (median)", "--"),
                ("nl_ms", ax_t, f"{name} neighbour list", ":"),
                ("call_rss_increase_mb", ax_m, f"{name} call increase", "-"),
                ("peak_rss_mb", ax_m, f"{name} process peak", ":"),
            ):
                if not all(key in r for r in rows):
                    continue
                fit = fits.get(key)
                slope = f" (slope {fit['exponent']:.2f})" if fit else ""
                ax.plot(
                    n,
                    [r[key] for r in rows],
                    style,
                    color=f"C{color}",
                    marker=markers[impl],
                    label=label + slope,
                )
            color += 1
    for ax, ylabel in ((ax_t, "ms per energy+forces call"), (ax_m, "peak RSS, MB")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"atoms ({reports[0]['settings']['system']} box, fixed density)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6)
    settings = reports[0]["settings"]
    lines = [model_title(report) for report in reports]
    lines.append(
        f"{settings['dtype']}, {settings['threads']} thread(s), backend "
        f"{settings.get('backend', 'reference')} ({reports[0]['date'][:10]})"
    )
    fig.suptitle("\n".join(lines), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def print_table(report: dict) -> None:
    """Rows per size and the fitted exponents."""
    print(
        f"\n{'impl':10s} {'atoms':>7s} {'edges':>9s} {'median ms':>10s} {'min ms':>8s} "
        f"{'NL ms':>8s} "
        f"{'graph ms':>9s} {'peak MB':>8s} {'call +MB':>9s}  per-atom us, KB/edge"
    )
    for impl, rows in report["results"].items():
        for r in rows:
            if "error" in r:
                print(f"{impl:10s} {r['n_atoms']:7d} {r['error'][-200:]}")
                continue
            print(
                f"{impl:10s} {r['n_atoms']:7d} {r['n_edges']:9d} {r['median_ms']:10.1f} "
                f"{r.get('min_ms', float('nan')):8.1f} {r['nl_ms']:8.1f} {r['graph_ms']:9.1f} "
                f"{r['peak_rss_mb']:8.0f} "
                f"{r['call_rss_increase_mb']:9.0f}  {1000 * r['median_ms'] / r['n_atoms']:.1f}, "
                f"{1024 * r['call_rss_increase_mb'] / r['n_edges']:.2f}"
            )
    for name in ("fits", "fits_to_1e5"):
        for impl, fits in report.get(name, {}).items():
            text = ", ".join(f"{k} {v['exponent']:.3f}" for k, v in fits.items() if v)
            print(f"log-log exponents {impl} ({name}): {text}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out", help="output folder")
    p.add_argument(
        "--system",
        choices=["fcc", "water"],
        default="fcc",
        help="fcc aluminium (4 reps^3 atoms) or water (3 reps^3 atoms)",
    )
    p.add_argument(
        "--reps",
        default=None,
        help="comma list of box sizes (default fcc 6,9,14,20,29; water 7,10,15,22,32)",
    )
    p.add_argument(
        "--peer",
        action="store_true",
        help="also nequip-allegro on identical weights (needs .venv-nequip)",
    )
    p.add_argument("--peer-max-reps", type=int, default=32, help="largest box for the peer")
    p.add_argument(
        "--whole",
        action="store_true",
        help="also ours without blocks (Potential.blocking = None), interleaved",
    )
    p.add_argument(
        "--shuffle",
        action="store_true",
        help="atoms in random order (seeded) instead of the lattice order",
    )
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--family", choices=["allegro", "mace"], default="allegro")
    p.add_argument("--backend", default="auto", help="kernel backend of ours")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2, help="untimed calls after the first")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per size")
    p.add_argument("--nl-repeats", type=int, default=3, help="timed neighbour-list calls")
    p.add_argument(
        "--max-peak-gb",
        type=float,
        default=8.0,
        help="skip a size whose extrapolated peak RSS exceeds this",
    )
    p.add_argument("--case-timeout-s", type=float, default=900.0)
    p.add_argument("--smoke", action="store_true", help="two tiny boxes, one repeat")
    p.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        help="only plot these report JSONs into one figure (--plot-out) and print their tables",
    )
    p.add_argument("--plot-out", type=Path, default=REPO_ROOT / "docs" / "scaling.png")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=sorted(IMPLS), help=argparse.SUPPRESS)
    p.add_argument("--size-reps", type=int, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: a worker, or the whole benchmark."""
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    if args.combine:
        reports = merge_reports([json.loads(path.read_text()) for path in args.combine])
        for report in reports:
            print(f"\n{model_title(report)}")
            print_table(report)
        plot(reports, args.plot_out)
        print(f"wrote {args.plot_out}")
        return 0
    try:
        import equiforce.models.allegro  # noqa: F401
    except ImportError as err:
        print(f"equiforce's Allegro model is not available: {err}")
        return 2
    if args.peer and args.family != "allegro":
        print("--peer compares Allegro with nequip-allegro only")
        return 2
    if args.peer:
        try:
            import allegro.model  # noqa: F401
            import nequip  # noqa: F401
        except ImportError as err:
            print(f"--peer needs nequip + nequip-allegro in this environment: {err}")
            return 2
    if args.smoke:
        args.reps = "2,3" if args.system == "fcc" else "3,5"
        args.warmup, args.repeats, args.nl_repeats = 0, 1, 1
    if args.reps is None:
        args.reps = "6,9,14,20,29" if args.system == "fcc" else "7,10,15,22,32"
    sizes = sorted(int(r) for r in args.reps.split(",") if r)
    impls = ["ours"] + (["ours_whole"] if args.whole else []) + (["nequip"] if args.peer else [])
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = args.out / f"{args.family}_scaling_{stamp}{'_smoke' if args.smoke else ''}"
    report: dict[str, Any] = {
        "benchmark": f"{args.family}_scaling",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(("torch", "equiforce", "e3nn", "nequip", "allegro")),
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("worker", "impl", "size_reps")
        },
        "model": model_settings(args.family),
        "system": (
            "fcc Al, a = 4.05 Å, reps^3 cubic cells, rattled 0.05 Å"
            if args.system == "fcc"
            else "water, 1 g/cm^3, reps^3 molecules on a cubic lattice, random orientations"
        ),
        "results": {impl: [] for impl in impls},
        "fits": {},
    }

    def save() -> None:
        add_fits(report)
        base.with_suffix(".json").write_text(json.dumps(report, indent=2))

    for reps in sizes:
        n_atoms = box_atoms(args.system, reps)
        for impl in impls:
            rows = report["results"][impl]
            if impl != "ours" and reps > args.peer_max_reps:
                continue
            need = predicted_peak_gb(rows, n_atoms)
            free = mem_available_gb() - 1.0
            failed = bool(rows) and "error" in rows[-1]
            if failed or need > min(args.max_peak_gb, free):
                note = (
                    "skipped after a failure or skip at a smaller size"
                    if failed
                    else f"skipped: predicted peak {need:.1f} GB > limit "
                    f"{min(args.max_peak_gb, free):.1f} GB"
                )
                rows.append(
                    {"impl": impl, "reps": reps, "n_atoms": n_atoms, "error": note, "skipped": True}
                )
                print(f"{impl} {n_atoms} atoms: {note}", flush=True)
                continue
            print(
                f"[{_dt.datetime.now():%H:%M:%S}] {impl} {n_atoms} atoms (load "
                f"{os.getloadavg()[0]:.1f}) ...",
                flush=True,
            )
            result = run_worker(args, impl, reps)
            result["load_avg_after"] = os.getloadavg()
            rows.append(result)
            brief = {
                k: result.get(k) for k in ("n_edges", "median_ms", "nl_ms", "peak_rss_mb", "error")
            }
            print("   ", json.dumps(brief)[:300], flush=True)
            save()
    if args.peer:
        report["agreement"] = agreement(report["results"])
    save()
    try:
        plot([report], base.with_suffix(".png"))
    except Exception as err:  # noqa: BLE001  (the JSON is what matters)
        print(f"plot failed: {err}")
    print_table(report)
    if args.peer:
        print("agreement (ours vs nequip, same weights):", json.dumps(report["agreement"]))
    print(f"\nwrote {base.with_suffix('.json')} and .png")
    return 0


def agreement(results: dict[str, list[dict]]) -> list[dict]:
    """Total energy and force-sample differences between the two at each common size."""
    theirs = {r["n_atoms"]: r for r in results.get("nequip", []) if "energy_eV" in r}
    out = []
    for r in results.get("ours", []):
        t = theirs.get(r["n_atoms"])
        if "energy_eV" not in r or t is None:
            continue
        df = max(
            abs(a - b)
            for ra, rb in zip(r["forces_sample"], t["forces_sample"], strict=True)
            for a, b in zip(ra, rb, strict=True)
        )
        out.append(
            {
                "n_atoms": r["n_atoms"],
                "n_edges_ours": r["n_edges"],
                "n_edges_nequip": t["n_edges"],
                "energy_diff_per_atom_eV": abs(r["energy_eV"] - t["energy_eV"]) / r["n_atoms"],
                "max_force_diff_first_atoms_eV_per_A": df,
            }
        )
    return out


if __name__ == "__main__":
    sys.exit(main())
