"""Which packages the wheel installs (the rest of the metadata is in pyproject.toml).

One top-level package, factrecall_bench, with every subpackage found under factrecall_bench/.
What the checkout keeps at its top level goes inside it: tui/ as factrecall_bench.tui, and copies
of baselines/ and configs/accelerate/ under factrecall_bench/shipped/ (the top-level folders stay
the source of truth; factrecall_bench/resources.py says which copy a command uses).
"""

from setuptools import find_packages, setup

FROM_TOP_LEVEL = {
    "factrecall_bench.tui": "tui",
    "factrecall_bench.shipped.baselines": "baselines",
    "factrecall_bench.shipped.configs.accelerate": "configs/accelerate",
}
DATA_ONLY = ["factrecall_bench.data.pools", "factrecall_bench.suites"]

setup(
    packages=[*find_packages(include=["factrecall_bench", "factrecall_bench.*"]), *DATA_ONLY,
              *FROM_TOP_LEVEL],
    package_dir=FROM_TOP_LEVEL,
)
