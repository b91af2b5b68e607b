"""The matcher back-ends the rule tests run on.

Each is skipped where it is not installed, except the native recall core when
``CALLQC_REQUIRE_NATIVE=1`` (``.ci/run`` sets it): there a missing build fails the tests.
"""

from __future__ import annotations

import os

import pytest

from callqc.rules.matcher import hyperscan_available
from callqc.rules.native import native_available

NATIVE = "hyperscan-native"
REQUIRE_NATIVE = os.environ.get("CALLQC_REQUIRE_NATIVE") == "1"
needs_hyperscan = pytest.mark.skipif(not hyperscan_available(), reason="hyperscan not importable")
needs_native = pytest.mark.skipif(
    not native_available() and not REQUIRE_NATIVE, reason="native recall core not built (needs libhyperscan-dev)"
)
BACKENDS = [
    "aho-corasick",
    pytest.param("hyperscan", marks=needs_hyperscan),
    pytest.param(NATIVE, marks=needs_native),
]
HYPERSCAN_BACKENDS = [pytest.param("hyperscan", marks=needs_hyperscan), pytest.param(NATIVE, marks=needs_native)]
