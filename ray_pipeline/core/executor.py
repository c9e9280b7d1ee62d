"""Ray is the executor, not the model of the domain.

``connect`` starts or joins a Ray cluster; ``run_stage`` runs one stage (a plain
callable class over pandas batches) over a list of rows as a Ray Data
``map_batches`` actor pool, with the rows split into blocks that Ray schedules
across the cluster's nodes, and returns the rows in their input order.
"""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from ray_pipeline.core.errors import FusionError

log = logging.getLogger(__name__)


def connect(address: str | None = None) -> str:
    """Join the cluster at ``address`` (or ``$RAY_ADDRESS``), else start a local Ray.

    Returns a description of the cluster for the manifest. For a ``ray://``
    client address this package travels with the job as a ``py_module``.
    """
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized():
        return _describe("attached")
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    if address and address.startswith("ray://"):
        import ray_pipeline

        kwargs["runtime_env"] = {"py_modules": [str(Path(ray_pipeline.__file__).parent)]}
    if not address:
        kwargs["include_dashboard"] = False
    try:
        # "local": with no address Ray itself would join the cluster named in /tmp/ray/ray_current_cluster,
        # and wait forever when that cluster is gone
        ray.init(address=address or "local", **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FusionError(f"cannot connect to Ray at {address}: {first}") from None
    return _describe(address or "local")


def _describe(where: str) -> str:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    desc = f"{where} ({len(nodes)} node{'s' if len(nodes) != 1 else ''})"
    log.info("Ray: %s", desc)
    return desc


def run_stage(
    rows: list[dict[str, Any]],
    stage_cls: type,
    constructor_kwargs: dict[str, Any],
    *,
    batch_size: int,
    num_actors: int,
    resources: dict[str, float],
) -> list[dict[str, Any]]:
    """Run ``stage_cls`` over ``rows`` as a Ray Data actor pool; rows come back in order."""
    if not rows:
        return []
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    if not sys.stdout.isatty():  # Ray Data would log a progress block every 10 s; the pipelines log their own
        logging.getLogger("ray.data._internal.progress.logging_progress").setLevel(logging.WARNING)
    num_blocks = max(1, math.ceil(len(rows) / batch_size))
    ds = ray.data.from_items(rows, override_num_blocks=num_blocks)
    ds = ds.map_batches(
        stage_cls,
        fn_constructor_kwargs=constructor_kwargs,
        batch_size=batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=min(num_actors, num_blocks)),
        **resources,
    )
    out: list[dict[str, Any]] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
        out.extend(batch.to_dict("records"))
    return out
