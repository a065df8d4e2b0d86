# Two entry points: `make demo` (the main job on the offline defaults) and `make test`.
# Both create or reuse a local virtual environment and install everything pinned in
# requirements.lock. The paper's release is read from $(LOOKAHEAD_DATA).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOOKAHEAD_DATA ?= ../shared/lookahead-data
export LOOKAHEAD_DATA
DATASET ?= runs/paper.parquet

.PHONY: demo test install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(DATASET): $(VENV)/.installed $(wildcard lookahead_router/data/*.py)
	$(BIN)/lookahead data import-paper --src "$(LOOKAHEAD_DATA)" --out $@

demo: $(DATASET)
	$(BIN)/lookahead eval --data $(DATASET) --compare-paper --out runs/reference-report.json

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
