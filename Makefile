# Two entry points: `make demo` (runs the main job on a bundled default) and `make test`.
# Both create .venv and install what they need. torch==2.13.0 (a CPU wheel) is installed
# unless the system python can already import a torch, in which case the venv reuses it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "using the importable torch"; $(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q torch==2.13.0; \
	fi
	$(PY) -m pip install -q -e ".[test]"
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	$(PY) -m dvis.demo

clean:
	rm -rf $(VENV) out
