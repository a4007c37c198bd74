"""``equiforce md MODEL STRUCTURE``: NVT/NVE/NPT MD with a model, trajectory + stability report.

Several models (``equiforce md m0.pt m1.pt m2.pt start.xyz``) or a committee folder
(``equiforce committee``) run as a committee: mean forces, and with ``--max-uncertainty X``
frames whose largest per-atom force spread exceeds X eV/Å go to ``uncertain.xyz`` and stop the
run (``--uncertainty-action stop``, default) or are flagged and the run goes on (``flag``).
Every ``--restart-every`` steps the run's state goes to ``md_restart.npz`` in ``--out``;
``--resume`` continues that run exactly (after a kill, or to extend it with a larger
``--steps``), and a new run into a folder that holds one is refused.

NVT runs Langevin (``--friction``), a Nosé–Hoover chain or Bussi's stochastic velocity
rescaling (``--thermostat nose-hoover|bussi --thermostat-time FS``). ``--batched`` runs every
frame of STRUCTURE at once through TorchSim (NVT, NVE or NPT; one model call per step for the
whole batch): one trajectory per structure (``md_0000.traj``, ...), a summary row per
structure, ``--resume`` as above (``equiforce.md.batched``); with a committee, each structure's
uncertain frames go to ``uncertain_0000.xyz``, ... and ``stop`` ends that structure's MD while
the others run on.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from equiforce.cli.options import (
    add_batch_atoms_option,
    add_calculator_options,
    add_state_options,
    apply_state_options,
    model_calculator,
)
from equiforce.md.dynamics import BAROSTATS
from equiforce.md.sampling import THERMOSTATS

TRAJECTORY_NAME = "md.traj"
SUMMARY_NAME = "md_summary.json"
PLOT_NAME = "md.png"
UNCERTAIN_NAME = "uncertain.xyz"
UNCERTAINTY_PLOT_NAME = "uncertainty.png"
RESTART_NAME = "md_restart.npz"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ``md`` options on ``parser``."""
    parser.add_argument(
        "model",
        nargs="+",
        help="model file (save_model output or training checkpoint); several files or a "
        "committee folder (equiforce committee) run as a committee",
    )
    parser.add_argument(
        "structure", help="starting structure, any ASE format (first frame; --batched: every frame)"
    )
    parser.add_argument("--ensemble", choices=("nvt", "nve", "npt"), default="nvt")
    parser.add_argument(
        "--temperature",
        type=float,
        nargs="+",
        default=[300.0],
        help="K (--batched: one for every frame, or one per frame)",
    )
    parser.add_argument(
        "--temperature-end",
        type=float,
        nargs="+",
        default=None,
        metavar="T",
        help="NVT or NPT: ramp the thermostat's target linearly from --temperature "
        "to T over --steps (melt-quench, heating; --batched: one for every frame, or one per "
        "frame)",
    )
    parser.add_argument("--timestep", type=float, default=0.5, help="fs")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--friction", type=float, default=0.01, help="Langevin friction, 1/fs")
    parser.add_argument(
        "--thermostat",
        choices=THERMOSTATS,
        default="langevin",
        help="NVT's thermostat: langevin (--friction), nose-hoover (a Nose-Hoover chain: "
        "deterministic; FixAtoms its only constraint) or bussi (stochastic velocity "
        "rescaling: canonical, one random factor a step), both with --thermostat-time",
    )
    parser.add_argument(
        "--thermostat-time",
        type=float,
        default=None,
        help="thermostat time, fs (100): NPT's, and NVT's nose-hoover or bussi thermostat's",
    )
    parser.add_argument("--log-interval", type=int, default=10, help="steps between samples")
    npt = parser.add_argument_group("NPT (--ensemble npt, 3D-periodic cells)")
    npt.add_argument(
        "--pressure",
        type=float,
        nargs="+",
        default=None,
        help="target pressure, GPa (0; --batched: one for every frame, or one per frame: an "
        "equation of state at temperature in one run)",
    )
    npt.add_argument(
        "--pressure-end",
        type=float,
        nargs="+",
        default=None,
        metavar="P",
        help="ramp the barostat's target linearly from --pressure to P over --steps "
        "(compression; LAMMPS's fix npt Pstart Pstop; --batched: one for every frame, or one "
        "per frame)",
    )
    npt.add_argument(
        "--barostat",
        choices=BAROSTATS,
        default=None,
        help="mtk: Martyna-Tobias-Klein + Nose-Hoover chains (samples NPT; default); "
        "berendsen: simple first-order coupling (equilibration); c-rescale: stochastic cell "
        "rescaling + Bussi thermostat (first-order and robust, samples NPT; also --anisotropic)",
    )
    npt.add_argument("--anisotropic", action="store_true", help="every cell component fluctuates")
    npt.add_argument(
        "--cell-mask",
        type=int,
        nargs=3,
        choices=(0, 1),
        default=None,
        metavar=("A", "B", "C"),
        help="with --anisotropic: the cell vectors whose lengths may change, e.g. 1 1 0 for a "
        "slab or 2D material in its plane (every barostat)",
    )
    npt.add_argument(
        "--couple",
        default=None,
        metavar="VECTORS",
        help="with --barostat c-rescale and --cell-mask: free cell vectors scaled by one "
        "factor, e.g. ab (LAMMPS's couple xy: a hexagonal layer keeps its shape)",
    )
    npt.add_argument("--barostat-time", type=float, default=None, help="barostat time, fs (1000)")
    npt.add_argument(
        "--compressibility",
        type=float,
        default=None,
        help="berendsen and c-rescale coupling compressibility, 1/GPa (0.01)",
    )
    committee = parser.add_argument_group("committee uncertainty (several models)")
    committee.add_argument(
        "--max-uncertainty",
        type=float,
        default=None,
        metavar="X",
        help="eV/Å: frames whose largest per-atom committee force spread exceeds X are "
        f"written to {UNCERTAIN_NAME}",
    )
    committee.add_argument(
        "--uncertainty-action",
        choices=("stop", "flag"),
        default="stop",
        help="stop the run at the first such frame (default) or flag them and run on",
    )
    parser.add_argument("--out", default="md", metavar="DIR", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seeds velocities and thermostat")
    parser.add_argument(
        "--restart-every",
        type=int,
        default=100,
        metavar="N",
        help=f"steps between two writes of the run's state to --out/{RESTART_NAME} (100)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"continue the run of --out/{RESTART_NAME} exactly, up to --steps in all (the "
        "other options must be the run's)",
    )
    parser.add_argument(
        "--batched",
        action="store_true",
        help="run every frame of STRUCTURE at once through TorchSim, one model call per step "
        "(NVT, NVE, NPT; needs equiforce[sim]); trajectories md_0000.traj, ...",
    )
    add_batch_atoms_option(parser)
    add_calculator_options(parser)
    add_state_options(parser)
    parser.add_argument(
        "--compile",
        action="store_true",
        help="compile the model (torch.compile, Inductor; minutes at the start): faster MD of "
        "small systems, where per-operation overhead dominates",
    )


def run(args: argparse.Namespace) -> int:
    """Run the MD, print the summary, write trajectory, JSON summary and plot into ``--out``."""
    from ase.io import read

    from equiforce.files import atomic_write_text
    from equiforce.md.dynamics import run_md
    from equiforce.md.report import format_md_summary, plot_md
    from equiforce.md.uncertainty import UncertaintyWatch, plot_uncertainty

    if not Path(args.structure).exists():
        raise FileNotFoundError(f"structure file {args.structure} does not exist")
    npt = npt_settings(args)
    out = Path(args.out)
    restart = out / RESTART_NAME
    if restart.exists() and not args.resume:  # as train: a run's state is never overwritten
        print(
            f"equiforce md: error: {out} holds a run ({RESTART_NAME}): --resume continues it; "
            "remove the file or choose another --out for a new run",
            file=sys.stderr,
        )
        return 1
    if args.batched:
        if args.dispersion is not None:
            raise ValueError("--dispersion adds D3 to the ASE calculator: drop --batched")
        return _run_batched(args, out, restart, npt)
    for name in ("temperature", "temperature_end", "pressure", "pressure_end"):
        if len(getattr(args, name) or [0]) != 1:
            option = "--" + name.replace("_", "-")
            raise ValueError(f"{option}: one value (one per frame with --batched)")
    atoms = read(args.structure, index=0)
    apply_state_options(args, [atoms])
    calculator = model_calculator(args, compile=args.compile)
    watch = None
    if args.max_uncertainty is not None:
        if not hasattr(calculator, "members"):
            raise ValueError("--max-uncertainty needs a committee: several models or a folder")
        watch = UncertaintyWatch(
            args.max_uncertainty, args.uncertainty_action, path=out / UNCERTAIN_NAME
        )
    result = run_md(
        atoms,
        calculator,
        trajectory_path=out / TRAJECTORY_NAME,
        npt=npt,
        watch=watch,
        **_run_options(args, restart),
    )
    print(format_md_summary(result))
    atomic_write_text(json.dumps(result.summary(), indent=2) + "\n", out / SUMMARY_NAME)
    plot_md(result, out / PLOT_NAME)
    if result.uncertainty is not None:
        plot_uncertainty(result.uncertainty, args.timestep, out / UNCERTAINTY_PLOT_NAME)
    print(f"trajectory, summary and plot written to {out}/")
    return 0


def _one_or_each(values: list[float] | None) -> float | list[float] | None:
    """A per-frame option's value: one for all (a number), one per frame (a list), or None."""
    if values is None or len(values) != 1:
        return values
    return values[0]


def _run_options(args: argparse.Namespace, restart: Path) -> dict:
    """The keyword arguments ``run_md`` and ``run_batched_md`` share, from the options."""
    return {
        "ensemble": args.ensemble,
        "temperature_K": _one_or_each(args.temperature),
        "final_temperature_K": _one_or_each(args.temperature_end),
        "final_pressure_GPa": _one_or_each(args.pressure_end),
        "timestep_fs": args.timestep,
        "n_steps": args.steps,
        "friction": args.friction,
        "thermostat": args.thermostat,
        **thermostat_time(args),
        "log_interval": min(args.log_interval, max(args.steps, 1)),
        "seed": args.seed,
        "progress": sys.stderr.isatty(),
        "restart_path": restart,
        "restart_every": args.restart_every,
        "resume": args.resume,
    }


def _run_batched(args: argparse.Namespace, out: Path, restart: Path, npt) -> int:
    """``--batched``: every frame of ``args.structure`` through ``run_batched_md`` (``npt``:
    the ``NPTSettings`` of ``--ensemble npt``, else None)."""
    from ase.io import read

    from equiforce.files import atomic_write_text
    from equiforce.md.batched import run_batched_md
    from equiforce.md.report import format_batched_summary, plot_batched_md
    from equiforce.md.torchsim import CommitteeModel, EquiforceModel
    from equiforce.md.uncertainty import UncertaintyWatch, plot_uncertainty

    if args.compile:
        raise ValueError("--batched runs the model eagerly: drop --compile")
    committee = len(args.model) > 1 or Path(args.model[0]).is_dir()
    structures = read(args.structure, index=":")
    apply_state_options(args, structures)
    stress = npt is not None  # the barostat's input
    options = {"device": args.device, "precision": args.precision, "compute_stress": stress}
    if committee:
        model = CommitteeModel.from_paths(args.model, **options)
    else:
        model = EquiforceModel(args.model[0], **options)
    watches = None
    if args.max_uncertainty is not None:
        if not committee:
            raise ValueError("--max-uncertainty needs a committee: several models or a folder")
        watches = [  # "stop" ends that structure's MD; the others run on
            UncertaintyWatch(
                args.max_uncertainty, args.uncertainty_action, out / f"uncertain_{k:04d}.xyz"
            )
            for k in range(len(structures))
        ]
    paths = [out / f"md_{k:04d}.traj" for k in range(len(structures))]
    results = run_batched_md(
        structures,
        model,
        trajectory_paths=paths,
        max_batch_atoms=args.max_batch_atoms,
        watches=watches,
        npt=npt,
        **_run_options(args, restart),
    )
    formulas = [atoms.get_chemical_formula() for atoms in structures]
    print(format_batched_summary(results, formulas))
    rows = [
        {"index": k, "formula": formula, **result.summary()}
        for k, (formula, result) in enumerate(zip(formulas, results, strict=True))
    ]
    wall = results[0].wall_time_s
    n_steps = max(result.n_steps for result in results)  # a watch may stop some earlier
    summary = {
        "batched": True,
        "n_structures": len(results),
        "n_atoms": sum(result.n_atoms for result in results),
        "wall_time_s": wall,
        "steps_per_second": n_steps / wall if wall > 0 else None,
        "structures": rows,
    }
    atomic_write_text(json.dumps(summary, indent=2) + "\n", out / SUMMARY_NAME)
    plot_batched_md(results, out / PLOT_NAME)
    if watches is not None:
        spreads = [result.uncertainty for result in results]
        plot_uncertainty(spreads, args.timestep, out / UNCERTAINTY_PLOT_NAME)
    print(f"trajectories, summary and plot written to {out}/")
    return 0


_NPT_OPTIONS = {  # NPTSettings field -> command-line option
    "pressure_GPa": "pressure",
    "barostat": "barostat",
    "barostat_time_fs": "barostat_time",
    "thermostat_time_fs": "thermostat_time",
    "compressibility_per_GPa": "compressibility",
    "cell_mask": "cell_mask",
    "couple": "couple",
}


def thermostat_time(args: argparse.Namespace) -> dict[str, float]:
    """``thermostat_time_fs`` for NVT with the Nosé–Hoover or Bussi thermostat, where
    ``--thermostat-time`` is given (else empty: the library's default)."""
    timed = args.ensemble == "nvt" and args.thermostat != "langevin"
    if timed and args.thermostat_time is not None:
        return {"thermostat_time_fs": args.thermostat_time}
    return {}


def npt_settings(args: argparse.Namespace):
    """The ``NPTSettings`` of ``--ensemble npt``, or one per ``--pressure`` where several are
    given (None otherwise; NPT options then refused)."""
    import dataclasses

    from equiforce.md.dynamics import NPTSettings

    given = {
        field: getattr(args, option)
        for field, option in _NPT_OPTIONS.items()
        if getattr(args, option) is not None
    }
    if args.ensemble != "npt":
        if thermostat_time(args):  # NVT's thermostat time, not an NPT one
            given.pop("thermostat_time_fs")
        if given or args.anisotropic:
            names = [f"--{_NPT_OPTIONS[f].replace('_', '-')}" for f in given]
            names += ["--anisotropic"] if args.anisotropic else []
            raise ValueError(f"{', '.join(names)} need --ensemble npt")
        return None
    pressures = given.pop("pressure_GPa", None)
    settings = NPTSettings(anisotropic=args.anisotropic, **given)
    if pressures is None:
        return settings
    each = [dataclasses.replace(settings, pressure_GPa=p) for p in pressures]
    return each[0] if len(each) == 1 else each
