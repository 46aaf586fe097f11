#!/usr/bin/env bash
# Installs every lock the way `make` does, with the oldest pip a supported Python's venv brings
# (3.11: pip 23.2.1), while the package index holds a newer release than a lock pins. The install
# must succeed and hold exactly the locked versions. On the Makefile of 2026-12-06 (plain
# `pip install --require-hashes -r requirements-test.lock` with venv's pip) this failed.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${CHECK_PYTHON:-python3.11}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/probe"
echo "venv's own pip: $("$work/probe/bin/python" -m pip --version | cut -d' ' -f1-2)"

"$python" .ci/newer_wheels.py "$work/index" >/dev/null
# PIP_FIND_LINKS puts the newer wheels beside the real index; a fresh cache sees them at once.
export PIP_FIND_LINKS="$work/index" PIP_NO_CACHE_DIR=1
for lock in requirements-test.lock requirements-dev.lock; do
    PYTHON="$python" scripts/install_locked.sh "$work/venv" "$lock"
    # Every installed distribution is the version its lock names (pip and setuptools included).
    "$work/venv/bin/python" - "$lock" <<'PY'
import re, sys
from importlib.metadata import distributions

def norm(name): return re.sub(r"[-_.]+", "-", name).lower()

pinned = dict(
    (norm(m.group(1)), m.group(2))
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", open(sys.argv[1]).read(), re.M)
)
pinned.update(dict(
    (norm(m.group(1)), m.group(2))
    for m in re.finditer(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", open("requirements-pip.lock").read(), re.M)
))
wrong = [
    f"{d.metadata['Name']} {d.version} (lock: {pinned.get(norm(d.metadata['Name']), 'not in the lock')})"
    for d in distributions()
    if pinned.get(norm(d.metadata["Name"])) != d.version
]
if wrong:
    sys.exit(f"{sys.argv[1]}: installed outside the lock: " + ", ".join(sorted(wrong)))
print(f"{sys.argv[1]}: {len(pinned)} pins, every installed version as locked")
PY
    rm -rf "$work/venv"
done
