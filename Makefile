# The two set-up commands of the README, as make targets.
PYTHON ?= python3

.PHONY: install lab test bench

install:
	bash scripts/install.sh

lab: install
	rlbound lab run --out runs/lab

test:
	bash scripts/install.sh test
	$(PYTHON) -m pytest -q

bench:
	$(PYTHON) bench/bench_passk.py
	$(PYTHON) bench/bench_verify.py
	$(PYTHON) bench/bench_tiny_vs_hf.py
	$(PYTHON) bench/bench_lab.py --lab runs/lab
