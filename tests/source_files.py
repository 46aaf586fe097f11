"""Python source parsed, for the tests that read the project's own code (layers, error types)."""

import ast
from pathlib import Path


def parsed(path: Path) -> ast.Module:
    """The module's syntax tree.

    Python 3.11's ast.parse can raise a spurious SystemError ("AST constructor recursion depth
    mismatch") when another thread of the process compiles code at the same moment, as a test's
    server thread importing a module does: the parse is simply made again."""
    for attempt in range(3):
        try:
            return ast.parse(path.read_text(), str(path))
        except SystemError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")
