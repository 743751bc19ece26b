# Optional helpers; the README's two commands do not need make.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q torch==2.13.0

install: $(PY)
	$(VENV)/bin/pip install -q -e ".[dev]"

demo: install
	$(PY) -m pyro_sparse_bnn demo

test: install
	$(PY) -m pytest

bench: install
	$(PY) benchmarks/step_time.py
	$(PY) benchmarks/step_time.py --widths 64-64-32-10
	$(PY) benchmarks/bai_simulation.py
