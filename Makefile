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

# tests/test_distributed.py gets a pytest process of its own: when it drove Ray from the test process, after the rest
# of the suite had run there (torch/OpenMP threads, forked and spawned workers), Ray's driver died of SIGSEGV. Its Ray
# runs are now `animesr` commands in processes of their own, so this split is a precaution that could go.
ISOLATED := tests/test_distributed.py

test:
	@bash scripts/bootstrap.sh --test-deps
	$(PY) -m pytest --ignore=$(ISOLATED) $(PYTEST_ARGS) || [ $$? -eq 5 ]  # 5: PYTEST_ARGS selected none here
	$(PY) -m pytest $(ISOLATED) $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-fast:
	@bash scripts/bootstrap.sh --test-deps
	$(PY) -m pytest -m "not slow" --ignore=$(ISOLATED) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -m "not slow" $(ISOLATED) $(PYTEST_ARGS) || [ $$? -eq 5 ]

clean:
	rm -rf "$(OUT)" build .pytest_cache
