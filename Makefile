# Two entry points for a fresh Linux machine:
#   make demo   install everything, then run every task notebook in SMOKE mode → outputs/
#   make test   install everything, then run the test suite (unit, parity, notebooks, browser)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
# bytecode caches make each notebook kernel and test process start in seconds, not a minute
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-fast browser-test lint clean

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml scripts/install.sh
	VENV=$(VENV) bash scripts/install.sh
	@touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) scripts/run_demo.py

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# everything but notebook execution and the browser
test-fast: install
	$(PY) -m pytest -m "not notebook and not browser" $(PYTEST_ARGS)

browser-test: install
	$(PY) -m pytest -m browser $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check helpers tests benchmarks scripts

clean:
	rm -rf outputs .pytest_cache
