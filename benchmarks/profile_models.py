"""Where equiforce MACE spends its time: torch.profiler tables by op, and the Python overhead.

Model: MACE 128x0e+128x1o, correlation 3, 2 interactions, max_ell 3, r_max 5, radial MLP
[64, 64, 64], residual first interaction (the PEERS.md model), random weights (timing does
not depend on them). Systems: ``acac`` (one acetylacetone, 15 atoms), ``acac64`` (64 of
them in one batch, 960 atoms), ``water`` (a periodic box of ``--water-reps`` cubed molecules
at 1 g/cm^3, seeded orientations; 10 -> 1000 molecules, 3000 atoms). Modes: ``inference``
(energy + forces) and ``train`` (energy + forces with ``create_graph``, a force loss, and its
backward: one training step without the optimiser).

For every (dtype, system, mode): ``--warmup`` untimed calls, then the median wall time of
``--repeats`` calls without the profiler, then one call under ``torch.profiler`` (CPU) giving
self CPU time per op. "Python overhead" is ``1 - (summed self time of all ops) / wall``:
the share of the wall time spent outside torch ops (interpreter, dispatch, autograd
bookkeeping); it is a lower bound on the overhead, since dispatch inside ops counts as op time.
Each case runs in its own subprocess (peak RSS is that process's ``ru_maxrss``).

    .venv/bin/python benchmarks/profile_models.py --backend reference
    .venv/bin/python benchmarks/profile_models.py --backend fast --systems acac64 --modes train

Results: ``bench_out/profile_<backend>_<timestamp>.json`` and markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info, mem_available_gb  # noqa: E402
from inference import load_system, ours_batch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO_ROOT.parent / "shared" / "data"
CATEGORIES = {  # op name fragments -> category, first match wins
    "matmul": ("mm", "matmul", "linear", "einsum", "bmm", "addmm", "baddbmm", "dot"),
    "gather/scatter": ("index", "gather", "scatter", "embedding", "segment"),
    "copy/cat/fill": ("copy", "cat", "clone", "contiguous", "zero", "fill", "empty", "stack"),
    "equiforce kernels": ("equiforce::",),
}


def build(dtype: str, backend: str, channels: int):
    """The PEERS.md MACE as an equiforce ``Potential`` (random weights) on ``backend``."""
    from equiforce.models import build_model
    from equiforce.models.mace import MACESpec

    spec = MACESpec(
        type_names=("H", "C", "O"),
        r_max=5.0,
        num_channels=channels,
        max_L=1,
        max_ell=3,
        correlation=3,
        num_interactions=2,
        radial_mlp=(64, 64, 64),
        avg_num_neighbors=10.0,
        first_interaction_residual=True,
        dtype=dtype,
        seed=3,
    )
    return build_model("mace", spec, backend=backend)


def category(name: str) -> str:
    """Coarse op category for the summary table."""
    if name.startswith("equiforce::"):
        return "equiforce kernels"
    lowered = name.lower().removeprefix("aten::")
    for label, fragments in CATEGORIES.items():
        if any(f in lowered for f in fragments):
            return label
    return "elementwise/other"


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time and profile one (dtype, system, mode) case in this process."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(args.threads)
    model = build(args.dtype, args.backend, args.channels)
    frames = load_system(args.system, args.data_dir, args.water_reps, args.seed)
    batch = ours_batch(frames, model.type_names, model.r_max)
    reference = torch.zeros(batch["pos"].shape, dtype=torch.float64)

    def call() -> None:
        if args.mode == "inference":
            out = model(batch, compute_forces=True)
            del out
            return
        out = model(batch, compute_forces=True, create_graph=True)
        loss = 1e-3 * out["energy"].sum() + ((out["forces"] - reference) ** 2).mean()
        loss.backward()

    if args.mode == "inference":
        model.eval()
    for _ in range(args.warmup):
        call()
    walls = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call()
        walls.append((time.perf_counter() - start) * 1000.0)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        call()
        profiled_wall = (time.perf_counter() - start) * 1000.0
    rows = [
        {"op": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000.0, "calls": e.count}
        for e in prof.key_averages()
    ]
    rows.sort(key=lambda r: -r["self_cpu_ms"])
    op_total = sum(r["self_cpu_ms"] for r in rows)
    by_category: dict[str, float] = {}
    for r in rows:
        by_category[category(r["op"])] = by_category.get(category(r["op"]), 0.0) + r["self_cpu_ms"]
    return {
        "backend": args.backend,
        "dtype": args.dtype,
        "system": args.system,
        "mode": args.mode,
        "channels": args.channels,
        "n_atoms": int(batch["pos"].shape[0]),
        "n_edges": int(batch["edge_index"].shape[1]),
        "threads": torch.get_num_threads(),
        "wall_median_ms": statistics.median(walls),
        "wall_ms": walls,
        "profiled_wall_ms": profiled_wall,
        "op_self_total_ms": op_total,
        "python_overhead_share": max(0.0, 1.0 - op_total / profiled_wall),
        "by_category_ms": by_category,
        "top_ops": rows[: args.top],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }


def run_case(args: argparse.Namespace, dtype: str, system: str, mode: str) -> dict[str, Any]:
    """Run ``worker`` in a fresh subprocess and parse its result line."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        f"--backend={args.backend}",
        f"--dtype={dtype}",
        f"--system={system}",
        f"--mode={mode}",
        f"--channels={args.channels}",
        f"--threads={args.threads}",
        f"--warmup={args.warmup}",
        f"--repeats={args.box_repeats if system == 'water' else args.repeats}",
        f"--water-reps={args.water_reps}",
        f"--seed={args.seed}",
        f"--top={args.top}",
        f"--data-dir={args.data_dir}",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=args.case_timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    tail = (proc.stderr or proc.stdout)[-1500:]
    return {"dtype": dtype, "system": system, "mode": mode, "error": tail}


def markdown(result: dict[str, Any], top: int) -> str:
    """One case as a markdown table of its top ops, with the category and overhead summary."""
    head = (
        f"**{result['backend']} {result['dtype']} {result['system']} {result['mode']}** "
        f"({result['n_atoms']} atoms, {result['n_edges']} edges): median wall "
        f"{result['wall_median_ms']:.1f} ms; profiled call {result['profiled_wall_ms']:.1f} ms "
        f"of which ops {result['op_self_total_ms']:.1f} ms -> Python overhead "
        f"{100 * result['python_overhead_share']:.0f}%; peak RSS {result['peak_rss_mb']:.0f} MB"
    )
    total = result["op_self_total_ms"]
    lines = [head, "", "| op | self CPU ms | % | calls |", "|---|---|---|---|"]
    for r in result["top_ops"][:top]:
        share = 100 * r["self_cpu_ms"] / total
        lines.append(f"| `{r['op']}` | {r['self_cpu_ms']:.1f} | {share:.1f} | {r['calls']} |")
    cats = sorted(result["by_category_ms"].items(), key=lambda kv: -kv[1])
    lines.append("")
    lines.append("By category: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in cats))
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="reference", help="kernel backend of the model")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--systems", default="acac,acac64,water")
    p.add_argument("--modes", default="inference,train")
    p.add_argument("--channels", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--box-repeats", type=int, default=2)
    p.add_argument("--water-reps", type=int, default=10, help="water box: reps^3 molecules")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--top", type=int, default=12, help="ops per table")
    p.add_argument(
        "--box-min-free-gb",
        type=float,
        default=12.0,
        help="skip water-box cases below this MemAvailable",
    )
    p.add_argument("--case-timeout-s", type=float, default=1500.0)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every requested case, print tables, write JSON."""
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_path = args.out / f"profile_{args.backend}_{stamp}.json"
    report: dict[str, Any] = {
        "benchmark": "profile_models",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(("torch", "equiforce")),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cases": [],
    }
    for dtype in args.dtypes.split(","):
        for system in args.systems.split(","):
            for mode in args.modes.split(","):
                if system == "water" and mem_available_gb() < args.box_min_free_gb:
                    note = f"skipped: MemAvailable {mem_available_gb():.1f} GB"
                    report["cases"].append(
                        {"dtype": dtype, "system": system, "mode": mode, "error": note}
                    )
                    continue
                print(f"case {dtype} {system} {mode} ...", file=sys.stderr, flush=True)
                result = run_case(args, dtype, system, mode)
                report["cases"].append(result)
                out_path.write_text(json.dumps(report, indent=2))
                if "error" in result:
                    print(f"{dtype} {system} {mode}: ERROR {result['error'][-400:]}\n")
                else:
                    print(markdown(result, args.top) + "\n", flush=True)
    out_path.write_text(json.dumps(report, indent=2))
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
