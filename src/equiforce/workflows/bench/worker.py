"""Worker process timing equiforce itself: ``python -m equiforce.workflows.bench.worker ...``.

Loads an equiforce model file (or an exported ``.pt2`` package, timed as exported through
``equiforce.export.load_exported``; the model options below are then refused), optionally
switches its kernel backend, sets its receiver chunks or whole-graph pass
(``options.Variant``) and compiles or exports it (then the loaded ``.pt2`` package is timed),
builds the batch of the given structures (the neighbour list is timed here, once, outside the
timed calls) and serves the protocol of ``equiforce.measure.protocol`` with calls of one
kind (``kinds``: inference or a training step), plus the ``profile`` command.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch

from equiforce.allocator import retain_freed_memory
from equiforce.data.batch import batch_to, collate
from equiforce.data.graph import atoms_to_configuration, configuration_to_graph
from equiforce.measure.protocol import Session, serve
from equiforce.precision import from_name, precision_scope
from equiforce.process_exit import exit_process
from equiforce.workflows.bench.systems import load_frames

__all__ = ["add_common_arguments", "prepare_batch"]


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by every worker (ours and the peers')."""
    parser.add_argument("--model", required=True, help="equiforce model file or .pt2 package")
    parser.add_argument("--frames", required=True, help=".npz of structures (systems.save_frames)")
    parser.add_argument("--outputs", required=True, help=".npz receiving the first call's E, F")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--kind", default="inference", help="call kind: inference, train or train-step"
    )


def prepare_batch(
    frames_path: str, type_names: list[str], r_max: float, device: torch.device
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Batch of the structures in ``frames_path`` and facts about it.

    Returns:
        The batch dict on ``device`` and ``{"n_atoms", "n_edges", "n_graphs",
        "neighbour_list_ms"}`` (neighbour list + graph building + collation, wall ms).
    """
    frames = load_frames(frames_path)
    start = time.perf_counter()
    graphs = [
        configuration_to_graph(atoms_to_configuration(a, f"structure {k}"), type_names, r_max)
        for k, a in enumerate(frames)
    ]
    batch = batch_to(collate(graphs), device)
    elapsed_ms = (time.perf_counter() - start) * 1000.0
    info = {
        "n_atoms": sum(len(a) for a in frames),
        "n_edges": int(batch["edge_index"].shape[1]),
        "n_graphs": len(frames),
        "neighbour_list_ms": elapsed_ms,
    }
    return batch, info


def _load_package(args: argparse.Namespace, device: torch.device) -> Any:
    """The loaded package ``args.model``; refuses the options that apply to model files."""
    from equiforce.export import load_exported
    from equiforce.workflows.bench.options import refuse_package_options

    refuse_package_options(
        args.model,
        {
            "--backend": args.backend is not None,
            "--compile": args.compile,
            "--export-backend": args.export_backend is not None,
            "--chunk-edges": args.chunk_edges is not None,
            "--whole-graph": args.whole_graph,
            f"--kind {args.kind}": args.kind != "inference",
        },
    )
    return load_exported(args.model, device)


def _load_potential(args: argparse.Namespace, device: torch.device) -> tuple[Any, list[str]]:
    """The model file ``args.model`` with the variant's options applied (module docstring),
    and its executors' kernel backends (before any export)."""
    from equiforce.models import load_model
    from equiforce.workflows.bench.options import (
        apply_backend,
        apply_chunk_edges,
        apply_compile,
        apply_export,
        apply_precision,
        apply_whole_graph,
        executor_backends,
    )

    potential = load_model(args.model, map_location=device).eval()
    potential = apply_precision(potential, args.precision)
    potential = apply_backend(potential, args.backend)
    potential = apply_chunk_edges(potential, args.chunk_edges)
    potential = apply_whole_graph(potential, args.whole_graph)
    potential = apply_compile(potential, args.compile, args.compile_backend)
    backends = executor_backends(potential)
    if args.export_backend is not None and args.kind != "inference":
        raise ValueError(f"an exported package cannot run {args.kind!r} calls (inference only)")
    with tempfile.TemporaryDirectory(prefix="equiforce-bench-") as folder:
        return apply_export(potential, args.export_backend, folder), backends


def _prepare(args: argparse.Namespace) -> Session:
    from equiforce.workflows.bench.kinds import potential_call
    from equiforce.workflows.bench.options import is_package
    from equiforce.workflows.bench.profile import profile_call

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    package = is_package(args.model)
    if package:
        potential, backends = _load_package(args, device), []
    else:
        potential, backends = _load_potential(args, device)
    batch, info = prepare_batch(args.frames, potential.type_names, potential.r_max, device)
    call = potential_call(potential, batch, args.kind)

    info.update(
        {
            "implementation": "equiforce",
            "torch_version": torch.__version__,
            "threads": torch.get_num_threads(),
            "dtype": str(potential.dtype).replace("torch.", ""),
            "precision": args.precision,
            "backend": args.backend,
            "executor_backends": backends,
            "compile": args.compile,
            "export_backend": args.export_backend,
            "package": package,
            "chunk_edges": args.chunk_edges,
            "whole_graph": args.whole_graph,
            "kind": args.kind,
        }
    )
    profile = {"profile": lambda: {"profile": profile_call(call)}}
    return Session(call=call, device=device, info=info, commands=profile)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the worker process."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--precision", default="float32", help="float32, float64 or a mode")
    parser.add_argument("--backend", default=None, help="kernel backend (default: the model's)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    parser.add_argument(
        "--export-backend", default=None, help="time the exported .pt2 traced with this backend"
    )
    parser.add_argument(
        "--chunk-edges", type=int, default=None, help="MACE receiver chunks (0: one pass)"
    )
    parser.add_argument(
        "--whole-graph", action="store_true", help="no blocks of centre atoms (local models)"
    )
    args = parser.parse_args(argv)
    retain_freed_memory()  # as the equiforce command line runs
    with precision_scope(from_name(args.precision)):  # the run's float32 matmul precision
        return serve(lambda: _prepare(args), args.outputs)


if __name__ == "__main__":
    exit_process(main())
