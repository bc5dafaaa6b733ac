# The two commands of the README. Both set up .venv first (quick when it is already up to date).
.PHONY: setup demo test bench

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/rlhf-lab demo --resume

test: setup
	.venv/bin/python -m pytest -q
	bash scripts/test_widgets7.sh

bench: setup
	.venv/bin/python bench/generate.py
