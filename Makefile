# LabManager: `make run` starts everything on the embedded defaults, `make test` runs the suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8000
SOAK_MINUTES ?= 10

.PHONY: setup run test bench migrate schema clean

# The remote-lab client (clients/python, its own distribution) is installed beside the server, editable:
# its tests and examples/scripts/smoke.py import it. The server and its image do not need it.
$(STAMP): pyproject.toml clients/python/pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) is required (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet -e clients/python
	touch $(STAMP)

# The dashboard's browser libraries (Chart.js, xterm.js): npm ci from package-lock.json, copied into static/vendor/.
VENDOR := static/vendor/chart.umd.min.js static/vendor/xterm.js
$(VENDOR): package.json package-lock.json bin/vendor-static.sh
	bin/vendor-static.sh
	touch $(VENDOR)

# var/: the SQLite databases, collected static files, session uploads, benchmark output (importing the
# settings creates nothing).
setup: $(STAMP) $(VENDOR)
	bin/ensure-nginx.sh
	mkdir -p var

migrate: setup
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py collectstatic --noinput -v0
	$(PY) manage.py setup_schedules
	HOST=$(HOST) PORT=$(PORT) bin/run.sh

test: setup
	bin/ensure-browser.sh
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: setup
	$(PY) -m bench.list_instances
	$(PY) -m bench.workers
	$(PY) -m bench.placement
	$(PY) -m bench.fleet_planner
	$(PY) -m bench.audit
	$(PY) -m bench.sse
	$(PY) -m bench.auth
	$(PY) -m bench.sessions  # beside neops-remote-lab 1.4.0 (pip installs it into var/bench/neops-venv)
	$(PY) -m bench.lab_wait
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES)  # PostgreSQL + Redis only; docs/performance.md
	$(PY) -m bench.dashboard
	$(PY) -m bench.consoles  # 200 browser consoles on one daphne; docs/performance.md

schema: setup
	$(PY) manage.py spectacular --validate --fail-on-warn --file docs/openapi.yaml

clean:
	rm -rf $(VENV) var node_modules static/vendor
