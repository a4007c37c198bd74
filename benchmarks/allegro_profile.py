"""Where equiforce Allegro spends its time: torch.profiler tables by op, and the Python overhead.

The Allegro counterpart of ``profile_models.py`` (same method, tables and categories).
Models (``SIZES``), random weights: ``big`` = l_max 2, 2 layers, 128 scalar / 64 tensor
features; ``small`` = 64 / 32 (both the PEERS.md models, MLP hidden 64 / 64 / 32); ``tiny`` =
l_max 1, 1 layer, 32 / 8, MLP hidden 32 / 32 / 16 (the ``allegro_scaling.py`` model). All r_max
5 Å. Systems: ``acac`` (15 atoms), ``acac64`` (960 atoms), ``water`` (``--water-reps`` cubed
molecules, default 10 -> 3,000 atoms). Modes: ``inference`` (energy + forces) and ``train``
(energy + forces with ``create_graph``, a force loss and its backward).

For every case (a fresh subprocess): ``--warmup`` untimed calls, the median wall time of
``--repeats`` calls, then one call under ``torch.profiler``; "Python overhead" is
``1 - (summed self time of all ops) / wall`` (a lower bound).

    .venv/bin/python benchmarks/allegro_profile.py --backend fast
    .venv/bin/python benchmarks/allegro_profile.py --backend reference --sizes small

With ``--peer`` (run it in ``.venv-nequip``; inference only) every case profiles a random
nequip-allegro model of the size (``allegro_inference.nequip_model``) and equiforce on the
same weights (``from_nequip_allegro``), one after the other in one process::

    .venv-nequip/bin/python benchmarks/allegro_profile.py --peer --sizes tiny --dtypes float32 \
        --modes inference --threads 1 --water-reps 7

Results: ``bench_out/allegro_profile_<backend>_<timestamp>.json`` and markdown on stdout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import profile_models  # noqa: E402
from bench_common import machine_info  # noqa: E402
from profile_models import DEFAULT_DATA_DIR, REPO_ROOT, markdown  # noqa: E402

SIZES: dict[str, dict[str, Any]] = {
    "big": {"l_max": 2, "num_layers": 2, "num_scalar_features": 128, "num_tensor_features": 64},
    "small": {"l_max": 2, "num_layers": 2, "num_scalar_features": 64, "num_tensor_features": 32},
    "tiny": {
        "l_max": 1,
        "num_layers": 1,
        "num_scalar_features": 32,
        "num_tensor_features": 8,
        "two_body_mlp_hidden": (32,),
        "latent_mlp_hidden": (32,),
        "readout_mlp_hidden": (16,),
    },
}


def build(size: str, dtype: str, backend: str):
    """An Allegro ``Potential`` of ``size`` (random weights) on kernel ``backend``."""
    from equiforce.models import build_model
    from equiforce.models.allegro import AllegroSpec

    spec = AllegroSpec(
        type_names=("H", "C", "O"),
        r_max=5.0,
        avg_num_neighbors=20.0,
        dtype=dtype,
        seed=3,
        **SIZES[size],
    )
    return build_model("allegro", spec, backend=backend)


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Time and profile one (size, dtype, system, mode) case in this process.

    ``profile_models.worker``'s method, with this script's Allegro in place of its MACE.
    """
    profile_models.build = lambda dtype, backend, channels: build(args.size, dtype, backend)
    args.channels = 0
    result = profile_models.worker(args)
    del result["channels"]
    result["backend"] = f"{args.backend} allegro-{args.size}"
    return result


class NequipAsPotential:
    """nequip-allegro behind equiforce's call, so ``profile_models.worker`` profiles it as is.

    It ignores the equiforce batch it is given and runs its own nequip batch of the same
    frames (neighbour list built here, outside the timed calls).
    """

    def __init__(self, model, frames: list):
        import allegro_inference

        self.model = model
        self.batch = allegro_inference.nequip_batch(frames)
        self.type_names = list(allegro_inference.TYPE_NAMES)
        self.r_max = allegro_inference.R_MAX

    def eval(self) -> NequipAsPotential:
        """Eval mode, as ``Potential.eval``."""
        self.model.eval()
        return self

    def __call__(self, batch: dict, compute_forces: bool = True, **_: Any):
        """One energy + forces call of nequip-allegro (``batch`` unused)."""
        import allegro_inference

        return allegro_inference._call_nequip(self.model, self.batch)


def peer_worker(args: argparse.Namespace) -> dict[str, Any]:
    """Profile nequip-allegro and equiforce on identical weights (inference), in this process."""
    import allegro_inference

    from equiforce.interop import from_nequip_allegro
    from equiforce.kernels import use_backend

    if args.mode != "inference":
        raise ValueError("--peer profiles inference only")
    frames = profile_models.load_system(args.system, args.data_dir, args.water_reps, args.seed)
    theirs = allegro_inference.nequip_model(args.size, args.dtype, args.seed)
    ours = use_backend(from_nequip_allegro(theirs), args.backend)
    args.channels = 0
    result = {}
    for name, model in (("nequip", NequipAsPotential(theirs, frames)), ("ours", ours)):
        profile_models.build = lambda dtype, backend, channels, model=model: model
        result[name] = profile_models.worker(args)
        del result[name]["channels"]
        result[name]["backend"] = f"{'nequip-allegro' if name == 'nequip' else args.backend}"
        result[name]["backend"] += f" allegro-{args.size}"
    return result


def run_case(args: argparse.Namespace, **case: str) -> dict[str, Any]:
    """Run ``worker`` in a fresh subprocess and parse its result line."""
    repeats = args.box_repeats if case["system"] == "water" else args.repeats
    command = [sys.executable, __file__, "--worker"] + (["--peer"] if args.peer else [])
    command += [f"--{key}={value}" for key, value in case.items()]
    command += [
        f"--backend={args.backend}",
        f"--threads={args.threads}",
        f"--warmup={args.warmup}",
        f"--repeats={repeats}",
        f"--water-reps={args.water_reps}",
        f"--seed={args.seed}",
        f"--top={args.top}",
        f"--data-dir={args.data_dir}",
    ]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=args.case_timeout_s)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line.removeprefix("RESULT "))
    return {**case, "error": (proc.stderr or proc.stdout)[-1500:]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--backend", default="fast", help="kernel backend of the model")
    p.add_argument("--sizes", default="big,small,tiny")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--systems", default="acac,acac64,water")
    p.add_argument("--modes", default="inference,train")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--box-repeats", type=int, default=1)
    p.add_argument("--water-reps", type=int, default=10, help="water box: reps^3 molecules")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--top", type=int, default=10, help="ops per table")
    p.add_argument("--case-timeout-s", type=float, default=900.0)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    p.add_argument("--out", type=Path, default=REPO_ROOT / "bench_out")
    p.add_argument("--peer", action="store_true", help="also profile nequip-allegro (.venv-nequip)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for name in ("size", "dtype", "system", "mode"):
        p.add_argument(f"--{name}", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point: a worker, or every case in turn."""
    args = parse_args(argv)
    if args.worker:
        result = peer_worker(args) if args.peer else worker(args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"allegro_profile_{args.backend}_{stamp}.json"
    report: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": machine_info(("torch", "equiforce")),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": [],
    }
    for size in args.sizes.split(","):
        for dtype in args.dtypes.split(","):
            for system in args.systems.split(","):
                for mode in args.modes.split(","):
                    case = {"size": size, "dtype": dtype, "system": system, "mode": mode}
                    result = run_case(args, **case)
                    report["results"].append(result)
                    path.write_text(json.dumps(report, indent=2))
                    if "error" in result:
                        print(result)
                        continue
                    for part in (result["nequip"], result["ours"]) if args.peer else (result,):
                        print(markdown(part, args.top))
                    print(flush=True)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
