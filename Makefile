# Two entry points for a fresh Linux machine:
#   make demo   install everything, then run every task notebook in SMOKE mode → outputs/
#   make test   install everything, then run the test suite (unit, parity, notebooks, browser, version floors)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# bytecode caches make each notebook kernel and test process start in seconds, not a minute
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-fast test-floor browser-test lint colab-links clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) scripts/run_demo.py

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# everything but notebook execution, the browser and the version-floor environments
test-fast: install
	$(PY) -m pytest -m "not notebook and not browser and not floor" $(PYTEST_ARGS)

# the fast suite at requirements.txt's floors, and each notebook's install cell in a fresh Colab-like environment
test-floor: install
	$(PY) -m pytest -m floor $(PYTEST_ARGS)

browser-test: install
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check helpers tests benchmarks scripts

# declare the repository URL (REPO=https://github.com/OWNER/NAME) and stamp it into notebooks and README badges;
# without REPO, re-stamp the declared one (e.g. after adding a notebook). BRANCH: the branch badges open (main).
colab-links:
	python3 scripts/colab_links.py $(if $(REPO),--repo $(REPO)) $(if $(BRANCH),--branch $(BRANCH))

clean:
	rm -rf outputs .pytest_cache
