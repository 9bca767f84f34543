# Two commands do all the set-up: `make test` and (with the pipeline issue) `make run`.
# Both install into .venv first; a second call skips what is already there.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser postgres run test test-fast lint bench clean

install: $(STAMP)

# torch is installed first and pinned to the CPU build that lies on this machine's disk;
# a looser spec would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

# The main job: the retraining flow on the embedded default (Prefect without a server, MLflow on
# .pipeline/mlflow.db, MiniLM-L6 fine-tuned on Rotten Tomatoes). Flags go through ARGS:
#   make run ARGS="--learning-rate 3e-5 --max-steps 100"
run: install
	$(PY) -m flows.retrain $(ARGS)

# Debian's Chromium for the browser tests (tests/e2e/test_browser.py): the playwright package drives it and never
# downloads a browser of its own. Installed with apt-get when missing (root, as on CI).
browser:
	@command -v chromium >/dev/null 2>&1 || { echo "installing Debian's chromium for the browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
	  echo "could not install chromium (apt-get needs root): the browser tests will fail, naming it"; }

# Debian's PostgreSQL for the cluster mode of infra/ (infra/servers.py --mode cluster, tests/e2e/test_cluster.py):
# only its binaries are used (/usr/lib/postgresql/<version>/bin), with a data directory under the pipeline home
# and port 5433; a system cluster the package may set up is left alone. Installed with apt-get when missing.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || { echo "installing Debian's postgresql for the cluster mode"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 || \
	  echo "could not install postgresql (apt-get needs root): the cluster tests will fail, naming it"; }

test: install browser postgres
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: install
	$(PY) -m benchmarks.bench_load

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
