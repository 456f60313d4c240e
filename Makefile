# Two commands on a fresh machine:
#   make demo   set up .venv and run the main job (synthetic scenes -> train -> predict -> evaluate)
#   make test   set up .venv and run the test suite (what CI runs)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, pinned: the CPU wheel. A newer torch would pull several GB of CUDA wheels.
TORCH ?= torch==2.13.0

.PHONY: setup demo test lint bench clean gis-check

$(BIN)/geoseg: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH)"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(BIN)/geoseg

setup: $(BIN)/geoseg

demo: setup
	$(BIN)/geoseg demo

test: setup
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check geoseg flows tests benchmarks
	$(BIN)/ruff format --check geoseg flows tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

# GDAL's tools and QGIS 3.22+ against a small prediction (Debian, as root). qgis_process.bin is
# called directly: bookworm's wrapper passes --noversioncheck, which QGIS 3.22 rejects.
gis-check: setup
	apt-get update -qq
	apt-get install -y -qq gdal-bin
	apt-get install -y -qq --no-install-recommends qgis
	QT_QPA_PLATFORM=offscreen $(BIN)/python -m pytest -ra tests/test_gis_clients.py

bench: setup
	$(BIN)/python benchmarks/bench_predict.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache geoseg_demo
