"""How many examples the property tests (Hypothesis, schemathesis) generate.

Two Hypothesis profiles, registered and loaded in tests/conftest.py:
- `fast`, the default (`make test`, `make test-fast`): max_examples=10;
- `ci`, selected with HYPOTHESIS_PROFILE=ci (.ci/run sets it): max_examples=100, Hypothesis' own default.

A property test states how many examples it runs under `ci` as `examples(n)`; under `fast` it runs
a tenth of them (at least 2). A test that states none runs the profile's max_examples.
"""

from hypothesis import settings


def examples(ci: int) -> int:
    """`ci` examples under the `ci` profile, scaled by the loaded profile's max_examples otherwise."""
    return max(2, ci * settings.default.max_examples // 100)
