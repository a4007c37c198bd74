"""Inference speed and memory: equiforce Allegro vs nequip-allegro on identical weights (CPU).

The Allegro counterpart of ``inference.py``. For each model size a random nequip-allegro 0.8
``AllegroModel`` is built from a fixed seed (``MODEL_SIZES``: ``small`` = 64 scalar / 32 tensor
features, ``big`` = 128 / 64, both l_max 2 with both parities, 2 layers, two-body / latent /
readout MLP hidden widths 64 / 64 / 32 (nequip-allegro's defaults), 8 Bessel functions,
polynomial cutoff p = 6, r_max 5 Å: the PEERS.md models), converted with
``equiforce.interop.from_nequip_allegro`` and the two are checked to agree; ``tiny`` = l_max 1,
1 layer, 32 / 8 features, MLP hidden 32 / 32 / 16 (``allegro_scaling.py``'s model). Ours runs
on kernel backend ``--backend`` (default ``auto``: the fast kernels on CPU). Systems (the
PEERS.md ones, built by ``inference.py``'s helpers):

* ``acac``: one acetylacetone molecule (15 atoms, first frame of ``acac/test_MD_300K.xyz``);
* ``acac64``: 64 acetylacetone molecules in one batch (960 atoms);
* ``water``: a periodic water box at 1 g/cm^3 (``--water-reps`` cubed molecules; default 7 ->
  1,029 atoms, ~56k edges at 5 Å; PEERS.md's 9 -> 2,187 atoms needed 13.4 GB for nequip-allegro
  small alone, and equiforce needs more per edge, too much for a shared 24 GB machine).

Method (as ``inference.py``): the ``pair`` worker (a fresh subprocess per case) builds both
models, compares the first call of each (max |dE|/atom, max |dF|), then times them
*alternately* (nequip, ours, nequip, ours, ...) after ``--warmup`` untimed calls; medians are
reported. The ``mem`` worker (a fresh subprocess per implementation and case) builds one model,
makes one call and reads ``ru_maxrss`` (``peak_rss_mb``) and its increase in the call. Both use
``--threads`` threads. Neighbour lists and batch construction are outside the timed region
(nequip: ``compute_neighborlist_``; equiforce: ``configuration_to_graph`` + ``collate``); edge
vectors are computed inside both models. nequip runs eager (``model(data)``; AOTInductor
compilation is not measured here), equiforce ``potential(batch, compute_forces=True)``; both
eval mode with autograd for the forces.

Default cases: small float32 on all three systems, small float64 on acac/acac64, big float32 on
acac/acac64 (PEERS.md: nequip-allegro big ran out of memory at 24 GB on the water box), boxes
last and skipped when ``MemAvailable`` is below ``--box-min-free-gb``. Run it in the nequip
environment::

    .venv-nequip/bin/python benchmarks/allegro_inference.py            # ~10-15 min
    .venv-nequip/bin/python benchmarks/allegro_inference.py --smoke    # ~1 min check

Results: ``bench_out/allegro_inference_<timestamp>.json`` and a table on stdout (ratio =
nequip-allegro ms / equiforce ms: above 1 means equiforce is faster).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference as common  # noqa: E402  (systems and batches)
from bench_common import machine_info, mem_available_gb  # noqa: E402

REPO_ROOT = common.REPO_ROOT
TYPE_NAMES = ("H", "C", "O")
R_MAX = 5.0
# size -> (scalar, tensor) features; "tiny" is allegro_scaling.py's l_max 1, 1-layer model
MODEL_SIZES = {"small": (64, 32), "big": (128, 64), "tiny": (32, 8)}
TINY = {
    "l_max": 1,
    "num_layers": 1,
    "scalar_embed_mlp_hidden_layers_width": 32,
    "allegro_mlp_hidden_layers_width": 32,
    "readout_mlp_hidden_layers_width": 16,
}
DEFAULT_CASES = {
    ("small", "float32"): ("acac", "acac64", "water"),
    ("small", "float64"): ("acac", "acac64"),
    ("big", "float32"): ("acac", "acac64", "water"),
    ("tiny", "float32"): ("acac", "acac64", "water"),
}


def nequip_model(size: str, dtype: str, seed: int):
    """Random nequip-allegro ``AllegroModel`` of ``size`` in ``dtype`` (eval mode)."""
    import torch
    from allegro.model import AllegroModel
    from nequip.utils.global_state import set_global_state

    set_global_state(allow_tf32=False)
    scalars, tensors = MODEL_SIZES[size]
    shape = TINY if size == "tiny" else {"l_max": 2, "num_layers": 2}
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AllegroModel(
            seed=seed,
            model_dtype=dtype,
            type_names=list(TYPE_NAMES),
            r_max=R_MAX,
            parity=True,
            radial_chemical_embed={
                "_target_": "allegro.nn.TwoBodyBesselScalarEmbed",
                "num_bessels": 8,
                "polynomial_cutoff_p": 6,
            },
            num_scalar_features=scalars,
            num_tensor_features=tensors,
            avg_num_neighbors=20.0,
            per_type_energy_scales=0.5,
            per_type_energy_shifts={"H": -1.0, "C": -2.0, "O": -3.0},
            **shape,
        )
    return model.eval()


def nequip_batch(frames: list) -> dict:
    """Nequip batch dict with neighbour list (outside the timed region)."""
    import torch
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase

    items = []
    for atoms in frames:
        data = from_ase(atoms)
        data[AtomicDataDict.ATOM_TYPE_KEY] = torch.tensor(
            [TYPE_NAMES.index(s) for s in atoms.get_chemical_symbols()]
        )
        items.append(compute_neighborlist_(data, R_MAX))
    return AtomicDataDict.batched_from_list(items)


def _call_nequip(model, batch: dict):
    from nequip.data import AtomicDataDict

    out = model(dict(batch))
    return (
        out[AtomicDataDict.TOTAL_ENERGY_KEY].reshape(-1).detach(),
        out[AtomicDataDict.FORCE_KEY].detach(),
    )


def _call_ours(model, batch: dict):
    out = model(batch, compute_forces=True)
    return out["energy"].detach(), out["forces"].detach()


def _parity(frames: list, ref: tuple, new: tuple, dtype: str) -> dict:
    """Largest energy-per-atom and force differences (reference = nequip-allegro)."""
    import torch

    e_ref, f_ref = (t.double() for t in ref)
    e_new, f_new = (t.double() for t in new)
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
    """Parity, then interleaved timing of nequip-allegro and equiforce in this process."""
    import torch

    from equiforce.interop import from_nequip_allegro
    from equiforce.kernels import use_backend

    torch.set_num_threads(args.threads)
    frames = common.load_system(args.system, args.data_dir, args.water_reps, args.seed)
    theirs = nequip_model(args.model, args.dtype, args.seed)
    ours = use_backend(from_nequip_allegro(theirs), args.backend).eval()
    n_batch = nequip_batch(frames)
    o_batch = common.ours_batch(frames, ours.type_names, ours.r_max)
    result: dict[str, Any] = {
        "model": args.model,
        "dtype": args.dtype,
        "system": args.system,
        "n_atoms": sum(len(a) for a in frames),
        "n_edges_nequip": int(n_batch["edge_index"].shape[1]),
        "n_edges_ours": int(o_batch["edge_index"].shape[1]),
        "threads": torch.get_num_threads(),
        "warmup": args.warmup,
        "repeats": args.repeats,
        "backend": args.backend,
    }
    result["parity"] = _parity(
        frames, _call_nequip(theirs, n_batch), _call_ours(ours, o_batch), args.dtype
    )
    for _ in range(args.warmup):
        _call_nequip(theirs, n_batch)
        _call_ours(ours, o_batch)
    times: dict[str, list[float]] = {"nequip": [], "ours": []}
    for _ in range(args.repeats):
        for impl, model, batch, call in (
            ("nequip", theirs, n_batch, _call_nequip),
            ("ours", ours, o_batch, _call_ours),
        ):
            start = time.perf_counter()
            call(model, batch)
            times[impl].append((time.perf_counter() - start) * 1000.0)
    for impl, values in times.items():
        result[f"{impl}_median_ms"] = statistics.median(values)
        result[f"{impl}_times_ms"] = values
    result["speedup_nequip_over_ours"] = result["nequip_median_ms"] / result["ours_median_ms"]
    return result


def worker_mem(args: argparse.Namespace) -> dict:
    """Peak memory of one implementation: build, then one energy+forces call."""
    import torch

    torch.set_num_threads(args.threads)
    frames = common.load_system(args.system, args.data_dir, args.water_reps, args.seed)
    model = nequip_model(args.model, args.dtype, args.seed)
    if args.impl == "nequip":
        batch, call = nequip_batch(frames), _call_nequip
    else:
        from equiforce.interop import from_nequip_allegro
        from equiforce.kernels import use_backend

        model = use_backend(from_nequip_allegro(model), args.backend).eval()
        gc.collect()
        batch, call = common.ours_batch(frames, model.type_names, model.r_max), _call_ours
    before = common._rss_mb()
    start = time.perf_counter()
    call(model, batch)
    first = (time.perf_counter() - start) * 1000.0
    after = common._rss_mb()
    return {
        "impl": args.impl,
        "model": args.model,
        "dtype": args.dtype,
        "system": args.system,
        "first_call_ms": first,
        "rss_before_call_mb": before,
        "peak_rss_mb": after,
        "call_rss_increase_mb": after - before,
    }


def run_worker(args: argparse.Namespace, mode: str, **case: str) -> dict:
    """Run a worker subprocess and parse its JSON result (or record the failure)."""
    water = case.get("system") == "water"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        mode,
        "--threads",
        str(args.threads),
        "--backend",
        args.backend,
        "--warmup",
        str(args.box_warmup if water else args.warmup),
        "--repeats",
        str(args.box_repeats if water else args.repeats),
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
    try:
        proc = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=args.case_timeout_s
        )
    except subprocess.TimeoutExpired:
        return {**case, "mode": mode, "error": f"timeout after {args.case_timeout_s} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            result["worker_wall_s"] = time.perf_counter() - start
            return result
    return {
        **case,
        "mode": mode,
        "error": f"worker exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}",
    }


def print_table(pairs: list[dict], memory: list[dict]) -> None:
    """Ms per call, ratio, peak memory, parity."""
    mem = {(m.get("impl"), m.get("model"), m.get("dtype"), m.get("system")): m for m in memory}
    print("\nms per energy+forces call (median, interleaved); peak RSS MB (+ increase in the call)")
    print(
        f"  {'model':5s} {'dtype':7s} {'system':7s} {'atoms':>5s} {'edges':>7s} "
        f"{'nequip ms':>10s} {'ours ms':>10s} {'nequip/ours':>11s} {'nequip MB':>13s} "
        f"{'ours MB':>13s}  parity"
    )
    for r in pairs:
        key = (r.get("model"), r.get("dtype"), r.get("system"))
        label = f"  {key[0]!s:5s} {key[1]!s:7s} {key[2]!s:7s}"
        if "error" in r:
            print(f"{label} ERROR {r['error'][-300:]}")
            continue

        def mb(impl: str, key: tuple = key) -> str:
            m = mem.get((impl, *key), {})
            if "peak_rss_mb" not in m:
                return f"{'n/a':>13s}"
            return f"{m['peak_rss_mb']:6.0f} (+{m['call_rss_increase_mb']:5.0f})"

        p = r["parity"]
        print(
            f"{label} {r['n_atoms']:5d} {r['n_edges_ours']:7d} {r['nequip_median_ms']:10.1f} "
            f"{r['ours_median_ms']:10.1f} {r['speedup_nequip_over_ours']:11.2f} {mb('nequip')} "
            f"{mb('ours')}  {p['max_abs_energy_diff_per_atom_eV']:.1e} eV, "
            f"{p['max_abs_force_diff_eV_per_A']:.1e} eV/A {'ok' if p['agree'] else 'DIFFER'}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out", help="output folder")
    p.add_argument("--data-dir", type=Path, default=common.DEFAULT_DATA_DIR)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--box-warmup", type=int, default=1)
    p.add_argument("--box-repeats", type=int, default=3)
    p.add_argument(
        "--box-min-free-gb",
        type=float,
        default=12.0,
        help="skip the water box below this MemAvailable (~9 GB needed at 7^3)",
    )
    p.add_argument("--water-reps", type=int, default=7)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--models", default="small,big,tiny")
    p.add_argument("--backend", default="auto", help="equiforce kernel backend")
    p.add_argument("--systems", default="acac,acac64,water")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--case-timeout-s", type=float, default=1200.0)
    p.add_argument("--smoke", action="store_true", help="small model, acac, 2 repeats")
    p.add_argument("--worker", choices=["pair", "mem"], help=argparse.SUPPRESS)
    p.add_argument("--impl", choices=["nequip", "ours"], help=argparse.SUPPRESS)
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
        import allegro.model  # noqa: F401
        import nequip  # noqa: F401

        from equiforce.interop import from_nequip_allegro  # noqa: F401
    except ImportError as err:
        print(f"allegro_inference.py needs nequip-allegro and equiforce (.venv-nequip): {err}")
        return 2
    if not (args.data_dir / "acac" / "test_MD_300K.xyz").exists():
        print(f"AcAc data not found under {args.data_dir} (pass --data-dir); nothing to do")
        return 2
    models, wanted, dtypes = (set(x.split(",")) for x in (args.models, args.systems, args.dtypes))
    cases = {
        k: tuple(s for s in v if s in wanted)
        for k, v in DEFAULT_CASES.items()
        if k[0] in models and k[1] in dtypes
    }
    if args.smoke:
        cases = {("small", "float32"): ("acac",), ("small", "float64"): ("acac",)}
        args.repeats, args.warmup = 2, 1
    order = [(m, d, s) for (m, d), ss in cases.items() for s in ss if s != "water"]
    order += [(m, d, s) for (m, d), ss in cases.items() for s in ss if s == "water"]
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out / f"allegro_inference_{stamp}{'_smoke' if args.smoke else ''}.json"
    report: dict[str, Any] = {
        "benchmark": "allegro_inference",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(("torch", "e3nn", "nequip", "allegro", "equiforce")),
        "settings": {
            k: str(v) if isinstance(v, Path) else v
            for k, v in vars(args).items()
            if k not in ("worker", "impl", "model", "dtype", "system")
        },
        "model_sizes": {k: {"scalar": s, "tensor": t} for k, (s, t) in MODEL_SIZES.items()},
        "model_hyperparameters": {
            "l_max": 2,
            "parity": True,
            "num_layers": 2,
            "r_max": R_MAX,
            "mlp_hidden (two-body/latent/readout)": [64, 64, 32],
            "num_bessels": 8,
            "polynomial_cutoff_p": 6,
        },
        "pairs": [],
        "memory": [],
    }

    def save() -> None:
        out_path.write_text(json.dumps(report, indent=2))

    for model, dtype, system in order:
        if system == "water":
            free = mem_available_gb()
            need = args.box_min_free_gb * (2 if dtype == "float64" else 1)
            if free < need:
                note = f"skipped: {free:.1f} GB available < {need:.1f} GB wanted for the box"
                print(f"pair {model} {dtype} {system}: {note}", flush=True)
                report["pairs"].append(
                    {"model": model, "dtype": dtype, "system": system, "error": note}
                )
                save()
                continue
        print(
            f"[{_dt.datetime.now():%H:%M:%S}] pair {model} {dtype} {system} (load "
            f"{os.getloadavg()[0]:.1f}) ...",
            flush=True,
        )
        result = run_worker(args, "pair", model=model, dtype=dtype, system=system)
        result["load_avg_after"] = os.getloadavg()
        report["pairs"].append(result)
        brief = {k: result.get(k) for k in ("nequip_median_ms", "ours_median_ms", "error")}
        brief["agree"] = result.get("parity", {}).get("agree")
        print("   ", json.dumps(brief)[:400], flush=True)
        save()
        if args.skip_memory:
            continue
        for impl in ("nequip", "ours"):
            result = run_worker(args, "mem", impl=impl, model=model, dtype=dtype, system=system)
            report["memory"].append(result)
            print(
                f"    memory {impl}:",
                json.dumps(
                    {k: result.get(k) for k in ("peak_rss_mb", "call_rss_increase_mb", "error")}
                )[:300],
                flush=True,
            )
            save()
    save()
    print_table(report["pairs"], report["memory"])
    print(f"\nwrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
