#!/usr/bin/env bash
# Makes a virtualenv holding exactly the locked versions: scripts/install_locked.sh VENV LOCK [LOCK...]
# Every place that installs (Makefile, .ci/run, docs/development.md's production install) calls this script.
#
# Why it is done this way: the pip that `python -m venv` brings is whatever the interpreter
# shipped (Python 3.11's venv brings pip 23.2.1), and that pip resolved a locked package's
# extras (`CacheControl[filecache]`) to the newest release in the index, outside the lock. So:
#   1. the locked pip is installed first, from requirements-pip.lock, hash-checked and --no-deps
#      (an old pip can install one pinned, hashed wheel without resolving anything);
#   2. each lock is installed with --no-deps: the lock already lists every package, so pip has
#      nothing to resolve and cannot reach for a release the lock does not name;
#   3. nothing else stays: the setuptools that 3.11's venv adds is removed;
#   4. `pip check` then proves the set is complete and consistent (a lock missing a dependency
#      fails here instead of at import time).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
venv=$1
shift

"$PYTHON" scripts/check_python.py
"$PYTHON" -m venv "$venv"
# Python 3.11's venv also brings setuptools 65.5.0, which no lock asks for (3.12's brings none):
# it goes, and a lock that needs setuptools installs its own pinned release.
"$venv/bin/python" -m pip uninstall --quiet --yes setuptools 2>/dev/null || true
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
    -r requirements-pip.lock
for lock in "$@"; do
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r "$lock"
done
"$venv/bin/python" -m pip check >/dev/null || { "$venv/bin/python" -m pip check; exit 1; }
