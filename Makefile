# Two entry points for a new user (see README):  make demo  and  make test.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch==2.13.0 is pinned for dev/CI: on our machines it resolves to a local CPU wheel,
# while an unpinned torch may pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test lint venv sysdeps bench lower-bounds clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/wattwise optimize

# System packages the tests use for real: a headless browser for the HTML report and a
# PostgreSQL server for multi-worker studies. Installed with apt when missing and we are root;
# otherwise those tests skip and say why.
SYSDEPS_CHECK := command -v chromium >/dev/null && ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1
sysdeps:
	@if ! ( $(SYSDEPS_CHECK) ); then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and postgresql (Debian packages) for the browser and database tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; \
	  else \
	    echo "note: chromium/postgresql missing and not root: browser and PostgreSQL tests will skip"; \
	  fi; \
	fi

# mypy checks src/wattwise (pyproject.toml's files), then tests/, benchmarks/ and tools/ one
# folder at a time: test folders are not packages, and three of them hold a conftest.py.
lint: venv
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/mypy
	$(BIN)/python tools/mypy_tests.py

# Two phases: most tests on two xdist workers, then the `quiet` ones (they compare figures
# measured side by side) alone, so a neighbouring test cannot distort them.
define run_tests
	$(1)/python -m pytest -q -n 2 -m "not gpu and not quiet"
	$(1)/python -m pytest -q -m "quiet and not gpu"
endef

test: lint sysdeps
	$(call run_tests,$(BIN))

# docs/BENCHMARKS.md: wattwise vs peers, measured side by side (about an hour on 2 cores).
bench: venv
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[dev,bench]"
	$(BIN)/python benchmarks/run.py

# The suite again, with every dependency at the lower bound pyproject.toml declares
# (docs/dependencies.md): a bound we publish is a version the tests have passed on.
LOWER := .venv-lower
lower-bounds: sysdeps
	test -x $(LOWER)/bin/python || $(PYTHON) -m venv $(LOWER)
	$(LOWER)/bin/python -m pip install -q --upgrade pip
	$(PYTHON) tools/lower_bounds.py > $(LOWER)/constraints.txt
	$(LOWER)/bin/python -m pip install -q -c $(LOWER)/constraints.txt "$(TORCH)" -e ".[dev]"
	$(LOWER)/bin/python -m pip freeze > $(LOWER)/installed.txt
	$(call run_tests,$(LOWER)/bin)

clean:
	rm -rf $(VENV) $(LOWER) .pytest_cache .mypy_cache .ruff_cache
