"""Files a checkout keeps at its top level (baselines/, configs/accelerate/) and a wheel ships inside
the package (factrecall_bench/shipped/): which copy the commands use.

Run from a checkout (the source tree or an editable install), the checkout's own folders are used,
so `baseline update` writes where a developer commits. Installed from a wheel, the shipped copies
are used (read-only). A command's `--baselines-dir` always wins.
"""

from __future__ import annotations

from pathlib import Path

from factrecall_bench.errors import UserError

PACKAGE_DIR = Path(__file__).resolve().parent
SHIPPED_DIR = PACKAGE_DIR / "shipped"
ACCELERATE_CONFIGS = ("ddp", "fsdp2", "ddp-multinode", "fsdp2-multinode")


def checkout_root() -> Path | None:
    """The checkout this package is imported from, or None when it is installed from a wheel."""
    root = PACKAGE_DIR.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and 'name = "factrecall-bench"' in pyproject.read_text(encoding="utf-8"):
        return root
    return None


def project_path(relative: str) -> Path:
    """`relative` (a top-level folder of the checkout) in the checkout, else its shipped copy."""
    root = checkout_root()
    return (root if root is not None else SHIPPED_DIR) / relative


def default_baselines_dir() -> Path:
    """The checkout's baselines/ when the package runs from a checkout, else the shipped copy."""
    return project_path("baselines")


def check_writable_baselines_dir(baselines_dir: Path) -> None:
    """Refuse to write into the baselines shipped inside an installed wheel (a reinstall would lose
    them, and site-packages is often read-only): there, `--baselines-dir` says where."""
    if baselines_dir.resolve().is_relative_to(SHIPPED_DIR):
        raise UserError(f"{baselines_dir} holds the baselines shipped with the installed package; "
                        "give --baselines-dir DIR to write your own (and the same DIR to run and check)")


def accelerate_config(name: str) -> Path:
    """The accelerate config file `configs/accelerate/NAME.yaml` (ddp or fsdp2)."""
    path = project_path("configs/accelerate") / f"{name}.yaml"
    if name not in ACCELERATE_CONFIGS or not path.is_file():
        raise UserError(f"no accelerate config {name!r}; choose one of {', '.join(ACCELERATE_CONFIGS)}")
    return path
