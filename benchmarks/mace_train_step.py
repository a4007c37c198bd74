"""One MACE training step (energy + force loss, double backward): equiforce vs mace-torch.

``inference``'s runner with the call kind ``train``
(``equiforce.workflows.bench.kinds``): energy and forces with ``create_graph``, the loss
``1e-3 * sum(E) + mean(F^2)`` and its backward, no optimiser, in both codes on identical
weights (mace-torch with ``training=True``), calls alternated. Default: ``mace-small`` (32
channels) and ``mace-128-l1`` on a batch of 5 AcAc molecules, float32, 1 thread, median of 10
after 3 warm-up rounds.

    python -m benchmarks.mace_train_step --presets mace-small mace-128-l1 --threads 1

``--phases`` instead profiles our step in this process, split into its three phases (forward,
first backward = forces, second backward = parameter gradients): median ms of each over the
timed rounds, then the self CPU time of the top ops of each phase in one profiled step
(``torch.profiler``), for every preset and dtype on the first system:

    python -m benchmarks.mace_train_step --phases --presets mace-128-l1 --dtypes float32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch

from benchmarks.inference import run
from equiforce.data import keys
from equiforce.data.batch import collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.files import atomic_write_text
from equiforce.measure import machine_info
from equiforce.models.potential import EDGE_PAIRS, edge_vectors, graph_energy
from equiforce.models.presets import preset_potential
from equiforce.nn.edge_pairs import edge_pairs
from equiforce.train.step import parameter_backward
from equiforce.workflows.bench.kinds import step_loss
from equiforce.workflows.bench.systems import make_system

PHASES = ("forward", "forces backward", "parameter backward")
_TOP_OPS = 12


def _phased_step(potential, batch: dict[str, torch.Tensor]) -> list[float]:
    """One training step as ``kinds.potential_call``'s, each phase in a profiler range.

    Returns the wall ms of the three phases.
    """
    inputs = {name: batch[name] for name in keys.MODEL_INPUT_KEYS if name in batch}
    pos = inputs[keys.POSITIONS].to(torch.float64).detach().requires_grad_(True)
    inputs[keys.POSITIONS], inputs[keys.CELL] = pos, inputs[keys.CELL].to(torch.float64)
    n_graphs = int(inputs[keys.PTR].shape[0]) - 1
    potential.zero_grad(set_to_none=True)
    marks = [time.perf_counter()]
    with torch.profiler.record_function(PHASES[0]):
        inputs[keys.EDGE_VEC] = edge_vectors(pos, inputs[keys.CELL], inputs)
        inputs[EDGE_PAIRS] = edge_pairs(inputs[keys.EDGE_INDEX], inputs[keys.EDGE_SHIFT])
        node_energy = potential.energy_model(inputs)[keys.NODE_ENERGY]
        energy = graph_energy(node_energy, inputs[keys.BATCH], n_graphs)
    marks.append(time.perf_counter())
    with torch.profiler.record_function(PHASES[1]):
        (grad,) = torch.autograd.grad(energy.sum(), [pos], create_graph=True)
    marks.append(time.perf_counter())
    with torch.profiler.record_function(PHASES[2]):
        parameter_backward(step_loss(energy, -grad), list(potential.parameters()))
    marks.append(time.perf_counter())
    return [1000.0 * (b - a) for a, b in zip(marks[:-1], marks[1:], strict=True)]


def _ops_by_phase(prof) -> dict[str, list[tuple[str, float]]]:
    """Self CPU ms of every op inside each phase's range, top ``_TOP_OPS`` first."""
    events = prof.events()
    ranges = {e.name: (e.time_range.start, e.time_range.end) for e in events if e.name in PHASES}
    table: dict[str, dict[str, float]] = {name: defaultdict(float) for name in ranges}
    for event in events:
        for name, (start, end) in ranges.items():
            if event.name not in PHASES and start <= event.time_range.start <= end:
                table[name][event.name] += event.self_cpu_time_total / 1000.0
    return {
        name: sorted(ops.items(), key=lambda item: -item[1])[:_TOP_OPS]
        for name, ops in table.items()
    }


def profile_phases(argv: list[str]) -> int:
    """``--phases``: the phase split of our training step (see the module docstring)."""
    p = argparse.ArgumentParser(description="phase profile of equiforce's MACE training step")
    p.add_argument("--phases", action="store_true")
    p.add_argument("--presets", nargs="+", default=["mace-128-l1"])
    p.add_argument("--dtypes", nargs="+", default=["float32"])
    p.add_argument("--systems", nargs="+", default=["batch5"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    frames = make_system(args.systems[0])
    record = {"command": "python -m benchmarks.mace_train_step " + " ".join(argv)}
    record.update(machine=machine_info(), system=args.systems[0], cases=[])
    for preset in args.presets:
        for dtype in args.dtypes:
            potential = preset_potential(preset, dtype).train()
            spec = potential.spec
            graphs = [
                configuration_to_graph(
                    atoms_to_configuration(a, f"structure {k}"), list(spec.type_names), spec.r_max
                )
                for k, a in enumerate(frames)
            ]
            batch = collate(graphs)
            for _ in range(args.warmup):
                _phased_step(potential, batch)
            times = [_phased_step(potential, batch) for _ in range(args.repeats)]
            medians = [statistics.median(t[i] for t in times) for i in range(len(PHASES))]
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                _phased_step(potential, batch)
            ops = _ops_by_phase(prof)
            record["cases"].append(
                {
                    "preset": preset,
                    "dtype": dtype,
                    "phase_ms": dict(zip(PHASES, medians, strict=True)),
                    "ops": ops,
                }
            )
            print(
                f"{preset} {dtype} {args.systems[0]}: "
                + ", ".join(f"{name} {ms:.1f} ms" for name, ms in zip(PHASES, medians, strict=True))
            )
            for name in PHASES:
                total = sum(ms for _, ms in ops.get(name, []))
                print(
                    f"  {name} (top ops, self ms): "
                    + ", ".join(
                        f"{op} {ms:.1f} ({100 * ms / max(total, 1e-9):.0f}%)"
                        for op, ms in ops.get(name, [])[:6]
                    )
                )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"mace_train_phases_{time.strftime('%Y%m%d-%H%M%S')}.json"
    atomic_write_text(json.dumps(record, indent=2), path)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """MACE training steps against mace-torch, or ``--phases`` (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else argv
    if "--phases" in argv:
        return profile_phases(argv)
    return run(
        argv,
        "benchmarks.mace_train_step",
        __doc__.split("\n\n")[0],
        presets=("mace-small", "mace-128-l1"),
        dtypes=("float32",),
        systems=("batch5",),
        kinds=("train",),
        threads=1,
        warmup=3,
        repeats=10,
    )


if __name__ == "__main__":
    sys.exit(main())
