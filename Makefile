# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.pitsolve-installed

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: on these machines 2.13.0 is a local CPU build; any other
# spec would pull CUDA packages.  Then the project with every extra (Diffusers, plots)
# and the test tools: the demo and the tests use them all.
$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

# The main job: the bundled digits DDPM sampled sequentially and in parallel (same noise).
demo: $(STAMP)
	$(VENV)/bin/pitsolve sample --output outputs/demo

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) outputs .pytest_cache *.egg-info
