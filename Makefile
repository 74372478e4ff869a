# durable_nb developer commands. Needs only python3 (>= 3.11) with venv and pip.
#
#   make lab     create .venv, install durable_nb[lab], start JupyterLab on notebooks/
#   make test    create .venv, install durable_nb[test,lab,bench], ruff + mypy + pytest
#                (needs Debian's chromium for tests/browser: `make browser` installs it)
#   make demo    kill a kernel in the middle of a sweep and resume it (headless)
#   make clean   remove caches and build output; `make distclean` also removes .venv

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

# JupyterLab refuses to start as root unless told.
LAB_ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?= --no-browser --notebook-dir=notebooks $(LAB_ROOT_FLAG)

# The JupyterLab sidebar (TypeScript, labextension/ -> durable_nb/labextension/):
# `labextension-build` builds it with npm and links it into the venv; `make lab` and
# `make test` run it (through the `labextension` target) after installing the package.
LABEXTENSION_BUILD ?= $(MAKE) --no-print-directory labextension-build

# The browser tests (tests/browser) drive Debian's Chromium with Playwright; nothing downloads
# a browser. `make browser` installs the Debian package when it is missing (needs root).
CHROMIUM ?= /usr/bin/chromium

# One stamp per set of extras: pip runs again only when pyproject.toml changes.
STAMP_LAB := $(VENV)/.installed-lab
STAMP_TEST := $(VENV)/.installed-test-lab-bench

.PHONY: lab test demo labextension browser lint typecheck pytest clean distclean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP_LAB): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e ".[lab]"
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -e ".[test,lab,bench]"
	touch $@ $(STAMP_LAB)

labextension: $(STAMP_LAB)
	$(if $(strip $(LABEXTENSION_BUILD)),$(LABEXTENSION_BUILD),@:)

# The sidebar, incrementally: `npm ci` when the lockfile changed, `npm run build:prod` when a
# source changed, then the venv's labextensions dir links to the build (what `jupyter
# labextension develop` does), so `jupyter lab` serves it. A second run does nothing.
LABEXT_OUT := durable_nb/labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/@durable-nb/labextension
LABEXT_NODE_MODULES := labextension/node_modules/.package-lock.json
LABEXT_SOURCES := labextension/package.json labextension/tsconfig.json labextension/install.json \
	$(wildcard labextension/src/*.ts labextension/src/*.tsx labextension/style/*)

$(LABEXT_NODE_MODULES): labextension/package-lock.json labextension/package.json
	@command -v npm >/dev/null || { echo "npm is missing: building the JupyterLab sidebar" \
		"(labextension/) needs Node.js >= 20 with npm" >&2; exit 1; }
	cd labextension && npm ci --no-audit --no-fund
	touch $@

$(LABEXT_OUT)/package.json: $(LABEXT_SOURCES) $(LABEXT_NODE_MODULES) | $(STAMP_LAB)
	cd labextension && PATH="$(abspath $(BIN)):$$PATH" npm run build:prod

.PHONY: labextension-build
labextension-build: $(LABEXT_OUT)/package.json
	@if [ "$$(readlink $(LABEXT_LINK))" != "$(abspath $(LABEXT_OUT))" ]; then \
		mkdir -p $(dir $(LABEXT_LINK)) && rm -rf $(LABEXT_LINK) && \
		ln -s $(abspath $(LABEXT_OUT)) $(LABEXT_LINK) && \
		echo "linked $(LABEXT_LINK) -> $(abspath $(LABEXT_OUT))"; fi

browser:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "$(CHROMIUM) is missing: the browser tests need Debian's chromium." >&2; \
		echo "Install it as root (apt-get update && apt-get install -y chromium)," >&2; \
		echo "then run make test again." >&2; \
		exit 1; \
	fi

lab: $(STAMP_LAB) labextension
	$(BIN)/jupyter lab $(LAB_ARGS)

lint: $(STAMP_TEST)
	$(BIN)/ruff check durable_nb tests bench

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

pytest: $(STAMP_TEST) browser
	$(BIN)/pytest

test: $(STAMP_TEST) labextension browser
	$(BIN)/ruff check durable_nb tests bench
	$(BIN)/mypy
	$(BIN)/pytest

# DEMO_ARGS, e.g. "--step-seconds 2 --kill-at 3" (python -m durable_nb.demo --help).
demo: $(STAMP_LAB)
	$(BIN)/python -m durable_nb.demo $(DEMO_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache test-artifacts \
		labextension/lib labextension/tsconfig.tsbuildinfo
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
	find notebooks -name .ipynb_checkpoints -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) labextension/node_modules durable_nb/labextension
