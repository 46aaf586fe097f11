# Everyday verbs. `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed

.PHONY: run test test-fast lint format bench bench-instructions bench-peers bench-console soak faults migrate clean lock audit

# Installs exactly the locked versions, each checked against its hash, with the locked pip first
# (scripts/install_locked.sh says why). A failed install leaves no stamp, so the next make retries.
$(STAMP): requirements-pip.lock requirements.lock requirements-test.lock scripts/install_locked.sh
	rm -rf $(VENV)
	PYTHON=$(PYTHON) scripts/install_locked.sh $(VENV) requirements-test.lock
	touch $(STAMP)

# Maintainers' tools (pip-tools, pip-audit) live apart: nothing `make run` or `make test` installs.
$(TOOLS_STAMP): requirements-pip.lock requirements-dev.lock scripts/install_locked.sh
	rm -rf $(TOOLS)
	PYTHON=$(PYTHON) scripts/install_locked.sh $(TOOLS) requirements-dev.lock
	touch $(TOOLS_STAMP)

# After changing a requirements*.txt: the locks, with every file's hash.
# Versions already locked stay as they are; `make lock UPGRADE=1` moves everything to the newest.
PIP_COMPILE = $(TOOLS)/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)
lock: $(TOOLS_STAMP)
	$(PIP_COMPILE) --output-file requirements-pip.lock requirements-pip.txt
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --output-file requirements-test.lock requirements-test.txt
	$(PIP_COMPILE) --output-file requirements-dev.lock requirements-dev.txt

# Known vulnerabilities in the locked versions, from PyPI's advisory data (its per-release JSON API).
# --strict: a package that could not be checked fails the audit instead of passing unseen.
AUDIT = $(TOOLS)/bin/pip-audit --progress-spinner off --disable-pip --require-hashes
audit: $(TOOLS_STAMP)
	$(AUDIT) --strict -r requirements-test.lock
	$(AUDIT) --strict -r requirements-dev.lock

.env:
	@echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env
	@echo "wrote .env with a new SECRET_KEY"

run: $(STAMP) .env
	@$(BIN)/python scripts/run_local.py --check-ports
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setup_demo
	$(BIN)/python scripts/run_local.py

# The suite in parallel, one process per core (TEST_WORKERS=0 runs it in this process).
# Property tests run Hypothesis' `fast` profile; HYPOTHESIS_PROFILE=ci runs ten times the examples
# (tests/examples.py; .ci/run sets it).
TEST_WORKERS ?= auto
# Where writing bytecode is turned off (PYTHONDONTWRITEBYTECODE), every test process, and every
# server a test starts, would compile the gateway's modules and rewrite the tests' asserts again:
# about 5 s of CPU each. The tests keep their bytecode under .pytest_cache/ instead, never next
# to the sources or in the venv.
ifneq ($(PYTHONDONTWRITEBYTECODE),)
TEST_ENV := PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/.pytest_cache/pycache
endif
test: $(STAMP)
	$(TEST_ENV) $(BIN)/pytest -n $(TEST_WORKERS)

# Everything that needs no real server, process, browser or wait of a second or more (tests marked
# `slow` or `browser` are out).
test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/pytest -n $(TEST_WORKERS) -m "not slow and not browser"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Cost per call in CPU instructions (callgrind): a figure machine load does not move.
bench-instructions: $(STAMP)
	$(BIN)/python bench/instructions.py

# This gateway beside the upstream called directly, nginx and LiteLLM, in the shared peer bench
# (../shared/peer-bench, or PEER_BENCH): the defaults, and with DATABASE_URL + REDIS_URL set, those
# with 2 workers too (bench/peers.py).
bench-peers: $(STAMP)
	$(BIN)/python bench/peers.py

# The console on millions of synthetic calls, in a database of its own (see bench/console.py).
bench-console: $(STAMP)
	nice -n 19 $(BIN)/python bench/console.py

soak: $(STAMP)
	$(BIN)/python bench/soak.py

# Faults under load on a private PostgreSQL and Redis: a worker killed, the database stopped twice,
# an instance stopped during an outage; prints the counts and checks them (see bench/faults.py).
faults: $(STAMP)
	$(BIN)/python bench/faults.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .ruff_cache staticfiles
