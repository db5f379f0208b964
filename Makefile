# Two commands do all set-up on a fresh machine:
#   make run   - install Switchboard and run it on embedded defaults (dev mode)
#   make test  - install everything the tests need and run the whole suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYPROJECT_HASH := $(shell sha1sum pyproject.toml | cut -c1-12)
RUN_STAMP := $(VENV)/.run-$(PYPROJECT_HASH)
TEST_STAMP := $(VENV)/.test-$(PYPROJECT_HASH)

.PHONY: run test bench install install-test build-deps system-deps lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The compiled modules (setup.py) are rebuilt when their sources change.
$(RUN_STAMP): pyproject.toml setup.py media/_rtpsend.c media/_lane.c media/_lane_state.c media/_pace.c media/_rtpsend.h media/_lane.h signaling/_fanout.c signaling/_fanout.h signaling/_broadcast.c signaling/_uring.c signaling/_uring.h | build-deps $(BIN)/python
	$(BIN)/pip install --quiet -e .
	rm -f $(VENV)/.run-*; touch $@

$(TEST_STAMP): pyproject.toml setup.py media/_rtpsend.c media/_lane.c media/_lane_state.c media/_pace.c media/_rtpsend.h media/_lane.h signaling/_fanout.c signaling/_fanout.h signaling/_broadcast.c signaling/_uring.c signaling/_uring.h | build-deps $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	rm -f $(VENV)/.test-* $(VENV)/.run-*; touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

run: install
	$(BIN)/switchboard serve --dev

# A C compiler and Python's headers for the C modules (setup.py), installed with apt-get if missing.
build-deps:
	./tools/build-deps.sh $(PYTHON)

# Programs the integration tests run for real (coturn), installed with apt-get if missing.
system-deps:
	./tools/system-deps.sh

test: install-test system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest

# Full-size benchmarks (see benchmarks/README.md); the tests run their quick mode.
bench: install-test system-deps
	$(BIN)/python -m benchmarks signaling
	$(BIN)/python -m benchmarks media
	$(BIN)/python -m benchmarks media --simulcast --rooms 1 --publishers 4 --subscribers 6
	$(BIN)/python -m benchmarks room
	$(BIN)/python -m benchmarks cluster
	$(BIN)/python -m benchmarks connectivity

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/lint-imports

format: install-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
