"""bf16-mixed against float32 on this CPU: interleaved energy+forces timings and op profiles.

For each preset and system, the same random weights run as ``float32`` and as ``bf16-mixed``
(``equiforce.precision.apply_policy``) in one process and one thread (``--threads``); the calls
alternate (``equiforce.measure.timing.interleave``: ``--warmup`` rounds, then
``--repeats`` timed rounds) and the medians are reported with their ratio, the force RMS
deviation of bf16-mixed from float32 (meV/Å), one ``torch.profiler`` profile per mode by op
category (``equiforce.workflows.bench.profile``), the CPU's low-precision flags
(``equiforce.measure.machine.cpu_flags``) and ``os.getloadavg()`` before and after each case.

    OMP_NUM_THREADS=1 python -m benchmarks.bf16_cpu --cases mace-128-l1:box-1000 \
        mace-128-l1:batch64 allegro-l1:box-1000 --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import run_record
from equiforce.measure.machine import cpu_flags
from equiforce.measure.timing import interleave, summarize, time_call
from equiforce.models.presets import preset_potential
from equiforce.precision import apply_policy, from_name
from equiforce.workflows.bench.profile import profile_call
from equiforce.workflows.bench.systems import make_system, save_frames
from equiforce.workflows.bench.worker import prepare_batch

MODES = ("float32", "bf16-mixed")


def _policy(mode: str):
    """``name`` or ``name:op+op`` (a precision mode with other autocast op classes)."""
    name, _, ops = mode.partition(":")
    return from_name(name, tuple(ops.split("+")) if ops else None)


def _call(model, batch):
    def call() -> torch.Tensor:
        with torch.enable_grad():
            return model(batch, compute_forces=True)["forces"].detach()

    return call


def run_case(preset: str, system: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """Timings, deviation and profiles of ``MODES`` for one preset on one system."""
    load_before = os.getloadavg()
    base = preset_potential(preset, "float32", args.seed)
    models = {m: apply_policy(copy.deepcopy(base), _policy(m)).eval() for m in args.modes}
    frames_path = folder / f"{system}.npz"
    save_frames(make_system(system, args.seed), frames_path)
    batch, info = prepare_batch(str(frames_path), base.type_names, base.r_max, torch.device("cpu"))
    calls = {m: _call(model, batch) for m, model in models.items()}
    forces = {m: call().double().numpy() for m, call in calls.items()}
    deviation = {
        m: float(np.sqrt(np.mean((f - forces["float32"]) ** 2))) * 1e3 for m, f in forces.items()
    }
    times = interleave(
        {m: partial(time_call, c) for m, c in calls.items()}, args.warmup, args.repeats
    )
    stats = {m: summarize(t) for m, t in times.items()}
    profiles = {m: profile_call(c, top=15) for m, c in calls.items()} if args.profile else {}
    return {
        "preset": preset,
        "system": system,
        **info,
        "times_ms": times,
        "median_ms": {m: s.median_ms for m, s in stats.items()},
        "min_ms": {m: s.min_ms for m, s in stats.items()},
        "speedup_over_fp32": {
            m: stats["float32"].median_ms / s.median_ms for m, s in stats.items()
        },
        "forces_dev_rms_meV_per_A": deviation,
        "profiles": profiles,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="+", default=["mace-128-l1:box-1000"])
    parser.add_argument(
        "--modes", nargs="+", default=list(MODES), help="float32 first; name or name:op+op"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", dest="profile", action="store_false")
    parser.add_argument("--out", type=Path, default=Path("bench_out/bf16_cpu"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    document = {
        **run_record("benchmarks.bf16_cpu", argv),
        "cpu_flags": cpu_flags(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": args.threads,
        "cases": [],
    }
    path = args.out / f"bf16_cpu_{document['date'].replace(':', '')}.json"
    for case in args.cases:
        preset, system = case.split(":")
        result = run_case(preset, system, args, args.out)
        document["cases"].append(result)
        path.write_text(json.dumps(document, indent=2) + "\n")
        rows = ", ".join(
            f"{m} {ms:.0f} ms ({result['speedup_over_fp32'][m]:.2f}x, dF rms "
            f"{result['forces_dev_rms_meV_per_A'][m]:.3g} meV/Å)"
            for m, ms in result["median_ms"].items()
        )
        print(
            f"{preset} {system} ({result['n_atoms']} atoms): {rows}; load "
            f"{result['loadavg_before'][0]:.2f}->{result['loadavg_after'][0]:.2f}",
            flush=True,
        )
        for mode, profile in result["profiles"].items():
            cats = ", ".join(f"{k} {v:.0f}" for k, v in profile["by_category_ms"].items() if v > 1)
            print(f"  {mode}: {cats}", flush=True)
    print(f"wrote {path}; cpu flags {document['cpu_flags']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
