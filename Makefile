# bgmgen set-up and checks. On a fresh Debian machine `make demo` and `make test` are all that is needed:
# both install what is missing (apt packages as root, .venv, Python packages) and are quick when rerun.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PIP := $(VENV)/bin/python -m pip
# Extra index for the torch wheel, e.g. https://download.pytorch.org/whl/cpu where no local CPU wheel exists.
TORCH_INDEX_URL ?=
PYTEST_ARGS ?= -x -q --durations=15

# pyproject.toml is the one place versions live: take torch's pin from it, and key the install stamp on
# its contents so pip runs again only when it changes.
TORCH_VERSION := $(shell sed -n 's/^ *"torch==\([^"]*\)".*/\1/p' pyproject.toml)
PYPROJECT_HASH := $(shell sha256sum pyproject.toml | cut -c1-16)
TORCH_STAMP := $(VENV)/.stamp-torch-$(TORCH_VERSION)
DEPS_STAMP := $(VENV)/.stamp-deps-$(PYPROJECT_HASH)
PIP_INSTALL := $(PIP) install $(if $(CI),--progress-bar off)

DEMO_IN := tests/data/rocket_launch.webm
DEMO_OUT := demo/rocket_launch.scored.mp4

.PHONY: help demo test install system-deps clean distclean

help:
	@echo "make demo       install what is missing, then score $(DEMO_IN) into $(DEMO_OUT)"
	@echo "make test       install what is missing, then run the whole test suite"
	@echo "make install    only the installs (apt packages, $(VENV), Python packages)"
	@echo "make clean      remove demo output and build leftovers; distclean also removes $(VENV)"

demo: install
	mkdir -p $(dir $(DEMO_OUT))
	$(VENV)/bin/bgmgen score $(DEMO_IN) -o $(DEMO_OUT) --force
	@echo "Scored video: $(CURDIR)/$(DEMO_OUT)"

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

install: system-deps $(DEPS_STAMP)

system-deps:
	@scripts/install_system_deps.sh "$(PYTHON)"

# The target is pip, not python: a venv made without ensurepip has a python but no pip.
$(VENV)/bin/pip: | system-deps
	@existed=$$([[ -e $(VENV) ]] && echo 1 || true); \
	echo "Creating $(VENV) with $(PYTHON) ($$($(PYTHON) --version 2>&1))"; \
	$(PYTHON) -m venv $(VENV) || { [[ -n $$existed ]] || rm -rf $(VENV); exit 1; }

# torch goes in first, alone and pinned, so the CPU wheel pip is configured with (find-links) is what
# every later requirement sees; an unpinned or unresolved torch pulls a multi-GB CUDA build instead.
$(TORCH_STAMP): $(VENV)/bin/pip
	$(PIP_INSTALL) "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
	rm -f $(VENV)/.stamp-torch-*
	touch $@

$(DEPS_STAMP): $(TORCH_STAMP)
	$(PIP_INSTALL) -e '.[test]'
	rm -f $(VENV)/.stamp-deps-*
	touch $@

clean:
	rm -rf demo build bgmgen.egg-info

distclean: clean
	rm -rf $(VENV)
