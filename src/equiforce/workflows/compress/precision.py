"""The precision stage: which modes a model may run in, by the precision audit's checks.

``audit_model`` runs ``equiforce.workflows.precision_audit.run_audit`` on the validation
structures (untimed: the free-speed stage times every mode on the target instead). Per mode it
gives the RMS deviation from float64 of the same weights, the errors against the validation
labels, the rotation error and the NVE drift. ``accepted_modes`` keeps:

* the model's own mode (the one its file saves; the user runs it so), always;
* any other mode the audit finds within tolerance, with the audit's tolerances set to
  ``precision_share`` x the search's (force RMS deviation <= share x ``force_tol`` meV/Å,
  energy RMS deviation <= share x ``energy_tol`` meV/atom, rotation error within the mode's
  ``SYMMETRY_RTOL``), and whose NVE drift differs from the own mode's by at most
  ``drift_tol`` meV/atom/ps.

Whether a kept mode is accurate enough is then decided like for every candidate: by its
validation errors against ``force_tol`` / ``energy_tol``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from equiforce.data.graph import Configuration
from equiforce.models.potential import Potential
from equiforce.precision import current_policy
from equiforce.workflows.compress.config import CompressConfig
from equiforce.workflows.precision_audit import AuditOptions, run_audit

__all__ = ["accepted_modes", "audit_model", "own_mode"]


def own_mode(model: Potential) -> str:
    """The precision mode ``model`` runs in as loaded (its policy, else its dtype's mode)."""
    policy = current_policy(model)
    return policy.name if policy is not None else str(model.dtype).removeprefix("torch.")


def audit_model(
    model: Potential, valid: Sequence[Configuration], config: CompressConfig
) -> dict[str, dict[str, Any]]:
    """Mode -> the audit's figures (``ModeAudit`` fields) on the validation structures.

    The model's own mode is always audited, besides ``config.modes``.
    """
    mode = own_mode(model)
    modes = tuple(dict.fromkeys((mode, *config.modes)))
    share = config.precision_share
    options = AuditOptions(
        modes=modes,
        force_tol=share * config.force_tol,
        energy_tol=share * config.energy_limit,
        batch_size=16,
        timing_repeats=0,
        md_steps=config.md_steps,
        seed=config.seed,
    )
    result = run_audit(model, valid, options)
    return {audit.mode: dataclasses.asdict(audit) for audit in result.modes}


def accepted_modes(
    audits: dict[str, dict[str, Any]], mode: str, config: CompressConfig
) -> dict[str, str]:
    """Mode -> why it is kept or refused (``"kept: ..."`` / ``"refused: ..."``).

    Args:
        audits: ``audit_model`` output.
        mode: the model's own mode.
        config: the search (``drift_tol``).
    """
    own_drift = audits[mode]["nve_drift_meV_per_atom_per_ps"]
    verdicts = {mode: "kept: the model's own mode"}
    for name, audit in audits.items():
        if name == mode:
            continue
        if not audit["within_tolerance"]:
            verdicts[name] = (
                f"refused: deviation from float64 dF {audit['forces_dev_rms_meV_per_A']:.3g} "
                f"meV/Å, dE {audit['energy_dev_rms_meV_per_atom']:.3g} meV/atom, rotation "
                f"{audit['rotation_error_rel']:.2g} (limits {config.precision_share:g} x the "
                f"tolerances, rotation {audit['rotation_tol_rel']:.0e})"
            )
            continue
        drift = audit["nve_drift_meV_per_atom_per_ps"]
        change = math.nan if drift is None or own_drift is None else abs(drift - own_drift)
        if change > config.drift_tol:
            verdicts[name] = (
                f"refused: NVE drift {drift:.3g} vs {own_drift:.3g} meV/atom/ps in {mode} "
                f"(change > {config.drift_tol:g})"
            )
            continue
        verdicts[name] = "kept: within the audit's tolerances"
    return verdicts
