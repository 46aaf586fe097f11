"""Refuses, in one clear line, an interpreter the gateway does not support (run before the venv is made).

Written for any Python 3 (no f-strings): it must run on the interpreter it is about to refuse."""

import sys

SUPPORTED = ((3, 11), (3, 12), (3, 13))


def problem(version, executable):
    """The sentence to print when `version` is not supported, else None."""
    if tuple(version[:2]) in SUPPORTED:
        return None
    found = ".".join(str(part) for part in version[:3])
    names = ", ".join("{}.{}".format(*supported) for supported in SUPPORTED)
    return (
        "The gateway runs on Python {}; {} is Python {}.\n"
        "Run it with a supported one, for example: make run PYTHON=python3.11"
    ).format(names, executable, found)


if __name__ == "__main__":
    message = problem(sys.version_info, sys.executable)
    if message:
        sys.stderr.write(message + "\n")
        sys.exit(1)
