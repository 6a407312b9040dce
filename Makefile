# vision_lab — the README's commands. Every target sets up .venv first (idempotent).
#   make lab      JupyterLab on nbs/ (127.0.0.1, token required)
#   make test     the whole suite: every notebook through papermill, package checks
#   make export   regenerate vision_lab/ and kernels/ from the notebooks, clean them, refresh the README table
#   make report   run every notebook into results/ and write results/index.html
#
# PyTorch is installed first and explicitly, so nothing else can make pip resolve a CUDA build.
# CPU by default; a GPU user names their build, e.g.
#   make install TORCH="torch==2.13.0 --index-url <the PyTorch CUDA wheel index of your choice>"
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: install lab test export check report clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

export: install
	$(BIN)/python tools/export_notebooks.py

check: install
	$(BIN)/python tools/export_notebooks.py --check

lab: install export
	$(BIN)/vision-lab lab

test: install
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --durations=15

report: install export
	$(BIN)/vision-lab report

clean:
	rm -rf build dist *.egg-info results .pytest_cache
