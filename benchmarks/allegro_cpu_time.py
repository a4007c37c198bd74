"""CPU time per call of equiforce's Allegro and nequip-allegro, interleaved in one process.

On a shared machine the wall time of a call includes the time the process waited for a
core (at a load average of 8 on 2 cores the same call ranged 2-5x in wall time), so wall-time
ratios of the worker benchmarks (``allegro_inference``) swing by ±50% between runs. This
script times the *thread CPU time* of each call (``time.thread_time``, user + system, page
faults included; waiting excluded) together with its wall time: both codes in **one
process**, one thread, the same batch, nequip-allegro on our weights exported with
``equiforce.interop.to_nequip_allegro`` (the bench's ``nequip_call``), calls alternated,
medians over rounds (``equiforce.measure.timing``: ``measure_call`` with
``cpu_clock=time.thread_time``, ``interleave``, ``summarize``). Run it with the nequip
environment's python (it has equiforce installed):

    .venv-nequip/bin/python -m benchmarks.allegro_cpu_time --preset allegro-tiny \\
        --systems molecule batch64 box-1029 --repeats 41 --box-repeats 7

Output: ``<out>/allegro_cpu_time_<time>.json`` (run record, per system the CPU and wall ms of
every call, medians and ratios nequip ÷ equiforce) and a table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks.common import git_commit, run_record

__all__ = ["main", "measure"]


def measure(
    preset: str,
    system: str,
    dtype: str,
    warmup: int,
    repeats: int,
    seed: int,
    kind: str = "inference",
) -> dict[str, Any]:
    """Both codes on one system: CPU and wall ms per call, medians, ratios, parity.

    ``kind`` is a bench call kind (``equiforce.workflows.bench.kinds``): ``inference`` or
    ``train-step`` (force loss, double backward, Adam step; each code its own optimiser).
    """
    import torch

    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
    from equiforce.measure.timing import interleave, measure_call, summarize
    from equiforce.models.presets import preset_potential
    from equiforce.workflows.bench.kinds import potential_call
    from equiforce.workflows.bench.peers import nequip_call
    from equiforce.workflows.bench.systems import make_system

    potential = preset_potential(preset, dtype, seed).eval()
    graphs = [
        configuration_to_graph(
            atoms_to_configuration(a, f"{system} {k}"), potential.type_names, potential.r_max
        )
        for k, a in enumerate(make_system(system, seed))
    ]
    batch = collate(graphs)
    calls = {
        "equiforce": potential_call(potential, batch, kind),
        "nequip-allegro": nequip_call(potential, batch, kind),
    }
    (e1, f1), (e2, f2) = ([t.detach() for t in call()] for call in calls.values())
    # thread CPU time: the figure the docs quote (module docstring), one torch thread
    timers = {n: partial(measure_call, c, cpu_clock=time.thread_time) for n, c in calls.items()}
    times = interleave(timers, warmup, repeats)
    cpu = {name: [t.cpu_ms for t in ts] for name, ts in times.items()}
    wall = {name: [t.wall_ms for t in ts] for name, ts in times.items()}
    stats = {name: summarize(ts) for name, ts in times.items()}
    medians = {
        name: {"cpu_ms": s.median_cpu_ms, "wall_ms": s.median_ms} for name, s in stats.items()
    }
    per_round = [n / e for e, n in zip(cpu["equiforce"], cpu["nequip-allegro"], strict=True)]
    return {
        "system": system,
        "kind": kind,
        "n_atoms": int(batch["pos"].shape[0]),
        "n_edges": int(batch["edge_index"].shape[1]),
        "medians": medians,
        "cpu_ratio": medians["nequip-allegro"]["cpu_ms"] / medians["equiforce"]["cpu_ms"],
        "median_round_cpu_ratio": statistics.median(per_round),
        "wall_ratio": medians["nequip-allegro"]["wall_ms"] / medians["equiforce"]["wall_ms"],
        "parity": {
            "energy_per_atom": float((e1 - e2).abs().max()) / int(batch["pos"].shape[0]),
            "forces": float((f1 - f2).abs().max()),
        },
        "cpu_ms": cpu,
        "wall_ms": wall,
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    """Time each system (module docstring); print a table and write the JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="allegro-tiny")
    p.add_argument("--systems", nargs="+", default=["molecule", "batch64", "box-1029"])
    p.add_argument("--dtype", default="float32")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--repeats", type=int, default=41, help="rounds, molecules and batches")
    p.add_argument("--box-repeats", type=int, default=7, help="rounds, boxes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kind", default="inference", choices=["inference", "train-step"])
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    document: dict[str, Any] = {**run_record("benchmarks.allegro_cpu_time", argv), "results": []}
    document["commit"] = git_commit()
    document["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    document["load_average_start"] = os.getloadavg()
    lines = [
        f"{'system':<10} {'edges':>8} {'ours cpu':>9} {'nequip cpu':>10} {'ratio':>6} "
        f"{'per-round':>9} {'wall ratio':>10}"
    ]
    for system in args.systems:
        box = not system.startswith(("molecule", "batch"))
        repeats = args.box_repeats if box else args.repeats
        r = measure(
            args.preset, system, args.dtype, args.warmup, repeats, args.seed, args.kind
        )
        document["results"].append(r)
        m = r["medians"]
        lines.append(
            f"{system:<10} {r['n_edges']:>8,} {m['equiforce']['cpu_ms']:>9.2f} "
            f"{m['nequip-allegro']['cpu_ms']:>10.2f} {r['cpu_ratio']:>6.2f} "
            f"{r['median_round_cpu_ratio']:>9.2f} {r['wall_ratio']:>10.2f}"
        )
    document["load_average_end"] = os.getloadavg()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"allegro_cpu_time_{stamp}.json"
    from equiforce.files import atomic_write_text

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(document, indent=1), path)
    print("\n".join(lines))
    print(f"ratios: nequip-allegro ÷ equiforce (above 1: ours faster); wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
