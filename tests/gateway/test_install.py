"""The install: supported interpreters, and the locks that decide every version."""

import re
import subprocess
import sys
from pathlib import Path

from scripts.check_python import problem

ROOT = Path(__file__).resolve().parents[2]


def test_supported_interpreters_pass_and_others_get_one_clear_sentence():
    assert problem((3, 11, 7), "/usr/bin/python3") is None
    assert problem((3, 13, 0), "/usr/bin/python3") is None
    message = problem((3, 10, 13), "/usr/bin/python3.10")
    assert "3.11, 3.12, 3.13" in message and "/usr/bin/python3.10 is Python 3.10.13" in message
    assert "PYTHON=python3.11" in message


def test_the_check_script_exits_zero_on_this_interpreter():
    result = subprocess.run([sys.executable, str(ROOT / "scripts/check_python.py")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def pins(lock: str) -> dict[str, str]:
    text = (ROOT / lock).read_text()
    return {name.lower(): version for name, version in re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", text, re.M)}


def test_quickstart_locks_hold_no_maintainer_tool_and_agree_with_the_dev_lock():
    test_lock = pins("requirements-test.lock")
    assert "pip-audit" not in test_lock and "pip-tools" not in test_lock and "cachecontrol" not in test_lock
    assert pins("requirements.lock").items() <= test_lock.items()
    assert pins("requirements-pip.lock") == {"pip": pins("requirements-dev.lock")["pip"]}
