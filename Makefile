# Two entry points for a new user (see README):  make demo  and  make test.
# Both create .venv on first use and install what they need into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch==2.13.0 is pinned for dev/CI: on our machines it resolves to a local CPU wheel,
# while an unpinned torch may pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: demo test lint venv clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[dev]"
	touch $@

venv: $(BIN)/.installed

demo: venv
	$(BIN)/wattwise measure digits_cnn --batch-size 1,64

lint: venv
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
