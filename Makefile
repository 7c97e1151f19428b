# Two entry points: `make demo` and `make test`. Both create .venv from the lock.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test docs bench lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check uv || $(PY) -m pip install -q --user uv
	$(PY) -m uv venv -q --allow-existing --python $(PY) $(VENV)
	$(PY) -m uv pip install -q --python $(BIN)/python -r requirements.lock
	$(PY) -m uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m datarax_fn demo

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: $(STAMP)
	$(BIN)/python -m datarax_fn bench --page docs/benchmarks.md

lock:
	$(PY) -m uv pip compile pyproject.toml --extra all -c constraints.txt --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) site .pytest_cache .hypothesis
