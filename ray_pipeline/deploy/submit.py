"""``fusion submit``: run a job file on a remote Ray cluster (Ray Jobs API) or as a KubeRay RayJob.

``--address http://HEAD:8265`` uploads this project (the source checkout that holds ``ray_pipeline``) as the job's
``working_dir`` and runs ``python -m ray_pipeline.cli run <job file> [--output-dir DIR]`` on the cluster, which needs
the project's dependencies installed (the job image has them). The job file is checked first, so a bad one fails
here, before anything is sent. A job file outside the project travels in the job's environment (``$FUSION_SUBMITTED_JOB``)
and is written to a temporary file on the cluster, never into the project, so concurrent submissions from one checkout
never see each other's files; it must then name no file relative to itself (those would not be uploaded): that is an
error. ``--env NAME``
forwards that variable's value from this environment (nothing else is forwarded). The command follows the job's log
to the end, prints its final status and last lines, and exits 0 when it SUCCEEDED, 1 otherwise.

``--k8s`` renders ``helm/fusion-ray`` for this one job (see ``rayjob``), creates the ConfigMap and the RayJob with the
Kubernetes API, makes the RayJob the ConfigMap's owner (deleting the RayJob deletes both) and follows the RayJob's
status until KubeRay reports it finished. ``--dry-run`` prints what would be sent and needs no cluster.

The work is done in ``ray_jobs_api`` (``--address``) and ``k8s_submit`` (``--k8s``, with ``kube_client`` for the
API calls); ``remote_job`` holds what both share.
"""

from __future__ import annotations

import argparse

from ray_pipeline.deploy.k8s_submit import submit_k8s
from ray_pipeline.deploy.ray_jobs_api import submit_address


def cmd_submit(args: argparse.Namespace) -> int:
    if args.k8s:
        return submit_k8s(args)
    return submit_address(args)
