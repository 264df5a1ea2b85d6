# Two commands set everything up on a fresh clone:
#   make demo   - create .venv, install, run the demo export (local cluster, synthetic provider, rcf)
#   make test   - create .venv, install, run the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --prefer-binary --disable-pip-version-check -q
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test lint bench install clean parity parity-env

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	# torch/torchvision first, pinned: these releases lie on this platform's disk
	$(PIP) "torch==2.14.1" "torchvision==0.29.1"
	# every model family's library, so that no family's tests skip: terratorch (clay, terramind; ~430 MB with
	# its dependencies) and olmoearth-pretrain-minimal; torch/torchvision repeated so that pip keeps them
	$(PIP) -e ".[test,dev,models,torchgeo,gee,stac,planetary,tessera,hpc,geo,plot,notebooks,olmoearth,clay,terramind]" \
		"torch==2.14.1" "torchvision==0.29.1"
	@rm -f $(VENV)/.installed-*; touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m rs_embed_dask demo

test: $(STAMP)
	RS_EMBED_DASK_ALL_EXTRAS=1 $(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check rs_embed_dask tests benchmarks
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/bench_export.py

clean:
	rm -rf $(VENV) demo_output

# Differential harness against rs-embed 0.3.1 (not part of `make test` or CI; see parity/README.md).
# rs-embed runs in its own Python 3.11 venv (it declares >=3.12 but runs on 3.11); ours runs in $(VENV).
PARITY_VENV   ?= .venv-parity
PARITY_PY     := $(PARITY_VENV)/bin/python
PARITY_PIP    := $(PARITY_PY) -m pip install --prefer-binary --disable-pip-version-check -q
PARITY_STAMP  := $(PARITY_VENV)/.installed-rs-embed-0.3.1
RS_EMBED_WHEEL ?= rs-embed==0.3.1
PARITY_ARGS   ?=

$(PARITY_STAMP):
	@test -x $(PARITY_PY) || $(PYTHON) -m venv $(PARITY_VENV)
	$(PARITY_PIP) --upgrade pip
	# the torch/torchvision of $(VENV): these lie on this platform's disk (others download GBs)
	$(PARITY_PIP) "torch==2.14.1" "torchvision==0.29.1"
	# rs-embed 0.3.1 declares Python>=3.12 but runs on 3.11; rasterio/geotessera pinned to releases with binary wheels
	$(PARITY_PIP) --ignore-requires-python "$(RS_EMBED_WHEEL)" "rasterio<1.5" "geotessera<0.11" "torch==2.14.1" "torchvision==0.29.1"
	# --ignore-requires-python also lets pip take pure-Python dependencies that need 3.12 (`type` statements):
	# back to the newest releases that run on 3.11 (pip then reports geotessera's zarr>=3.3 pin; it imports fine)
	$(PARITY_PIP) "tifffile<2026.4" "zarr<3.2" "rioxarray<0.20" "bokeh<3.10"
	# rs-embed[terramind]'s pin (olmoearth-pretrain-minimal comes with rs-embed itself)
	$(PARITY_PIP) "terratorch==1.2.1" "torch==2.14.1" "torchvision==0.29.1"
	$(PARITY_PY) -W ignore -c "import rs_embed, rshf, open_clip, tifffile, zarr, geotessera; print('rs-embed', rs_embed.__version__)"
	@touch $(PARITY_STAMP)

parity-env: $(PARITY_STAMP)

parity: $(STAMP) $(PARITY_STAMP)
	$(PY) -m parity.run --parity-python $(PARITY_PY) $(PARITY_ARGS)
