# Two commands do all the set-up on a fresh machine (Python 3.11 + pip):
#   make report   executes the notebooks into reports/ (the main job)
#   make test     runs the whole test suite (hypothesis profile "ci" when CI=true)
# Both create .venv if missing and install lcm_ref with what it needs. torch is pinned for the install only
# (the package accepts torch>=2.1): an unpinned torch would pull a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH  := torch==2.13.0
# A second environment with diffusers 0.26.3, the version this project's design was checked against.
VENV026 := .venv-diffusers-0.26.3
STAMP    := $(VENV)/.installed
STAMP026 := $(VENV026)/.installed
PYTEST_ARGS ?=

.PHONY: install install-026 test test-main test-026 report report-fast bench mutants docs clean

install: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev,notebooks,conformance,docs]'
	touch $@

install-026: $(STAMP026)
$(STAMP026): pyproject.toml
	test -x $(VENV026)/bin/python || $(PYTHON) -m venv $(VENV026)
	$(VENV026)/bin/python -m pip install -q --upgrade pip
	$(VENV026)/bin/python -m pip install -q $(TORCH)
	$(VENV026)/bin/python -m pip install -q 'diffusers==0.26.3' 'huggingface_hub<0.26' numpy scipy mpmath \
		hypothesis tqdm jsonschema matplotlib pytest
	$(VENV026)/bin/python -m pip install -q --no-deps -e .
	touch $@

test: test-main test-026

test-main: $(STAMP)
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider $(PYTEST_ARGS)

# The compact diffusers-0.26.3 subset (timesteps grid, every prediction type x schedule step, errors).
test-026: $(STAMP026)
	$(VENV026)/bin/python -m pytest -p no:cacheprovider tests/test_diffusers_compat.py $(PYTEST_ARGS)

report: $(STAMP)
	$(BIN)/lcm-ref report

report-fast: $(STAMP)
	$(BIN)/lcm-ref report --fast

bench: $(STAMP)
	$(BIN)/lcm-ref bench

# The oracle's kill table: every fault-injected scheduler of lcm_ref.oracle.mutants must be caught.
mutants: $(STAMP)
	$(BIN)/python -m lcm_ref.oracle.mutants

# The API reference from the docstrings, with docs/design.md, into build/docs; a warning (broken link or
# cross-reference) fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) $(VENV026) .hypothesis .pytest_cache build *.egg-info
