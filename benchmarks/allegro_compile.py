"""What ``equiforce.models.compile.compile_potential`` gains on CPU: eager vs compiled.

For each model (``--models``: bench presets, e.g. ``allegro-small``, ``mace-128-l1``) on one
system (``--system``, ``inference.py``'s systems), in a fresh subprocess: the eager model and
its ``compile_potential`` wrapper (Inductor) are timed alternately (median of ``--repeats``
after ``--warmup``), in inference (energy + forces) and as a training step (energy + forces
with ``create_graph``, a force loss, backward). Compile time is the wall time of the first
compiled call of each mode (trace + Inductor); the first compiled call is checked against
eager (max |dF|). A model that does not compile is reported with the error.

    .venv/bin/python benchmarks/allegro_compile.py --models allegro-small,mace-128-l1

Results: ``bench_out/allegro_compile_<timestamp>.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import machine_info  # noqa: E402
from inference import DEFAULT_DATA_DIR, REPO_ROOT, load_system, ours_batch  # noqa: E402


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Eager vs compiled, inference and training step, one model in this process."""
    import torch

    from equiforce.models.compile import compile_potential
    from equiforce.models.presets import preset_potential

    torch.set_num_threads(args.threads)
    eager = preset_potential(args.model, args.dtype, seed=3)
    compiled = compile_potential(eager)
    frames = load_system(args.system, args.data_dir, 7, args.seed)
    batch = ours_batch(frames, eager.type_names, eager.r_max)
    target = torch.zeros(batch["pos"].shape, dtype=torch.float64)

    def infer(model) -> torch.Tensor:
        return model(batch, compute_forces=True, create_graph=False)["forces"].detach()

    def train(model) -> torch.Tensor:
        out = model(batch, compute_forces=True, create_graph=True)
        loss = 1e-3 * out["energy"].sum() + ((out["forces"] - target) ** 2).mean()
        loss.backward()
        return out["forces"].detach()

    result: dict[str, Any] = {"model": args.model, "dtype": args.dtype, "system": args.system}
    result["n_atoms"] = int(batch["pos"].shape[0])
    result["n_edges"] = int(batch["edge_index"].shape[1])
    for mode, call in (("inference", infer), ("train", train)):
        start = time.perf_counter()
        try:
            got = call(compiled)
        except Exception as err:  # noqa: BLE001  (recorded: which models compile is a result)
            result[f"{mode}_error"] = f"{type(err).__name__}: {str(err)[:600]}"
            continue
        result[f"{mode}_compile_s"] = time.perf_counter() - start
        result[f"{mode}_max_abs_force_diff"] = float((got - call(eager)).abs().max())
        for _ in range(args.warmup):
            call(eager)
            call(compiled)
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.repeats):
            for name, model in (("eager", eager), ("compiled", compiled)):
                start = time.perf_counter()
                call(model)
                times[name].append((time.perf_counter() - start) * 1000.0)
        for name, values in times.items():
            result[f"{mode}_{name}_median_ms"] = statistics.median(values)
        result[f"{mode}_speedup"] = (
            result[f"{mode}_eager_median_ms"] / result[f"{mode}_compiled_median_ms"]
        )
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="allegro-small,mace-128-l1")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--system", default="acac64")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out")
    p.add_argument("--case-timeout-s", type=float, default=1200.0)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: a worker, or every model in turn (one subprocess each)."""
    args = parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args)), flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"allegro_compile_{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    report: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(("torch", "equiforce")),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": [],
    }
    for model in args.models.split(","):
        command = [sys.executable, __file__, "--worker", f"--model={model}"]
        command += [f"--{k}={getattr(args, k)}" for k in ("dtype", "system", "threads")]
        command += [f"--{k}={getattr(args, k)}" for k in ("warmup", "repeats", "seed")]
        command += [f"--data-dir={args.data_dir}"]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=args.case_timeout_s)
        lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        result = (
            json.loads(lines[-1].removeprefix("RESULT "))
            if lines
            else {"model": model, "error": (proc.stderr or proc.stdout)[-1500:]}
        )
        report["results"].append(result)
        path.write_text(json.dumps(report, indent=2))
        print(json.dumps(result, indent=1), flush=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
