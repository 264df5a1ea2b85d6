# Two commands set everything up on a fresh clone:
#   make demo   - create .venv, install, run the demo export (local cluster, synthetic provider, rcf)
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --prefer-binary --disable-pip-version-check -q
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench install clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	# torch/torchvision first, pinned: these releases lie on this platform's disk
	$(PIP) "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) -e ".[test,dev,models,torchgeo,gee,stac,planetary,tessera,hpc,geo,plot,notebooks]"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m rs_embed_dask demo

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rs_embed_dask tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_export.py

clean:
	rm -rf $(VENV) demo_output
