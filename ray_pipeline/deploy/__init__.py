"""Running the engine on Kubernetes and remote Ray clusters.

``manifests`` renders and validates the Helm charts under ``helm/`` (through the Helm SDK, offline);
``submit`` is ``fusion submit``: ``ray_jobs_api`` (``--address``) or ``k8s_submit`` (``--k8s``: the RayJob that
``rayjob`` renders, created through ``kube_client``), sharing ``remote_job``; ``sweep`` is ``fusion sweep`` (the
evaluation-sweep chart).
"""
