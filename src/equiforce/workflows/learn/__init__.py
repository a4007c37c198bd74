"""Active learning: MD with a committee, label its most uncertain frames, fine-tune, repeat.

``learn(config)`` (``equiforce learn config.yaml``) runs the loop until an MD runs its length
with the committee's force spread under the threshold, or ``max_rounds``; see
``docs/uncertainty.md`` and ``configs/learn_example.yaml``. The labeller is distillation's
teacher (``workflows.distill.teacher``: any ASE calculator or an equiforce model) and its label
cache; the committee trains with ``workflows.committee``.
"""

from equiforce.workflows.learn.config import LearnConfig, load_learn_config
from equiforce.workflows.learn.run import LearnResult, learn, select_frames

__all__ = ["LearnConfig", "LearnResult", "learn", "load_learn_config", "select_frames"]
