"""Inference speed and memory: equiforce vs mace-torch on identical weights (CPU).

For each model size (``big``: the PEERS.md model, 128x0e+128x1o; ``small``: 32x0e+32x1o), a
random mace-torch ``ScaleShiftMACE`` is built from a fixed seed, converted with
``equiforce.interop.from_mace_torch`` and the two are checked to agree. Then the median wall
time of one energy+forces call is measured for

* ``acac``: one acetylacetone molecule (15 atoms, first frame of ``acac/test_MD_300K.xyz``);
* ``acac64``: 64 acetylacetone molecules in one batch (frames 0..63 of the same file, 960 atoms);
* ``water``: a periodic box of water at 1 g/cm^3 (``--water-reps`` cubed molecules on a simple
  cubic lattice with seeded random orientations; 9 -> 729 molecules, 2187 atoms, the PEERS.md box).

Method:

* Timing (``pair`` worker, one fresh subprocess per (model, dtype, system)): both models are built
  in the same process; the first call of each gives the parity figures (max |dE|/atom and
  max |dF| against mace-torch); after ``--warmup`` untimed calls each, the two are timed
  *alternately* (mace, ours, mace, ours, ...) ``--repeats`` times, so that load from other
  processes on this shared machine hits both alike. Median ms per call are reported. For the
  water box the first (parity) call is the only warm-up by default (``--box-warmup 0``,
  ``--box-repeats 3``): one mace-torch call there takes ~30 s.
* Order: small systems first, boxes last (the 128-channel box very last), and a box is skipped
  (recorded as such) when ``MemAvailable`` is below ``--box-min-free-gb`` (14 GB for the
  128-channel float32 box, scaled by channels and dtype), since the machine is shared.
* Memory (``mem`` worker, one fresh subprocess per implementation and case): build one model,
  make one energy+forces call, read ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  (``peak_rss_mb``) and its increase over the value just before the call
  (``call_rss_increase_mb``: what the forward/backward pass allocates). ``tracemalloc`` does not
  see torch's allocations, hence RSS. The equiforce worker builds the mace-torch model first
  (to convert it), then frees it, so its baseline includes the imported mace-torch code.
* Same thread count for both (``--threads``, default 2: ``torch.set_num_threads`` and
  ``OMP_NUM_THREADS``).
* The neighbour list and the batch construction are outside the timed region for both; edge
  vectors from positions and shifts are inside it for both (both models compute them in forward).
* Both run in eval mode with autograd on (forces by autograd, no graph kept for a second
  derivative): mace-torch ``model(batch, training=False, compute_force=True)``, equiforce
  ``potential(batch, compute_forces=True)``.

This script needs mace-torch and equiforce in the same environment (``.venv-mace``)::

    .venv-mace/bin/python benchmarks/inference.py              # full run (~15-25 min)
    .venv-mace/bin/python benchmarks/inference.py --smoke      # ~1 min check of the script

Results: ``bench_out/inference_<timestamp>.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
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
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"

# mace-torch model hyperparameters (PEERS.md): only the channel count differs between sizes.
MODEL_SIZES = {"big": 128, "small": 32}
TYPE_Z = (1, 6, 8)  # H, C, O: covers acetylacetone and water
# Small E0s: mace-torch adds them in the model dtype, and with realistic E0s (~ -1000 eV per C)
# the float32 rounding of the total would hide the interaction-energy comparison.
ATOMIC_ENERGIES = (-1.0, -2.0, -3.0)  # eV
AVG_NUM_NEIGHBORS = 10.0
R_MAX = 5.0
WATER_MOLAR_VOLUME_A3 = 18.015 / 6.02214076e23 / 1.0 * 1e24  # Å^3 per molecule at 1 g/cm^3

# Default matrix: (model, dtype) -> systems. The 2187-atom box in float64 with 128 channels
# would need ~20 GB for mace-torch alone (PEERS: 10.3 GB in float32), so it is left out.
DEFAULT_CASES = {
    ("big", "float32"): ("acac", "acac64", "water"),
    ("big", "float64"): ("acac", "acac64"),
    ("small", "float32"): ("acac", "acac64", "water"),
    ("small", "float64"): ("acac", "acac64", "water"),
}


# ---------------------------------------------------------------------------------------------
# Worker side (runs in a subprocess)
# ---------------------------------------------------------------------------------------------


def _rss_mb() -> float:
    """Peak resident set size of this process so far, MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build_mace_model(size: str, dtype: str, seed: int):
    """Random mace-torch ScaleShiftMACE with the PEERS.md hyperparameters.

    Args:
        size: ``"big"`` (128 channels) or ``"small"`` (32 channels).
        dtype: ``"float32"`` or ``"float64"``.
        seed: torch seed for the weights (the same seed gives the same weights in every process).

    Returns:
        The model in eval mode, cast to ``dtype``.
    """
    import mace  # noqa: F401  (must be imported before e3nn)
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    channels = MODEL_SIZES[size]
    torch.manual_seed(seed)
    block = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    # Build in the target dtype, as mace_run_train --default_dtype does: the coupling (U)
    # buffers are computed at construction, and a float32-built model cast to float64 carries
    # float32-rounded coefficients.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        model = _scale_shift_mace(modules, o3, np, torch, block, channels)
    finally:
        torch.set_default_dtype(previous)
    return model.to(getattr(torch, dtype)).eval()


def _scale_shift_mace(modules, o3, np, torch, block, channels: int):
    """The ScaleShiftMACE constructor call (default dtype already set by the caller)."""
    return modules.ScaleShiftMACE(
        r_max=R_MAX,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=2,
        num_elements=len(TYPE_Z),
        hidden_irreps=o3.Irreps(f"{channels}x0e+{channels}x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array(ATOMIC_ENERGIES),
        avg_num_neighbors=AVG_NUM_NEIGHBORS,
        atomic_numbers=list(TYPE_Z),
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=0.7,
        atomic_inter_shift=-0.1,
    )


def water_box(reps: int, seed: int):
    """Periodic cubic box of ``reps**3`` water molecules at 1 g/cm^3.

    Molecules sit on a simple cubic lattice (spacing from the density) with seeded random
    orientations (O-H 0.9572 Å, H-O-H 104.52 degrees).
    """
    import numpy as np
    from ase import Atoms

    rng = np.random.default_rng(seed)
    spacing = WATER_MOLAR_VOLUME_A3 ** (1.0 / 3.0)
    angle = np.deg2rad(104.52)
    local = 0.9572 * np.array(
        [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [np.cos(angle), np.sin(angle), 0.0]]
    )
    positions, symbols = [], []
    for i in range(reps):
        for j in range(reps):
            for k in range(reps):
                q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
                centre = spacing * (np.array([i, j, k]) + 0.5)
                positions.extend(centre + local @ q.T)
                symbols.extend(["O", "H", "H"])
    length = spacing * reps
    return Atoms(symbols, positions=np.array(positions), cell=np.eye(3) * length, pbc=True)


def load_system(name: str, data_dir: Path, water_reps: int, seed: int) -> list:
    """The structures of one benchmark system as a list of ``ase.Atoms``."""
    from ase.io import read

    if name == "water":
        return [water_box(water_reps, seed)]
    path = data_dir / "acac" / "test_MD_300K.xyz"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing (pass --data-dir)")
    count = 1 if name == "acac" else int(name.removeprefix("acac"))
    frames = read(path, f":{count}")
    if len(frames) < count:
        raise ValueError(f"{path} has only {len(frames)} frames, {name} needs {count}")
    return frames


def mace_batch(frames: list, dtype: str) -> dict:
    """mace-torch batch dict (neighbour list built here, outside the timed region)."""
    import mace  # noqa: F401
    import torch
    from mace import data as mace_data
    from mace import tools
    from mace.tools.torch_geometric.dataloader import DataLoader

    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        table = tools.AtomicNumberTable(list(TYPE_Z))
        items = [
            mace_data.AtomicData.from_config(
                mace_data.config_from_atoms(atoms), z_table=table, cutoff=R_MAX
            )
            for atoms in frames
        ]
        loader = DataLoader(items, batch_size=len(items), shuffle=False, drop_last=False)
        return next(iter(loader)).to_dict()
    finally:
        torch.set_default_dtype(previous)


def ours_batch(frames: list, type_names: list[str], r_max: float) -> dict:
    """equiforce batch dict (neighbour list built here, outside the timed region)."""
    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph

    graphs = [
        configuration_to_graph(atoms_to_configuration(a, f"frame {n}"), type_names, r_max)
        for n, a in enumerate(frames)
    ]
    return collate(graphs)


def convert(mace_model):
    """equiforce ``Potential`` from a mace-torch model (eval mode)."""
    from equiforce.interop import from_mace_torch

    return from_mace_torch(mace_model).eval()


def _call_mace(model, batch: dict) -> tuple[Any, Any]:
    out = model(dict(batch), training=False, compute_force=True)
    return out["energy"], out["forces"]


def _call_ours(model, batch: dict) -> tuple[Any, Any]:
    out = model(batch, compute_forces=True)
    return out["energy"], out["forces"]


def _parity(frames: list, mace_out: tuple, ours_out: tuple, dtype: str) -> dict:
    """Largest energy-per-atom and force differences between the two implementations."""
    import torch

    e_ref, f_ref = (t.detach().double() for t in mace_out)
    e_new, f_new = (t.detach().double() for t in ours_out)
    n_atoms = torch.tensor([len(a) for a in frames], dtype=torch.float64)
    de = ((e_new - e_ref) / n_atoms).abs().max().item()
    df = (f_new - f_ref).abs().max().item()
    f_scale = f_ref.abs().max().item()
    e_scale = (e_ref.abs() / n_atoms).max().item()
    if dtype == "float64":
        tol_e, tol_f = 1e-9 * max(1.0, e_scale), 1e-8 * max(1.0, f_scale)
    else:
        tol_e, tol_f = 1e-5 * max(1.0, e_scale), 1e-4 * max(1.0, f_scale)
    return {
        "max_abs_energy_diff_per_atom_eV": de,
        "max_abs_force_diff_eV_per_A": df,
        "max_abs_force_eV_per_A": f_scale,
        "tolerance_energy_per_atom_eV": tol_e,
        "tolerance_force_eV_per_A": tol_f,
        "agree": bool(de <= tol_e and df <= tol_f),
    }


def worker_pair(args: argparse.Namespace) -> dict:
    """Parity check, then interleaved timing of mace-torch and equiforce in this process.

    The first call of each gives the parity figures; after ``warmup`` more calls each, the two
    are timed alternately (mace, ours, mace, ours, ...) so that load from other processes on a
    shared machine hits both alike.
    """
    import mace  # noqa: F401
    import torch

    torch.set_num_threads(args.threads)
    frames = load_system(args.system, args.data_dir, args.water_reps, args.seed)
    mace_model = build_mace_model(args.model, args.dtype, args.seed)
    ours = convert(mace_model)
    m_batch = mace_batch(frames, args.dtype)
    o_batch = ours_batch(frames, ours.type_names, ours.r_max)
    result: dict[str, Any] = {
        "model": args.model,
        "dtype": args.dtype,
        "system": args.system,
        "ours_param_dtype": str(ours.dtype).replace("torch.", ""),
        "n_atoms": sum(len(a) for a in frames),
        "n_edges_mace": int(m_batch["edge_index"].shape[1]),
        "n_edges_ours": int(o_batch["edge_index"].shape[1]),
        "n_structures": len(frames),
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
    }
    result["parity"] = _parity(
        frames, _call_mace(mace_model, m_batch), _call_ours(ours, o_batch), args.dtype
    )
    for _ in range(args.warmup):
        _call_mace(mace_model, m_batch)
        _call_ours(ours, o_batch)
    times: dict[str, list[float]] = {"mace": [], "ours": []}
    for _ in range(args.repeats):
        for impl, model, batch, call in (
            ("mace", mace_model, m_batch, _call_mace),
            ("ours", ours, o_batch, _call_ours),
        ):
            start = time.perf_counter()
            energy, forces = call(model, batch)
            times[impl].append((time.perf_counter() - start) * 1000.0)
            del energy, forces
    for impl, values in times.items():
        result[f"{impl}_median_ms"] = statistics.median(values)
        result[f"{impl}_times_ms"] = values
    result["speedup_mace_over_ours"] = result["mace_median_ms"] / result["ours_median_ms"]
    return result


def worker_mem(args: argparse.Namespace) -> dict:
    """Peak memory of one implementation: build, then one energy+forces call."""
    import mace  # noqa: F401
    import torch

    torch.set_num_threads(args.threads)
    frames = load_system(args.system, args.data_dir, args.water_reps, args.seed)
    mace_model = build_mace_model(args.model, args.dtype, args.seed)
    if args.impl == "mace":
        model, batch, call = mace_model, mace_batch(frames, args.dtype), _call_mace
    else:
        model = convert(mace_model)
        del mace_model
        gc.collect()
        batch, call = ours_batch(frames, model.type_names, model.r_max), _call_ours
    rss_before = _rss_mb()
    start = time.perf_counter()
    energy, forces = call(model, batch)
    first_call_ms = (time.perf_counter() - start) * 1000.0
    del energy, forces
    rss_after = _rss_mb()
    return {
        "impl": args.impl,
        "model": args.model,
        "dtype": args.dtype,
        "system": args.system,
        "first_call_ms": first_call_ms,
        "rss_before_call_mb": rss_before,
        "peak_rss_mb": rss_after,
        "call_rss_increase_mb": rss_after - rss_before,
    }


# ---------------------------------------------------------------------------------------------
# Driver side
# ---------------------------------------------------------------------------------------------


def run_worker(args: argparse.Namespace, mode: str, **case: str) -> dict:
    """Run a worker subprocess and parse its JSON result (or record the failure)."""
    warmup = args.box_warmup if case.get("system") == "water" else args.warmup
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--threads",
        str(args.threads),
        "--warmup",
        str(warmup),
        "--repeats",
        str(case.pop("repeats", args.repeats)),
        "--water-reps",
        str(args.water_reps),
        "--seed",
        str(args.seed),
        "--data-dir",
        str(args.data_dir),
    ]
    for key, value in case.items():
        command += [f"--{key}", value]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=args.case_timeout_s)
    wall = time.perf_counter() - start
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result["worker_wall_s"] = wall
            return result
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {**case, "mode": mode, "error": f"worker exited {proc.returncode}: {tail}"}


def print_table(pairs: list[dict], memory: list[dict]) -> None:
    """Human-readable summary: parity, ms per call, ratio, peak memory."""
    mem = {(m.get("impl"), m.get("model"), m.get("dtype"), m.get("system")): m for m in memory}
    print("\nms per energy+forces call (median, interleaved), peak RSS MB (+ increase in the call):")
    print(
        f"  {'model':5s} {'dtype':7s} {'system':7s} {'atoms':>5s} {'edges':>7s} "
        f"{'mace ms':>10s} {'ours ms':>10s} {'mace/ours':>9s} {'mace MB':>13s} "
        f"{'ours MB':>13s}  parity (max|dE|/atom, max|dF|)"
    )
    for r in pairs:
        key = (r.get("model"), r.get("dtype"), r.get("system"))
        label = f"  {key[0]!s:5s} {key[1]!s:7s} {key[2]!s:7s}"
        if "error" in r:
            print(f"{label} ERROR {r['error'][-300:]}")
            continue

        def mb(impl: str) -> str:
            m = mem.get((impl, *key), {})
            if "peak_rss_mb" not in m:
                return f"{'n/a':>13s}"
            return f"{m['peak_rss_mb']:6.0f} (+{m['call_rss_increase_mb']:4.0f})"

        par = r["parity"]
        print(
            f"{label} {r['n_atoms']:5d} {r['n_edges_ours']:7d} {r['mace_median_ms']:10.1f} "
            f"{r['ours_median_ms']:10.1f} {r['speedup_mace_over_ours']:9.2f} {mb('mace')} "
            f"{mb('ours')}  {par['max_abs_energy_diff_per_atom_eV']:.1e} eV, "
            f"{par['max_abs_force_diff_eV_per_A']:.1e} eV/A {'ok' if par['agree'] else 'DIFFER'}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out", help="output folder")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="shared data folder")
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    p.add_argument("--repeats", type=int, default=5, help="timed calls (small systems)")
    p.add_argument("--box-repeats", type=int, default=3, help="timed calls (water box)")
    p.add_argument("--box-warmup", type=int, default=0,
                   help="untimed calls (water box) besides the first (parity) call")
    p.add_argument("--box-min-free-gb", type=float, default=14.0,
                   help="skip the 128-channel float32 box below this MemAvailable (scaled for "
                   "other sizes/dtypes)")
    p.add_argument("--water-reps", type=int, default=9, help="water box: reps^3 molecules")
    p.add_argument("--seed", type=int, default=7, help="weights and water orientations seed")
    p.add_argument("--models", default="big,small", help="comma list of: big, small")
    p.add_argument("--systems", default="acac,acac64,water", help="comma list of systems")
    p.add_argument("--dtypes", default="float32,float64", help="comma list of dtypes")
    p.add_argument("--skip-memory", action="store_true", help="no per-implementation memory runs")
    p.add_argument("--case-timeout-s", type=float, default=1800.0, help="per-worker timeout")
    p.add_argument("--smoke", action="store_true", help="tiny run (small model, acac, 2 reps)")
    # worker options (internal)
    p.add_argument("--worker", choices=["pair", "mem"], help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=["mace", "ours"], help=argparse.SUPPRESS)
    p.add_argument("--model", choices=sorted(MODEL_SIZES), help=argparse.SUPPRESS)
    p.add_argument("--dtype", choices=["float32", "float64"], help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: a worker case, or the whole benchmark."""
    args = parse_args(argv)
    if args.worker:
        result = worker_pair(args) if args.worker == "pair" else worker_mem(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    try:
        import mace  # noqa: F401

        import equiforce  # noqa: F401
    except ImportError as err:
        print(f"inference.py needs mace-torch and equiforce in one environment: {err}")
        return 2
    try:
        from equiforce.interop import from_mace_torch  # noqa: F401
    except ImportError as err:
        print(f"equiforce.interop.from_mace_torch is not available yet: {err}")
        return 2
    if not (args.data_dir / "acac" / "test_MD_300K.xyz").exists():
        print(f"AcAc data not found under {args.data_dir} (pass --data-dir); nothing to do")
        return 2

    models = [m for m in args.models.split(",") if m]
    wanted = set(args.systems.split(","))
    cases = {
        k: tuple(s for s in v if s in wanted)
        for k, v in DEFAULT_CASES.items()
        if k[0] in models and k[1] in args.dtypes.split(",")
    }
    cases = {k: v for k, v in cases.items() if v}
    if args.smoke:
        cases = {("small", "float64"): ("acac",), ("small", "float32"): ("acac",)}
        args.repeats, args.warmup, args.box_repeats, args.box_warmup = 2, 1, 1, 0
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out / f"inference_{stamp}{'_smoke' if args.smoke else ''}.json"
    report: dict[str, Any] = {
        "benchmark": "inference",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(("torch", "e3nn", "mace", "equiforce")),
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if k not in ("worker", "impl", "model", "dtype", "system")
        },
        "model_hyperparameters": {
            "hidden_irreps": {s: f"{c}x0e+{c}x1o" for s, c in MODEL_SIZES.items()},
            "correlation": 3,
            "num_interactions": 2,
            "max_ell": 3,
            "r_max": R_MAX,
            "num_bessel": 8,
            "num_polynomial_cutoff": 5,
            "radial_MLP": [64, 64, 64],
            "MLP_irreps": "16x0e",
            "interaction": "RealAgnosticResidualInteractionBlock (first and later)",
            "elements": list(TYPE_Z),
        },
        "cases": {f"{m}/{d}": list(s) for (m, d), s in cases.items()},
        "pairs": [],
        "memory": [],
    }

    def save() -> None:
        out_path.write_text(json.dumps(report, indent=2))

    # Small systems first, periodic boxes last (biggest model last): a box that runs out of
    # memory or time then costs nothing else.
    order = [(m, d, sy) for (m, d), systems in cases.items() for sy in systems if sy != "water"]
    order += [(m, d, "water") for m in ("small", "big") for (mm, d), systems in cases.items()
              if mm == m and "water" in systems]
    for model, dtype, system in order:
        repeats = str(args.box_repeats if system == "water" else args.repeats)
        if system == "water":
            free = mem_available_gb()
            scale = (MODEL_SIZES[model] / 128) * (2 if dtype == "float64" else 1)
            need = args.box_min_free_gb * scale
            if free < need:
                note = f"skipped: {free:.1f} GB available < {need:.1f} GB wanted for this box"
                print(f"pair {model} {dtype} {system}: {note}", flush=True)
                skipped = {"model": model, "dtype": dtype, "system": system, "error": note}
                report["pairs"].append(skipped)
                save()
                continue
        print(f"pair {model} {dtype} {system} ...", flush=True)
        result = run_worker(args, "pair", model=model, dtype=dtype, system=system, repeats=repeats)
        report["pairs"].append(result)
        brief = {k: result.get(k) for k in ("mace_median_ms", "ours_median_ms", "error")}
        brief["agree"] = result.get("parity", {}).get("agree")
        print("   ", json.dumps(brief)[:400], flush=True)
        save()
        if args.skip_memory:
            continue
        for impl in ("mace", "ours"):
            print(f"memory {impl} {model} {dtype} {system} ...", flush=True)
            result = run_worker(
                args, "mem", impl=impl, model=model, dtype=dtype, system=system, repeats="1"
            )
            report["memory"].append(result)
            brief = {k: result.get(k) for k in ("peak_rss_mb", "call_rss_increase_mb", "error")}
            print("   ", json.dumps(brief)[:400], flush=True)
            save()

    save()
    print_table(report["pairs"], report["memory"])
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
