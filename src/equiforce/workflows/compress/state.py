"""The search's state file: finished steps and their results, rewritten atomically.

``<out>/state.json`` holds the settings the search started with and one entry per finished
step (an audit, a timing, a trained student), keyed by name. A killed search leaves the file
as of its last finished step (``equiforce.files.atomic_write_text``: never half written), and
``--resume`` skips every step found there. A resumed search must have the same settings; the
changed keys are named otherwise.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from equiforce.files import atomic_write_text
from equiforce.train.run import changed_settings

__all__ = ["STATE_FILE", "SearchState"]

LOG = logging.getLogger(__name__)

STATE_FILE = "state.json"


class SearchState:
    """Finished steps of one search.

    Args:
        out: the output folder.
        settings: the search's settings (``config.settings_of``).
        resume: continue a search found in ``out``.

    Raises:
        FileExistsError: ``out`` has a search and ``resume`` is not set.
        ValueError: resuming a search that started with other settings (names the keys).
    """

    def __init__(self, out: str | Path, settings: dict[str, Any], resume: bool):
        self.path = Path(out) / STATE_FILE
        self.steps: dict[str, Any] = {}
        if self.path.exists():
            if not resume:
                raise FileExistsError(
                    f"{self.path} exists (an earlier search): pass --resume to continue it, or "
                    "another --out"
                )
            saved = json.loads(self.path.read_text())
            changed = changed_settings(saved["settings"], settings)
            if changed:
                raise ValueError(
                    f"cannot resume the search in {self.path.parent}: its settings differ ("
                    + "; ".join(changed)
                    + ")"
                )
            self.steps = saved["steps"]
            LOG.info("resuming: %d finished steps in %s", len(self.steps), self.path)
        self.settings = settings

    def __contains__(self, name: str) -> bool:
        return name in self.steps

    def __getitem__(self, name: str) -> Any:
        return self.steps[name]

    def record(self, name: str, result: Any) -> Any:
        """Store a finished step's (JSON-able) result and rewrite the file; returns it."""
        self.steps[name] = json.loads(json.dumps(result, default=_plain))
        payload = {"settings": self.settings, "steps": self.steps}
        atomic_write_text(json.dumps(payload, indent=1), self.path)
        return self.steps[name]


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return str(value)
