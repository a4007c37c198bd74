"""``equiforce compress`` on AcAc: the fastest model within 1.25x the teacher's test force error.

Data: the split of ``benchmarks.acac`` (450 training frames of ``train_300K``, its last 50
validate; ``test_MD_300K`` is the search's test set, cut to ``--test-frames``). Teacher:
``--teacher-model`` (an equiforce model file, e.g. the 128-channel teacher of
docs/distillation.md), or, without one, the preset ``--teacher-preset`` trained here for
``--teacher-budget-s`` seconds with ``benchmarks.acac``'s recipe. Tolerance: ``--tol-factor``
(1.25) x the teacher's force RMSE on the test set.

The search is ``equiforce.workflows.compress.compress`` on the ``md-molecule`` target (one AcAc
molecule, one thread), its students distilled with teacher MD at 300 and 600 K and rattled
copies. Afterwards the chosen candidate (model, precision mode, execution variant) and the
teacher as the user runs it (eager, default backend, one thread) are timed again, each in its
own worker (``compress.timing``), on one molecule and on a batch of 64 molecules: the speed-ups
of the report. Writes ``results.json`` (run record, teacher errors, tolerance, plan estimate,
search wall time, chosen, speed-ups, every candidate) in ``--out``::

    nice python -m benchmarks.compress_acac --teacher-model T.pt --budget-s 1500 --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from benchmarks import acac
from benchmarks.common import add_common_arguments, run_record
from equiforce.data.extxyz import read_configurations
from equiforce.kernels.registry import resolve_backend
from equiforce.models import load_model
from equiforce.precision import MODES
from equiforce.train import ModelConfig, RunConfig, train
from equiforce.workflows.compress import CompressConfig, CompressRefused, compress, plan
from equiforce.workflows.compress.targets import target_frames, write_target
from equiforce.workflows.compress.timing import ExecVariant, time_variants
from equiforce.workflows.distill.data import configuration_to_atoms

SYSTEMS = {"1_acac": ("md-molecule", 1), "64_acac": ("batch", 64)}


def train_teacher(args: argparse.Namespace, split: acac.Split) -> Path:
    """The preset ``--teacher-preset`` trained for ``--teacher-budget-s`` (reused if done)."""
    out = args.out / "teacher"
    if (out / "model.pt").exists():
        return out / "model.pt"
    model = ModelConfig.from_preset(args.teacher_preset, dtype="float32")
    values = {
        "output_dir": str(out),
        "seed": 0,
        "data": acac.data_section(split),
        "model": model.to_dict(),
        "training": acac.training_section(args.teacher_budget_s),
    }
    return train(RunConfig.from_dict(values)).model_path


def search_config(args: argparse.Namespace, split: acac.Split, teacher: Path, tol: float):
    """The compression search."""
    starts, snapshots = (1, 2) if args.smoke else (args.md_starts, 10)
    return CompressConfig(
        model=str(teacher),
        train_file=str(split.train),
        valid_file=str(split.valid),
        test_file=str(split.tests["test_MD_300K"]),
        isolated_atoms_file=str(split.isolated),
        force_tol=tol,
        target="md-molecule",
        budget_s=args.budget_s,
        out=str(args.out / "search"),
        threads=1,
        modes=tuple(args.modes),
        compile=not args.no_compile,
        export=not args.no_export,
        peer=args.peer,
        peer_python={} if args.mace_python is None else {"mace-torch": args.mace_python},
        ladder=None if args.ladder is None else json.loads(args.ladder),
        student_epochs=args.student_epochs,
        min_student_s=min(args.budget_s / 4, 60.0),
        student_training={"scheduler": {"factor": 0.8, "patience": 5}},
        augment={
            "rattle": {"scales": [0.01, 0.02], "copies": 1},
            "md": {"temperatures": [300.0, 600.0], "n_starts": starts,
                   "n_snapshots": snapshots, "interval": 10},
        },
        md_steps=args.md_steps,
        repeats=args.repeats,
    )


def speedups(config: CompressConfig, chosen: dict[str, Any], args) -> dict[str, Any]:
    """Chosen vs the teacher eager (default backend, one thread) on 1 and 64 molecules.

    An exported package runs one structure per call, so on the batch a chosen package is
    replaced by its model's faster of eager and compiled (same backend and threads).
    """
    molecules = [configuration_to_atoms(c) for c in read_configurations(config.train_file)]
    teacher_variant = ExecVariant(resolve_backend("auto"))
    chosen_variant, chosen_mode = ExecVariant(**chosen["variant"]), chosen["mode"]
    steps = json.loads((Path(config.out) / "state.json").read_text())["steps"]
    teacher_mode = steps["input:precision"]["own_mode"]
    out = {}
    for system, (target, count) in SYSTEMS.items():
        frames = target_frames(target, molecules, batch_size=count)
        path = write_target(frames, args.out / f"{system}.npz")
        scratch = args.out / "speedup" / system
        teacher = time_variants(config.model, teacher_mode, path, [teacher_variant],
                                3, args.repeats, scratch)[0]
        variants = [chosen_variant]
        if count > 1 and chosen_variant.export:  # a package runs one structure per call:
            # the batch runs the chosen model's fastest batch-capable variant
            plain = dataclasses.replace(chosen_variant, export=False, compile=False)
            variants = [plain, dataclasses.replace(plain, compile=True)]
        timed = time_variants(chosen["model_file"], chosen_mode, path, variants,
                              3, args.repeats, scratch)
        best = min((t for t in timed if "ms_per_call" in t), key=lambda t: t["ms_per_call"])
        ratio = teacher["ms_per_call"] / best["ms_per_call"]
        out[system] = {"teacher": teacher, "chosen": best, "speedup": ratio}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_arguments(p, "bench_out/compress_acac")
    p.add_argument("--teacher-model", type=Path, help="equiforce model file (else trained)")
    p.add_argument("--teacher-preset", default="mace-128-l1", help="preset trained without one")
    p.add_argument("--teacher-budget-s", type=float, default=600.0, help="its training, s")
    p.add_argument("--tol-factor", type=float, default=1.25, help="x the teacher's test F RMSE")
    p.add_argument("--budget-s", type=float, default=1500.0, help="the search's budget, s")
    p.add_argument("--ladder", help="student rungs as JSON (default: compress's ladder)")
    p.add_argument("--student-epochs", type=int, help="cap on each student's epochs")
    p.add_argument("--md-starts", type=int, default=2, help="teacher MD starts per temperature")
    p.add_argument("--test-frames", type=int, default=200, help="test frames per set")
    p.add_argument("--md-steps", type=int, default=50, help="NVE steps of the audit")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per variant")
    p.add_argument("--modes", nargs="+", default=list(MODES), help="precision modes audited")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--peer", action="store_true", help="time the teacher in mace-torch too")
    p.add_argument("--mace-python", help="mace-torch's python (default: .venv-mace)")
    p.add_argument("--resume", action="store_true", help="continue a killed search")
    p.add_argument("--smoke", action="store_true", help="tiny split and augmentation")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train or load the teacher, search, time the choice, write ``results.json``."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    sizes = dict(acac.SMOKE) if args.smoke else {"n_train": 450, "n_test": args.test_frames}
    split = acac.write_split(args.data_dir, args.out, **sizes)
    record = run_record("benchmarks.compress_acac", argv)
    teacher_trained = args.teacher_model is None
    teacher = train_teacher(args, split) if teacher_trained else args.teacher_model
    errors = acac.test_errors(load_model(teacher), {"test_MD_300K": split.tests["test_MD_300K"]})
    tol = args.tol_factor * errors["test_MD_300K"]["forces"]["rmse"]
    config = search_config(args, split, teacher, tol)
    results: dict[str, Any] = {
        **record, "settings": vars(args), "teacher": str(teacher),
        "teacher_trained_here": teacher_trained, "teacher_test_errors": errors,
        "force_tol": tol, "plan": plan(config)[1],
    }
    print(results["plan"])
    start = time.perf_counter()
    try:
        result = compress(config, resume=args.resume, progress=False)
    except CompressRefused as err:
        results.update(refused=str(err), best=err.best, search_s=time.perf_counter() - start)
    else:
        results["search_s"] = time.perf_counter() - start
        results["chosen"] = result.chosen
        results["candidates"] = result.candidates
        results["speedups"] = speedups(config, result.chosen, args)
    (args.out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps({k: results.get(k) for k in ("force_tol", "search_s", "refused")}))
    for system, entry in results.get("speedups", {}).items():
        print(f"{system}: teacher {entry['teacher']['ms_per_call']:.2f} ms, chosen "
              f"{entry['chosen']['ms_per_call']:.2f} ms, {entry['speedup']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
