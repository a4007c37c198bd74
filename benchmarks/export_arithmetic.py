"""What the arithmetic alone of one energy + forces call would take on this core.

For the model an exported package runs (the preset on ``--backend``, passed through
``equiforce.kernels.export_ops.exportable`` as ``equiforce export`` does), one energy + forces
call on one AcAc molecule (MACE: with the edges' bonds, radial MLPs once per bond, as a
package runs them) is run eagerly under a dispatch mode that records every aten op
torch's FLOP counter knows (``torch.utils.flop_counter``: mm, addmm, bmm, baddbmm, ...: the
matrix products) with its operand shapes and FLOPs. Each recorded product is then replayed
alone on fresh contiguous operands of the same shapes and dtype and timed in CPU time of the
calling thread (``time.thread_time``: on shared cores wall time mostly measures the wait for a
core; median of ``--repeats`` after a warm-up); the sum of those medians is the time of the
arithmetic with no other op, no framework and no memory traffic beyond each product's own. A
large square GEMM gives the core's rate for reference. One thread. Where MACE's C++ kernel
library applies (CPU, float32/float64) the edge convolution and the symmetric contraction run
as its operators, which are not aten products and are not counted here (their share of a
package's time is in docs/export.md's profile).

    python -m benchmarks.export_arithmetic --presets mace-128-l1 --dtypes float32 float64

Output: ``<out>/export_arithmetic_<time>.json`` (run record, per case the total FLOPs, the
FLOPs and replayed time per op kind, the products' summed time, the reference GEMM rate) and
one line per case on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from benchmarks.common import run_record
from equiforce.export.package import atoms_batch
from equiforce.kernels import use_backend
from equiforce.kernels.export_ops import exportable
from equiforce.measure.timing import time_call
from equiforce.models.presets import PRESETS, preset_potential
from equiforce.nn.edge_pairs import pair_inputs
from equiforce.workflows.bench.report import write_json
from equiforce.workflows.bench.systems import acetylacetone

__all__ = ["main", "record_products", "replay_ms"]


class _Recorder(TorchDispatchMode):
    """Records (op, input shapes, FLOPs) of every op with a FLOP formula."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[Any, list[tuple[int, ...]], int]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.calls.append((func, shapes, int(flops)))
        return out


def record_products(model, batch) -> list[tuple[Any, list[tuple[int, ...]], int]]:
    """(op, tensor-argument shapes, FLOPs) of the products of one energy + forces call."""
    recorder = _Recorder()
    with recorder:
        model(batch, compute_forces=True, create_graph=False)
    return recorder.calls


def replay_ms(func, shapes, dtype: torch.dtype, repeats: int) -> float:
    """Median CPU ms of ``func`` on fresh contiguous operands of ``shapes``."""
    operands = [torch.randn(shape, dtype=dtype) for shape in shapes]
    func(*operands)
    return statistics.median(
        time_call(lambda: func(*operands), clock=time.thread_time) for _ in range(repeats)
    )


def _gemm_rate(dtype: torch.dtype, size: int = 512) -> float:
    """GFLOP/s (CPU time) of a (size x size) @ (size x size) product, best of 5."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b
    best = min(time_call(lambda: a @ b, clock=time.thread_time) for _ in range(5))
    return 2 * size**3 / (best * 1e-3) / 1e9


def _case(preset: str, dtype: str, backend: str, repeats: int) -> dict[str, Any]:
    model = exportable(use_backend(preset_potential(preset, dtype).eval(), backend))
    atoms = acetylacetone(0)
    batch = atoms_batch(atoms, list(model.type_names), model.r_max, torch.device("cpu"))
    if model.energy_model.uses_edge_pairs:  # as a package without per-atom outputs runs
        batch.update(pair_inputs(batch))
    calls = record_products(model, batch)
    torch_dtype = getattr(torch, dtype)
    per_op: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "gflop": 0.0, "ms": 0.0})
    for func, shapes, flops in calls:
        entry = per_op[str(func._overloadpacket)]
        entry["calls"] += 1
        entry["gflop"] += flops / 1e9
        entry["ms"] += replay_ms(func, shapes, torch_dtype, repeats)
    return {
        "preset": preset,
        "dtype": dtype,
        "backend": backend,
        "system": "molecule",
        "n_atoms": len(atoms),
        "n_edges": int(batch["edge_index"].shape[1]),
        "gflop": sum(flops for *_, flops in calls) / 1e9,
        "products_ms": sum(entry["ms"] for entry in per_op.values()),
        "per_op": dict(per_op),
        "gemm_512_gflops": _gemm_rate(torch_dtype),
    }


def main(argv: list[str] | None = None) -> int:
    """Record, replay and report every (preset, dtype) case (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["mace-128-l1"], choices=sorted(PRESETS))
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--backend", default="fast", choices=("reference", "fast"))
    p.add_argument("--repeats", type=int, default=20, help="timed replays per product")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"export_arithmetic_{stamp}.json"
    document: dict[str, Any] = {**run_record("benchmarks.export_arithmetic", argv), "cases": []}
    for preset in args.presets:
        for dtype in args.dtypes:
            case = _case(preset, dtype, args.backend, args.repeats)
            document["cases"].append(case)
            write_json(document, path)
            print(
                f"{preset} {dtype} ({args.backend}): {case['gflop']:.3f} GFLOP, products alone "
                f"{case['products_ms']:.2f} ms; 512^3 GEMM {case['gemm_512_gflops']:.1f} GFLOP/s"
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
