"""One MACE training step (energy + force loss, double backward), equiforce vs mace-torch.

Builds a random mace-torch ScaleShiftMACE, converts it with ``from_mace_torch`` (identical
weights), and times one optimiser-free training step on the same batch of AcAc molecules for
both, alternating the two codes call by call so load spikes hit both alike. Reports the
median ms after warm-up and the ratio mace-torch / equiforce (> 1: equiforce faster).

Run in the venv that has both packages::

    .venv-mace/bin/python benchmarks/mace_train_step.py --channels 32 128 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import mace  # noqa: F401  (mace must be imported before e3nn)
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"


def _mace_model(channels: int):
    from e3nn import o3
    from mace import modules

    blocks = modules.interaction_classes["RealAgnosticResidualInteractionBlock"]
    return modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=blocks,
        interaction_cls_first=blocks,
        num_interactions=2,
        num_elements=3,
        hidden_irreps=o3.Irreps(f"{channels}x0e+{channels}x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.array([-13.6, -1029.8, -2041.9]),
        avg_num_neighbors=12.0,
        atomic_numbers=[1, 6, 8],
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )


def _batches(frames, ours):
    from mace import data as mace_data
    from mace.tools import torch_geometric, utils

    from equiforce.data.batch import collate
    from equiforce.data.graph import atoms_to_configuration, configuration_to_graph

    table = utils.AtomicNumberTable([1, 6, 8])
    mace_graphs = [
        mace_data.AtomicData.from_config(mace_data.config_from_atoms(a), z_table=table, cutoff=5.0)
        for a in frames
    ]
    loader = torch_geometric.dataloader.DataLoader(mace_graphs, batch_size=len(frames))
    ours_batch = collate(
        [configuration_to_graph(atoms_to_configuration(a), ours.type_names, 5.0) for a in frames]
    )
    return next(iter(loader)).to_dict(), ours_batch


def time_step(channels: int, frames, repeats: int, warmup: int) -> dict:
    """Median ms of one training step for both codes on identical weights (float32)."""
    from equiforce.interop import from_mace_torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)  # mace-torch builds models and batches in it
    try:
        model = _mace_model(channels)
        ours = from_mace_torch(model)
        mace_batch, ours_batch = _batches(frames, ours)
    finally:
        torch.set_default_dtype(previous)
    reference = torch.tensor(np.concatenate([a.get_forces() for a in frames]))

    def step_mace() -> None:
        out = model(mace_batch, training=True, compute_force=True)
        loss = 1e-3 * out["energy"].sum() + ((out["forces"] - reference.float()) ** 2).mean()
        loss.backward()

    def step_ours() -> None:
        out = ours(ours_batch, compute_forces=True, create_graph=True)
        loss = 1e-3 * out["energy"].sum() + ((out["forces"] - reference) ** 2).mean()
        loss.backward()

    times: dict[str, list[float]] = {"mace": [], "ours": []}
    for index in range(warmup + repeats):
        for name, step in (("mace", step_mace), ("ours", step_ours)):
            start = time.perf_counter()
            step()
            if index >= warmup:
                times[name].append(1000 * (time.perf_counter() - start))
    median = {name: statistics.median(values) for name, values in times.items()}
    return {
        "channels": channels,
        "median_ms": median,
        "mace_over_ours": median["mace"] / median["ours"],
    }


def main() -> int:
    """Parse arguments, time each channel count, print and write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=5, help="AcAc molecules per batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench_out" / "mace_train_step.json")
    args = parser.parse_args()
    train_file = args.data_dir / "acac" / "train_300K.xyz"
    if not train_file.exists():
        print(f"AcAc data not found at {train_file}; pass --data-dir", file=sys.stderr)
        return 1
    from ase.io import read

    torch.set_num_threads(args.threads)
    frames = read(train_file, f":{args.batch}")
    results = [time_step(c, frames, args.repeats, args.warmup) for c in args.channels]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit,
        "torch": torch.__version__,
        "threads": args.threads,
        "batch_molecules": args.batch,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for row in results:
        med = row["median_ms"]
        print(
            f"C={row['channels']:4d}  mace-torch {med['mace']:8.1f} ms  equiforce "
            f"{med['ours']:8.1f} ms  mace/ours {row['mace_over_ours']:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
