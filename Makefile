# The two commands of the README contract: `make demo` and `make test`.
# Both set everything up themselves: a virtualenv in .venv, the packages, and a
# redis-server from the system's package manager when it is missing.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DURATION ?= 60
SOAK_SECONDS ?= 300
SOAK_SEED ?= 11
# faults: the fault soak (SOAK_SECONDS); week: the compressed week (7 days of SOAK_DAY_SECONDS).
SOAK_MODE ?= faults
SOAK_DAY_SECONDS ?= 40
MUTATE_ARGS ?=

.PHONY: demo test lint types unit docs bench soak mutate dashboard redis-server clean help

help:
	@echo "make demo   - run the example bot against the bundled exchange simulator (DURATION=$(DURATION)s)"
	@echo "make test   - lint, mypy --strict, the whole test suite and the docs build"
	@echo "make bench  - the benchmarks (not part of make test)"
	@echo "make soak   - the long fault soak run (SOAK_SECONDS=$(SOAK_SECONDS) SOAK_SEED=$(SOAK_SEED); not part of make test)"
	@echo "              SOAK_MODE=week: the compressed week, 7 days of SOAK_DAY_SECONDS=$(SOAK_DAY_SECONDS)s"
	@echo "make mutate - mutation score of the decision modules (not part of make test)"
	@echo "make dashboard - redraw docs/_static/dashboard.svg from a 90 s live fleet (not part of make test)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

redis-server:
	@command -v redis-server >/dev/null 2>&1 || test -x /usr/sbin/redis-server || test -x /usr/bin/redis-server || { \
	  echo "redis-server missing: installing it from the system's package manager"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	}

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

types: $(STAMP)
	$(PY) -m mypy --strict src
	$(PY) -m mypy --strict tests examples benchmarks tools

unit: $(STAMP) redis-server
	HYPOTHESIS_PROFILE=ci $(PY) -m pytest -q --durations=25

docs: $(STAMP)
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

test: lint types unit docs

demo: $(STAMP)
	$(PY) examples/demo.py --duration $(DURATION)

bench: $(STAMP) redis-server
	$(PY) benchmarks/run_all.py

soak: $(STAMP) redis-server
ifeq ($(SOAK_MODE),week)
	$(PY) examples/soak_week.py --day-seconds $(SOAK_DAY_SECONDS) --seed $(SOAK_SEED)
else
	$(PY) examples/soak.py --seconds $(SOAK_SECONDS) --seed $(SOAK_SEED)
endif

mutate: $(STAMP) redis-server
	$(PY) tools/mutate.py $(MUTATE_ARGS)

dashboard: $(STAMP)
	$(PY) tools/render_dashboard.py

clean:
	rm -rf $(VENV) docs/_build .demo .soak .pytest_cache .mypy_cache .ruff_cache .hypothesis
