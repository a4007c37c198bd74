"""What the arithmetic alone of one energy + forces call would take on this core.

For the model an exported package runs (the preset on ``--backend`` with the species and
seed-``--seed`` weights of ``benchmarks.export_cpu_time``, passed through
``equiforce.kernels.export_ops.exportable`` as ``equiforce export`` does), one energy + forces
call on one molecule (``acac`` or ``3bpa``, as ``export_cpu_time`` times them; MACE: with the
edges' bonds, radial MLPs once per bond, as a package runs them) is run eagerly under a
dispatch mode that records

- every aten op torch's FLOP counter knows (``torch.utils.flop_counter``: mm, addmm, bmm,
  baddbmm, ...: the matrix products) with its operand shapes and FLOPs, and
- every call of equiforce's C++ kernel library (the edge convolution and the symmetric
  contraction; Allegro's tensor product: ``equiforce.kernels.extension``) with a copy of its
  actual inputs and output.

Each recorded product is then replayed alone on fresh contiguous operands of the same shapes
and dtype, and each kernel call alone on its recorded inputs, timed in CPU time of the calling
thread (``time.thread_time``: on shared cores wall time mostly measures the wait for a core;
median of ``--repeats`` after a warm-up). The sum of those medians is the time of the
arithmetic with no other op (no elementwise op, gather, copy or allocation between them), no
framework and no memory traffic beyond each call's own: what a package call (the same products
and kernel calls, ``benchmarks.export_cpu_time``) could at best take on this core. In the
same run eager equiforce's call of the same weights (the ``--backend`` model as a model file
runs it) is timed the same way: eager / arithmetic bounds what any package of this
arithmetic can gain over eager. A large square GEMM gives the core's rate for reference. One
thread.

    python -m benchmarks.export_arithmetic --molecules acac 3bpa --dtypes float32 float64

Output: ``<out>/export_arithmetic_<time>.json`` (run record, per case the total FLOPs, the
FLOPs and replayed time per product kind, the calls and replayed time per kernel, the sums,
the eager call, the reference GEMM rate) and one line per case on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from collections import defaultdict
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from benchmarks.common import DEFAULT_DATA_DIR, preset_with_species, run_record
from benchmarks.export_cpu_time import MOLECULE_SPECIES, molecule
from equiforce.export.package import atoms_batch
from equiforce.kernels import use_backend
from equiforce.kernels.export_ops import exportable
from equiforce.kernels.extension import kernel_ops
from equiforce.measure.timing import time_call
from equiforce.models.presets import PRESETS
from equiforce.nn.edge_pairs import pair_inputs
from equiforce.workflows.bench.report import write_json

__all__ = ["KernelCall", "Product", "main", "record_call", "replay_ms"]


class Product(NamedTuple):
    """One matrix product of a call: the aten op, its tensor arguments' shapes, its FLOPs."""

    func: Any
    shapes: list[tuple[int, ...]]
    flops: int


class KernelCall(NamedTuple):
    """One call of the kernel library: the operator, a copy of its arguments and of what it
    returned."""

    func: Any
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any


def _copied(value: Any) -> Any:
    """``value`` with every tensor in it (also in lists and tuples) a detached copy."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(_copied(item) for item in value)
    return value


class _Recorder(TorchDispatchMode):
    """Records the products (ops with a FLOP formula) and the kernel library's calls."""

    def __init__(self, kernel_namespace: str | None) -> None:
        super().__init__()
        self.kernel_namespace = kernel_namespace
        self.products: list[Product] = []
        self.kernel_calls: list[KernelCall] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kernel = func.namespace == self.kernel_namespace
        if kernel:  # the inputs copied before the call (it may write into one)
            inputs = (_copied(args), {k: _copied(v) for k, v in kwargs.items()})
        out = func(*args, **kwargs)
        if kernel:
            self.kernel_calls.append(KernelCall(func, *inputs, _copied(out)))
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)
            shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
            self.products.append(Product(func, shapes, int(flops)))
        return out


def record_call(model, batch) -> tuple[list[Product], list[KernelCall]]:
    """The products and kernel-library calls of one energy + forces call of ``model``."""
    library = kernel_ops()
    recorder = _Recorder(library.namespace if library is not None else None)
    with recorder:
        model(batch, compute_forces=True, create_graph=False)
    return recorder.products, recorder.kernel_calls


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


def kernel_replay_ms(call: KernelCall, repeats: int) -> float:
    """Median CPU ms of the kernel call on its recorded arguments."""
    call.func(*call.args, **call.kwargs)
    return statistics.median(
        time_call(lambda: call.func(*call.args, **call.kwargs), clock=time.thread_time)
        for _ in range(repeats)
    )


def eager_call_ms(model, batch, repeats: int) -> float:
    """Median CPU ms of eager equiforce's energy + forces call (as a model file runs)."""
    call = partial(model, batch, compute_forces=True, create_graph=False)
    call()
    return statistics.median(time_call(call, clock=time.thread_time) for _ in range(repeats))


def _case(name: str, dtype: str, args: argparse.Namespace) -> dict[str, Any]:
    def model_on_backend():
        model = preset_with_species(args.preset, MOLECULE_SPECIES[name], dtype, args.seed)
        return use_backend(model, args.backend)

    model = exportable(model_on_backend())
    atoms = molecule(name, args.data_dir)
    batch = atoms_batch(atoms, list(model.type_names), model.r_max, torch.device("cpu"))
    eager_ms = eager_call_ms(model_on_backend(), dict(batch), args.repeats)
    if getattr(model.energy_model, "uses_edge_pairs", False):  # as a package runs MACE
        batch.update(pair_inputs(batch))
    products, kernel_calls = record_call(model, batch)
    torch_dtype = getattr(torch, dtype)
    per_op: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "gflop": 0.0, "ms": 0.0})
    for func, shapes, flops in products:
        entry = per_op[str(func._overloadpacket)]
        entry["calls"] += 1
        entry["gflop"] += flops / 1e9
        entry["ms"] += replay_ms(func, shapes, torch_dtype, args.repeats)
    per_kernel: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "ms": 0.0})
    for call in kernel_calls:
        entry = per_kernel[call.func._opname]
        entry["calls"] += 1
        entry["ms"] += kernel_replay_ms(call, args.repeats)
    products_ms = sum(entry["ms"] for entry in per_op.values())
    kernels_ms = sum(entry["ms"] for entry in per_kernel.values())
    return {
        "preset": args.preset,
        "dtype": dtype,
        "backend": args.backend,
        "molecule": name,
        "n_atoms": len(atoms),
        "n_edges": int(batch["edge_index"].shape[1]),
        "gflop": sum(product.flops for product in products) / 1e9,
        "products_ms": products_ms,
        "kernels_ms": kernels_ms,
        "arithmetic_ms": products_ms + kernels_ms,
        "eager_ms": eager_ms,
        "eager_over_arithmetic": eager_ms / (products_ms + kernels_ms),
        "per_op": dict(per_op),
        "per_kernel": dict(per_kernel),
        "gemm_512_gflops": _gemm_rate(torch_dtype),
    }


def main(argv: list[str] | None = None) -> int:
    """Record, replay and report every (preset, dtype) case (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="mace-128-l1", choices=sorted(PRESETS))
    p.add_argument("--molecules", nargs="+", default=["acac", "3bpa"], choices=MOLECULE_SPECIES)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--backend", default="fast", choices=("reference", "fast"))
    p.add_argument("--seed", type=int, default=0, help="of the random weights")
    p.add_argument("--repeats", type=int, default=20, help="timed replays per product and call")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="for 3bpa")
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"export_arithmetic_{stamp}.json"
    document: dict[str, Any] = {**run_record("benchmarks.export_arithmetic", argv), "cases": []}
    for name in args.molecules:
        for dtype in args.dtypes:
            case = _case(name, dtype, args)
            document["cases"].append(case)
            write_json(document, path)
            print(
                f"{args.preset} {name} {dtype} ({args.backend}): {case['gflop']:.3f} GFLOP, "
                f"products alone {case['products_ms']:.2f} ms + kernel calls alone "
                f"{case['kernels_ms']:.2f} ms = {case['arithmetic_ms']:.2f} ms; eager call "
                f"{case['eager_ms']:.2f} ms ({case['eager_over_arithmetic']:.2f}x); "
                f"512^3 GEMM {case['gemm_512_gflops']:.1f} GFLOP/s"
            )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
