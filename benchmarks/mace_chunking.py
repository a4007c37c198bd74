"""MACE energy + forces in receiver chunks vs one pass: time and peak memory vs atom count.

The issue's MACE (``allegro_scaling.MACE_MODEL``: 128 channels, L = 1, correlation 3,
2 layers, max_ell 3, r_max 5 Å; float32, ``--backend`` kernels) on the rattled fcc boxes of
``allegro_scaling`` (``--reps`` n -> 4 n^3 atoms, ~35 edges per atom), with
``MACE.chunk_edges`` set per run: ``none`` is the one-pass evaluation, a number the chunked
one (checkpointed chunks: eval mode with forces). One fresh process per (size, setting),
the settings of a size run one after the other, sizes smallest first.

Per point: one first call, ``--warmup`` untimed calls, ``--repeats`` timed calls (median and
minimum, ms); peak RSS before the first call and after the last (``call +MB``: what the
energy + forces calls added); energy and forces, so the settings' results are compared
(max |dE| per atom, max |dF|). A size is skipped for a setting when its peak, extrapolated
linearly in atoms from that setting's previous sizes, exceeds ``--max-peak-gb`` or the
available memory. Log-log exponents of time and call memory are fitted per setting.

    .venv/bin/python benchmarks/mace_chunking.py --reps 6,9,14,20,29 --chunk-edges none,16384

Output: ``bench_out/mace_chunking_<timestamp>.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from allegro_scaling import (  # noqa: E402
    _rss_mb,
    fcc_box,
    fit_exponent,
    ours_model,
    predicted_peak_gb,
)
from bench_common import REPO_ROOT, git_commit, machine_info, mem_available_gb  # noqa: E402


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time and memory of one setting on one box (runs in its own process).

    With several settings (``--interleave``) they take turns call by call in this one
    process, so a slow phase of a shared machine hits them alike; the memory figures are
    then the largest setting's.
    """
    import torch

    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph

    torch.set_num_threads(args.threads)
    settings = args.setting.split(",")
    model = ours_model("float32", args.seed, False, "mace", args.backend)
    atoms = fcc_box(args.size_reps, args.seed)
    config = atoms_to_configuration(atoms, "fcc")
    batch = collate([configuration_to_graph(config, model.type_names, model.r_max)])
    gc.collect()
    result: dict[str, Any] = {
        "setting": args.setting,
        "reps": args.size_reps,
        "n_atoms": len(atoms),
        "n_edges": int(batch["edge_index"].shape[1]),
        "threads": torch.get_num_threads(),
        "rss_before_call_mb": _rss_mb(),
    }

    def call(setting: str):
        model.energy_model.chunk_edges = None if setting == "none" else int(setting)
        out = model(batch, compute_forces=True)
        return out["energy"].detach(), out["forces"].detach()

    start = time.perf_counter()
    energy, forces = call(settings[0])
    result["first_call_ms"] = (time.perf_counter() - start) * 1000.0
    torch.save({"energy": energy, "forces": forces}, args.result_file)
    deviations = {}
    for setting in settings[1:]:  # their first calls, compared with the first setting's
        other_energy, other_forces = call(setting)
        deviations[setting] = {
            "max_abs_dE_per_atom": float((other_energy - energy).abs().max()) / len(atoms),
            "max_abs_dF": float((other_forces - forces).abs().max()),
        }
    del energy, forces
    for _ in range(args.warmup):
        for setting in settings:
            call(setting)
    times: dict[str, list[float]] = {setting: [] for setting in settings}
    for _ in range(args.repeats):
        for setting in settings:
            start = time.perf_counter()
            call(setting)
            times[setting].append((time.perf_counter() - start) * 1000.0)
    result["times_ms"] = times[settings[0]]
    result["median_ms"] = statistics.median(times[settings[0]])
    result["min_ms"] = min(times[settings[0]])
    if len(settings) > 1:
        result["interleaved"] = {
            setting: {
                "median_ms": statistics.median(values),
                "min_ms": min(values),
                "times_ms": values,
                **deviations.get(setting, {}),
            }
            for setting, values in times.items()
        }
    result["peak_rss_mb"] = _rss_mb()
    result["call_rss_increase_mb"] = result["peak_rss_mb"] - result["rss_before_call_mb"]
    return result


def run_point(args: argparse.Namespace, setting: str, reps: int, result_file: Path) -> dict:
    """One worker subprocess; its ``RESULT`` line parsed (or the failure recorded)."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        "--setting",
        setting,
        "--size-reps",
        str(reps),
        "--result-file",
        str(result_file),
    ]
    for name in ("threads", "seed", "warmup", "repeats", "backend"):
        command += [f"--{name}", str(getattr(args, name))]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=args.case_timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    return {"setting": setting, "reps": reps, "error": proc.stderr[-2000:]}


def _split_interleaved(row: dict) -> list[dict]:
    """One row per setting of an interleaved timing run (no memory figures)."""
    if "interleaved" not in row:
        return [row]
    common = {k: row[k] for k in ("reps", "n_atoms", "n_edges", "threads")}
    return [{"setting": s, **common, **t} for s, t in row["interleaved"].items()]


def compare(rows: list[dict], files: dict[tuple[str, int], Path], settings: list[str]) -> None:
    """Add to each row its max deviation from the first setting's energy and forces."""
    import torch

    for row in rows:
        reference = files.get((settings[0], row["reps"]))
        own = files.get((row["setting"], row["reps"]))
        if "max_abs_dF" in row or reference is None or own is None or not reference.exists():
            continue
        a, b = torch.load(reference), torch.load(own)
        n_atoms = row["n_atoms"]
        row["max_abs_dE_per_atom"] = float((a["energy"] - b["energy"]).abs().max()) / n_atoms
        row["max_abs_dF"] = float((a["forces"] - b["forces"]).abs().max())


def print_table(rows: list[dict]) -> None:
    """Markdown table of the points."""
    print("| setting | atoms | edges | ms (median) | call +MB | µs/atom | KB/edge | max dF |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "median_ms" not in r:
            print(f"| {r['setting']} | reps {r['reps']} | - | {r.get('skipped', 'failed')} |")
            continue
        print(
            f"| {r['setting']} | {r['n_atoms']:,} | {r['n_edges']:,} | {r['median_ms']:,.0f} | "
            f"{r.get('call_rss_increase_mb', float('nan')):,.0f} | "
            f"{1e3 * r['median_ms'] / r['n_atoms']:,.0f} | "
            f"{1024 * r.get('call_rss_increase_mb', float('nan')) / r['n_edges']:.1f} | "
            f"{r.get('max_abs_dF', float('nan')):.1e} |"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", default="6,9,14", help="fcc supercell sizes, comma-separated")
    p.add_argument("--chunk-edges", default="none,16384", help="settings: none or edges")
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--warmup", type=int, default=0, help="untimed calls after the first")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per point")
    p.add_argument(
        "--interleave",
        action="store_true",
        help="time all settings in one process per size, taking turns (no memory figures)",
    )
    p.add_argument("--max-peak-gb", type=float, default=12.0)
    p.add_argument("--case-timeout-s", type=float, default=1800.0)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setting", help=argparse.SUPPRESS)
    p.add_argument("--size-reps", type=int, help=argparse.SUPPRESS)
    p.add_argument("--result-file", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every (size, setting), fit exponents, write the JSON report."""
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    settings = args.chunk_edges.split(",")
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    files: dict[tuple[str, int], Path] = {}
    for reps in sorted(int(r) for r in args.reps.split(",")):
        for setting in [args.chunk_edges] if args.interleave else settings:
            done = [r for r in rows if r["setting"] == setting]
            n_atoms = 4 * reps**3
            predicted = predicted_peak_gb(done, n_atoms)
            if predicted > min(args.max_peak_gb, mem_available_gb()):
                rows.append({"setting": setting, "reps": reps, "skipped": f"{predicted:.1f} GB"})
                continue
            files[(setting, reps)] = args.out / f"mace_chunking_{stamp}_{reps}_{len(rows)}.pt"
            row = run_point(args, setting, reps, files[(setting, reps)])
            rows += _split_interleaved(row) if args.interleave else [row]
            print(json.dumps(row), flush=True)
    compare(rows, files, settings)
    for path in files.values():
        path.unlink(missing_ok=True)
    fits = {
        s: {
            key: fit_exponent([r for r in rows if r["setting"] == s], key)
            for key in ("median_ms", "min_ms", "call_rss_increase_mb", "peak_rss_mb")
        }
        for s in settings
    }
    report = {
        "machine": machine_info(),
        "commit": git_commit(),
        "args": {k: str(v) for k, v in vars(args).items()},
        "rows": rows,
        "exponents": fits,
    }
    path = args.out / f"mace_chunking_{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print_table(rows)
    for setting, fit in fits.items():
        summary = {k: round(v["exponent"], 3) for k, v in fit.items() if v}
        print(f"exponents {setting}: {summary}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
