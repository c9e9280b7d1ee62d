"""The TaCIE job's public face: ``run_tacie`` and what the CLI and other packages' tests import.

The job itself is split by what each part does: ``loop`` (the round loop), ``items`` (the item and its
Arrow schema), ``attempts``, ``checkpoints``, ``operations`` (decomposition, diversification, depth
evolution, task fusion, response, scoring), ``collection`` (round 0), ``metrics``, ``pool_filters``,
``export`` and ``preflight``.
"""

from ray_pipeline.methods.tacie.items import ITEM_SCHEMA, TaCIEItem
from ray_pipeline.methods.tacie.loop import TaCIERun, run_tacie
from ray_pipeline.methods.tacie.operations import OPERATIONS, task_values
from ray_pipeline.methods.tacie.preflight import Preflight, preflight

__all__ = ["run_tacie", "TaCIERun", "preflight", "Preflight", "ITEM_SCHEMA", "TaCIEItem", "OPERATIONS", "task_values"]
