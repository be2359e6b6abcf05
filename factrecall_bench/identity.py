"""What decides a run's numbers besides its settings, so that it is part of the run's key: the
digest of the data it trains on (generator version, shipped pools and templates, data settings)
and, for a pretrained model, the revision of its weights.

Both are known before any work (no data is generated, nothing is downloaded): a change to the
generator or its pools makes new run ids and a new cached dataset, never a silent reuse.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from functools import cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from factrecall_bench.config import (
    DataSpec,
    EvalSpec,
    ModelSpec,
    RunConfig,
    RunIdentity,
    TrainSpec,
    config_hash,
    to_dict,
)
from factrecall_bench.model_families import packaged_presets

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
    packaged = packaged_presets().get(spec.name)
    if packaged is not None:
        return _package_version(packaged.distribution)
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


# ---------------------------------------------------------------------------------------------
# Training identity: what a baseline entry speaks for

STRATEGY_SETTINGS = ("bio_epochs", "qa_epochs", "qa_share", "replay_share", "lr", "stage2_lr")
"""Train settings a strategy reads through its phases: the resolved phases stand for them, so a
setting the strategy never reads (two-stage's `stage2_lr` for mixed) leaves its identity alone."""
BOOKKEEPING_SETTINGS = ("log_every", "checkpoint_every", "divergence_loss")
"""Train settings that never change a trained weight or an answer (a diverged run has none)."""
ANSWER_EVAL_SETTINGS = ("max_questions", "batch_size")
"""Eval settings that change which questions are answered, or (padding) how."""


def training_identity(config: RunConfig | Mapping[str, Any]) -> str:
    """sha256 of what decides a run's trained model and its answers: the data digest, the model
    (settings and resolved revision), the strategy's resolved phases, the other train settings,
    the eval settings that change answers, and the seed. Not the suite's or variant's name, the
    strategy's name, the trace, claims or regression settings. A setting at its default is left
    out, so adding a setting with a default keeps every identity. `config` is a RunConfig or its
    dict (result.json's `config`)."""
    return config_hash(training_settings(config))


def reuse_identity(config: RunConfig) -> str:
    """sha256 of everything that decides a finished run's result.json: its training identity
    plus the settings that change what is recorded beside the answers (logging and checkpoint
    cadence, every eval setting, the trace settings). Equal for two configs means a run finished
    for one stands for the other: the suite's, variant's and strategy's names are not in it, nor
    a setting the strategy never reads (two-stage's `stage2_lr` for mixed)."""
    values = to_dict(config)
    recorded = {key: value for key, value in values["train"].items()
                if key not in STRATEGY_SETTINGS}
    return config_hash({"training": training_settings(config), "train": recorded,
                        "eval": values["eval"], "trace": values["trace"]})


def training_settings(config: RunConfig | Mapping[str, Any]) -> dict[str, Any]:
    """What `training_identity` hashes, readable (missing tables read as their defaults)."""
    values = to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
    revision = dict(values.get("identity") or {})
    train = _changed(values.get("train"), TrainSpec(), STRATEGY_SETTINGS + BOOKKEEPING_SETTINGS)
    evaluation = _changed(values.get("eval"), EvalSpec(), ())
    return {
        "data": revision.get("data") or _changed(values.get("data"), DataSpec(), ()),
        "model": _changed(values.get("model"), ModelSpec(), ()),
        "model_revision": revision.get("model_revision", ""),
        "phases": list(values.get("phases") or []),
        "train": train,
        "eval": {key: evaluation[key] for key in ANSWER_EVAL_SETTINGS if key in evaluation},
        "seed": values.get("seed"),
    }


def _changed(table: Any, defaults: Any, left_out: tuple[str, ...]) -> dict[str, Any]:
    """The table's settings that differ from their defaults, less `left_out`."""
    default_values = to_dict(defaults)
    return {key: value for key, value in dict(table or {}).items()
            if key not in left_out and default_values.get(key, _MISSING) != value}


_MISSING = object()
