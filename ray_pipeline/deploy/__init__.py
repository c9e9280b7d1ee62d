"""Running the engine on Kubernetes and remote Ray clusters.

``manifests`` renders and validates the Helm charts under ``helm/`` (through the Helm SDK, offline);
``rayjob`` and ``submit`` are ``fusion submit`` (Ray Jobs API or a KubeRay RayJob); ``sweep`` is ``fusion sweep``
(the evaluation-sweep chart).
"""
