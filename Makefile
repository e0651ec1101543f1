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

.PHONY: install install-026 test test-main test-026 report report-fast bench mutants docs clean conformance paper browser

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

test-main: $(STAMP) browser
	$(BIN)/python -m pytest -n 2 -p no:cacheprovider $(PYTEST_ARGS)

# tests/test_docs_site.py opens the built documentation site in headless Chromium: installed from Debian's packages
# where it is missing and this is possible (root with apt-get); elsewhere the browser checks skip, saying why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	    { echo "browser: installing chromium (Debian package) for tests/test_docs_site.py"; \
	      apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; } || \
	  echo "browser: chromium not installed (needs root and apt-get): tests/test_docs_site.py skips its browser checks"

# The compact diffusers-0.26.3 subset (timesteps grid, every prediction type x schedule step, errors).
test-026: $(STAMP026)
	$(VENV026)/bin/python -m pytest -p no:cacheprovider tests/test_diffusers_compat.py $(PYTEST_ARGS)

report: $(STAMP)
	$(BIN)/lcm-ref report

report-fast: $(STAMP)
	$(BIN)/lcm-ref report --fast

bench: $(STAMP)
	$(BIN)/lcm-ref bench

# The learned testbed's networks (resumable; into lcm_ref/testbed/digits/, the committed ones, with a copy of the
# CSVs in reports/data): make report only evaluates them. lcm-ref paper train alone writes under ./paper-train.
paper: $(STAMP)
	$(BIN)/lcm-ref paper train --weights lcm_ref/testbed/digits/weights --runs lcm_ref/testbed/digits/runs \
		--work build/paper-train --data reports/data

# The oracle's kill table: every fault-injected scheduler of lcm_ref.oracle.mutants must be caught.
mutants: $(STAMP)
	$(BIN)/python -m lcm_ref.oracle.mutants

# The documentation site into build/docs: the user guide, the report pages (from reports/), the README, the design
# document and the API reference from the docstrings; a warning (broken link or cross-reference) fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) $(VENV026) .hypothesis .pytest_cache build *.egg-info

# The diffusers version matrix (docs/design.md §9, §13): one cached environment per release under
# $(CONFORMANCE_VENVS) (created if missing, reused otherwise; torch pinned by a constraints file so that no CUDA build
# is pulled; releases up to 0.27 need huggingface_hub<0.26, whose cached_download they import), lcm_ref taken from
# this checkout; then lcm_ref.studies.conformance runs conform on each release's LCMScheduler, TCDScheduler (0.27 on)
# and lcm_ref's drop-in in float32 and float16, 2 processes at a time, into reports/data/conformance/ (replacing every
# report there: one run per folder); into that folder, it then regenerates docs/design.md §13.3's table and the page
# reports/conformance.md from the same files (tests/test_conformance_matrix.py checks that they all agree).
CONFORMANCE_VENVS    ?= $(HOME)/.cache/lcm_ref/venvs
CONFORMANCE_VERSIONS ?= 0.22.0 0.23.1 0.24.0 0.25.1 0.26.3 0.27.2 0.31.0 0.32.2 0.42.1
CONFORMANCE_JOBS     ?= 2
CONFORMANCE_OUT      ?= reports/data/conformance

conformance: $(STAMP)
	mkdir -p $(CONFORMANCE_VENVS)
	echo '$(TORCH)' > $(CONFORMANCE_VENVS)/constraints.txt
	@for v in $(CONFORMANCE_VERSIONS); do \
	  d=$(CONFORMANCE_VENVS)/diffusers-$$v; \
	  case $$v in 0.2[2-7].*) hub='huggingface_hub<0.26';; *) hub=;; esac; \
	  test -f $$d/.lcm_ref-ready || { \
	    echo "conformance: environment for diffusers $$v"; \
	    { test -x $$d/bin/python || $(PYTHON) -m venv $$d; } && \
	    $$d/bin/python -m pip install -q -c $(CONFORMANCE_VENVS)/constraints.txt $(TORCH) && \
	    $$d/bin/python -m pip install -q -c $(CONFORMANCE_VENVS)/constraints.txt "diffusers==$$v" $$hub \
	      numpy scipy mpmath hypothesis && \
	    touch $$d/.lcm_ref-ready; } || exit 1; \
	done
	$(BIN)/python -m lcm_ref.studies.conformance --venvs $(CONFORMANCE_VENVS) --jobs $(CONFORMANCE_JOBS) \
		--out $(CONFORMANCE_OUT) --versions $(CONFORMANCE_VERSIONS)
	@if [ "$(abspath $(CONFORMANCE_OUT))" = "$(abspath reports/data/conformance)" ]; then \
	  $(BIN)/python -m lcm_ref.studies.conformance design --write && $(BIN)/lcm-ref report --only conformance; \
	fi
