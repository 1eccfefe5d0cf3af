# Two commands for a fresh clone (each first runs scripts/bootstrap.sh: venv, install, weights, vspipe config):
#   make demo                 upscale a built-in sample clip into demo_out/ (video + side-by-side PNG)
#   make demo INPUT=clip.mp4  the same on your own video (FRAMES=100:148 for part of it)
#   make test                 the whole test suite (PYTEST_ARGS="-k cli -x" to narrow it)
#   make test-fast            the inner-loop tier: everything not marked slow
# PYTHON=/path/to/python3.12 picks the interpreter; PIP_ARGS adds `pip install` arguments.

VENV        ?= .venv
PY          := $(VENV)/bin/python
INPUT       ?=
FRAMES      ?=
OUT         ?= demo_out
PYTEST_ARGS ?=

export VENV := $(abspath $(VENV))

.PHONY: help bootstrap demo test test-fast clean

help:
	@sed -n '1,6p' Makefile | sed 's/^# \{0,1\}//'

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY) scripts/demo.py --out "$(OUT)" $(if $(INPUT),--input "$(INPUT)") $(if $(FRAMES),--frames "$(FRAMES)")

# scripts/run_tests.py runs each test module in a pytest process of its own and prints one summary line (its
# docstring says why: native runtimes sharing one process for the whole suite crashed a later fork).
test:
	@bash scripts/bootstrap.sh --test-deps
	$(PY) scripts/run_tests.py $(PYTEST_ARGS)

test-fast:
	@bash scripts/bootstrap.sh --test-deps
	$(PY) scripts/run_tests.py -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf "$(OUT)" build .pytest_cache
