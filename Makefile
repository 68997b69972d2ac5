# Two entry points that set everything up on a fresh machine (see README.md):
#   make bench   the embedded benchmark, every registered method x 3 seeds, ending in one comparison table
#   make test    the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: bench test smoke benchmark benchmark-official setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch==2.13.0 resolves to the CPU build on these machines; the pins in pyproject.toml keep pip from
	# replacing it with a multi-GB CUDA build (see README, "Installation").
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

bench: $(STAMP)
	$(BIN)/bench run --method all --dataset synthetic --seed 0 --seed 1 --seed 2 --out runs/embedded

smoke: $(STAMP)
	$(BIN)/bench run --method all --dataset synthetic --preset smoke --out runs/smoke --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

benchmark: $(STAMP)
	$(BIN)/python -m pytest benchmarks -q --benchmark-only --benchmark-columns=min,median,max

# scoring vs the official formulation of each query-dependent method; rewrites
# reports/efficiency/cpu/scoring_vs_official.md (TVR_OFFICIAL_N, TVR_OFFICIAL_N_HEAVY set the sizes)
benchmark-official: $(STAMP)
	$(BIN)/python -m pytest benchmarks/test_scoring_vs_official.py -s -q -p no:cacheprovider

clean:
	rm -rf $(VENV) runs .pytest_cache
