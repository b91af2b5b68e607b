"""Build the optional C recall core (callqc/rules/_recall.c) against the system Hyperscan.

Everything else lives in pyproject.toml. Without ``libhyperscan-dev`` (``hs/hs.h`` and ``libhs``) the
extension is skipped and the rule engine falls back to the Python Hyperscan binding.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "callqc.rules._recall",
            sources=["callqc/rules/_recall.c"],
            libraries=["hs"],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wextra", "-Wno-missing-field-initializers"],
            optional=True,
        )
    ]
)
