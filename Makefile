# `make demo` and `make test` each set up their own virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_FLAGS := --disable-pip-version-check -q

.PHONY: demo test lint format bench clean

# The dask backend (examples/dask_backend) is installed as a third party's plugin would be.
$(STAMP): pyproject.toml constraints-ci.txt examples/dask_backend/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_FLAGS) -c constraints-ci.txt -e ".[all,test]" \
		-e examples/dask_backend
	# torch's CUDA build (the one torchvision pairs with here) pulls triton, a GPU compiler
	# whose LLVM clashes with TensorFlow's: torch.compile after `import tensorflow` segfaults.
	$(BIN)/python -m pip uninstall $(PIP_FLAGS) -y triton
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m diffstride.examples.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest
	DIFFSTRIDE_BACKEND=dask $(BIN)/python -m pytest -q --pyargs diffstride_conformance
	$(BIN)/python -m pytest -q examples/dask_backend/tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/network.py
	$(BIN)/python benchmarks/frameworks.py
	$(BIN)/python benchmarks/original.py  # needs DIFFSTRIDE_ORIGINAL, else skips
	$(BIN)/python benchmarks/jax_network.py
	$(BIN)/python benchmarks/jax_auto.py
	$(BIN)/python benchmarks/macs_overhead.py
	$(BIN)/python benchmarks/overhead.py --network

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis
