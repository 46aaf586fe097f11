# Everyday verbs. `make run` and `make test` are all a newcomer needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench bench-console soak migrate clean lock audit

# Installs exactly the locked versions, each checked against its hash (pip itself included).
$(STAMP): requirements.lock requirements-test.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-test.lock
	touch $(STAMP)

# After changing requirements.txt or requirements-test.txt: the locks, with every file's hash.
# Versions already locked stay as they are; `make lock UPGRADE=1` moves everything to the newest.
PIP_COMPILE = $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)
lock: $(STAMP)
	$(PIP_COMPILE) --output-file requirements.lock requirements.txt
	$(PIP_COMPILE) --output-file requirements-test.lock requirements-test.txt

# Known vulnerabilities in the locked versions, from PyPI's advisory data (its per-release JSON API).
# --strict: a package that could not be checked fails the audit instead of passing unseen.
audit: $(STAMP)
	$(BIN)/pip-audit --progress-spinner off --strict --disable-pip --require-hashes -r requirements-test.lock

.env:
	@echo "SECRET_KEY=$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env
	@echo "wrote .env with a new SECRET_KEY"

run: $(STAMP) .env
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py setup_demo
	$(BIN)/python scripts/run_local.py

test: $(STAMP)
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python bench/run.py

# The console on millions of synthetic calls, in a database of its own (see bench/console.py).
bench-console: $(STAMP)
	nice -n 19 $(BIN)/python bench/console.py

soak: $(STAMP)
	$(BIN)/python bench/soak.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache staticfiles
