"""A run's identity beyond its settings (issue 17): the digest of its data (generator version,
pools and templates, data settings) and an `hf:` model's resolved revision are in its key and its
result, so a changed generator or model never silently reuses old runs or cached data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import constants

from factrecall_bench import identity
from factrecall_bench.config import DataSpec, ModelSpec, config_hash
from factrecall_bench.data.dataset import SPLITS, dataset_dir
from factrecall_bench.errors import UserError
from factrecall_bench.runfolder import run_config_dict, run_config_from_dict
from factrecall_bench.suite import expand_suite, load_suite
from tests.conftest import TESTS

GENERATED = {1: "888e250606f3c60fc999a6a6d7bb6402bc58b706ebf7cbcb579436dafa7ffc43"}
"""GENERATOR_VERSION -> sha256 of the small spec's generated rows (tests/conftest.py small_spec)."""
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40


def test_the_generators_output_is_pinned_to_its_version(small_dataset):
    rows = {split: small_dataset[split].to_list() for split in SPLITS}
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    assert digest == GENERATED.get(identity.GENERATOR_VERSION), (
        "the generator's output changed: bump identity.GENERATOR_VERSION (new run ids, new cached "
        "data) and pin the new digest here")


def test_a_new_generator_version_or_pool_makes_new_runs_and_new_cached_data(monkeypatch, tmp_path):
    suite = load_suite("cpu")
    before = [config.run_id for config in expand_suite(suite)]
    folder = dataset_dir(tmp_path, expand_suite(suite)[0].data)
    monkeypatch.setattr(identity, "GENERATOR_VERSION", identity.GENERATOR_VERSION + 1)
    assert not set(before) & {config.run_id for config in expand_suite(suite)}
    assert dataset_dir(tmp_path, expand_suite(suite)[0].data) != folder
    monkeypatch.undo()
    monkeypatch.setattr(identity, "pools_digest", lambda: "another pool")
    assert not set(before) & {config.run_id for config in expand_suite(suite)}


def test_the_data_digest_follows_the_settings_and_the_shipped_pools():
    spec = DataSpec()
    assert identity.data_digest(spec) == identity.data_digest(DataSpec())
    assert identity.data_digest(spec) != identity.data_digest(DataSpec(seed=1))
    assert len(identity.pools_digest()) == 64


def test_the_result_holds_the_identity_and_config_json_keeps_it():
    config = expand_suite(load_suite("cpu"))[0]
    document = run_config_dict(config)
    assert document["identity"] == {"data": identity.data_digest(config.data),
                                    "model_revision": ""}
    rebuilt = run_config_from_dict(json.loads(json.dumps(document)))
    assert config_hash(rebuilt) == config_hash(config) and rebuilt.run_id == config.run_id


def _cache(root: Path, repo: str, refs: dict[str, str]) -> None:
    folder = root / f"models--{repo.replace('/', '--')}" / "refs"
    folder.mkdir(parents=True)
    for name, commit in refs.items():
        (folder / name).write_text(commit + "\n")


def test_an_hf_models_revision_comes_from_the_pin_or_the_local_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    _cache(tmp_path, "org/model", {"main": COMMIT_A, "v1": COMMIT_B})
    assert identity.model_revision(ModelSpec(name="hf:org/model")) == COMMIT_A
    assert identity.model_revision(ModelSpec(name="hf:org/model", revision="v1")) == COMMIT_B
    pinned = "c" * 40
    assert identity.model_revision(ModelSpec(name="hf:org/model", revision=pinned)) == pinned
    assert identity.model_revision(ModelSpec(name="hf:org/absent")) == ""
    assert identity.model_revision(ModelSpec(name="hf:org/absent", revision="v2")) == "v2"
    assert identity.model_revision(ModelSpec(name="tiny-llama")) == ""
    assert identity.model_revision(ModelSpec(name=f"hf:{tmp_path}")) == ""  # a local folder


def test_a_new_snapshot_in_the_cache_makes_new_runs(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    suite_file = tmp_path / "hf.toml"
    suite_file.write_text('name = "hf"\nstrategies = ["mixed"]\nmodels = ["hf:org/model"]\n')
    _cache(tmp_path, "org/model", {"main": COMMIT_A})
    [first] = expand_suite(load_suite(str(suite_file)))
    (tmp_path / "models--org--model" / "refs" / "main").write_text(COMMIT_B)
    [second] = expand_suite(load_suite(str(suite_file)))
    assert (first.identity.model_revision, second.identity.model_revision) == (COMMIT_A, COMMIT_B)
    assert first.run_id != second.run_id


def test_a_revision_pins_only_hf_models():
    with pytest.raises(UserError, match="revision pins an hf:<id> model"):
        ModelSpec(name="tiny-llama", revision="main")


# Another valid value of every data setting (than the cpu suite's), written by hand, not read from
# DataSpec: a new setting fails the first assertion until it is listed here.
OTHER_DATA = {"n_people": 201, "seed": 1, "train_fraction": 0.6, "bio_variants": 2,
              "permute": False, "fullname": False, "templates_per_attribute": 3}
OTHER_MODEL = {"n_layer": 3, "d_model": 64, "n_head": 8, "d_ff": 256}
OTHER_TRAIN = {"bio_epochs": 8.0, "qa_epochs": 4.0, "lr": 2e-3, "batch_size": 16, "grad_accum": 2,
               "weight_decay": 0.0, "warmup_fraction": 0.1, "min_lr_fraction": 0.2,
               "clip_norm": 0.5, "bio_loss": "values", "packing": True}


def test_every_data_setting_changes_the_data_digest_and_the_run_id():
    import dataclasses

    assert set(OTHER_DATA) == {f.name for f in dataclasses.fields(DataSpec)}
    base = expand_suite(load_suite("cpu"))[0]
    digests = {identity.data_digest(base.data)}
    run_ids = {base.run_id}
    for name, value in OTHER_DATA.items():
        assert getattr(base.data, name) != value, name
        data = dataclasses.replace(base.data, **{name: value})
        changed = dataclasses.replace(base, data=data, identity=identity.run_identity(data,
                                                                                      base.model))
        digests.add(identity.data_digest(data))
        run_ids.add(changed.run_id)
    assert len(digests) == len(run_ids) == len(OTHER_DATA) + 1


@pytest.mark.parametrize(("table", "other"), [("model", OTHER_MODEL), ("train", OTHER_TRAIN)])
def test_model_and_train_settings_that_change_the_numbers_change_the_run_id(tmp_path, table,
                                                                            other):
    """Through the suite parser, as a user writes them: one setting at a time under [model] or
    [train] of a suite, each a new run id."""
    text = (TESTS / "data" / "suites" / "micro.toml").read_text()
    run_ids = set()
    for key, value in {"": None, **other}.items():
        lines = "" if not key else f"{key} = {json.dumps(value)}\n"
        written = tmp_path / f"s-{table}-{key or 'base'}.toml"
        written.write_text(text.replace(f"[{table}]\n", f"[{table}]\n{lines}", 1)
                           if f"\n{key} =" not in text else _replaced(text, key, value))
        (config,) = expand_suite(load_suite(str(written)))
        if key:
            assert getattr(getattr(config, table), key) == value, key
        run_ids.add(config.run_id)
    assert len(run_ids) == len(other) + 1


def _replaced(text: str, key: str, value: object) -> str:
    import re

    return re.sub(rf"(?m)^{key} = .*$", f"{key} = {json.dumps(value)}", text)


def test_the_training_identity_is_what_trains_not_the_suite_or_its_trace():
    """Issue 29: a baseline entry speaks for the runs trained as it was, whatever suite listed
    them, whatever the trace; a setting the strategy never reads leaves its identity alone."""
    plain = {(c.strategy, c.seed): identity.training_identity(c)
             for c in expand_suite(load_suite("cpu"))}
    lower_stage2 = {(c.strategy, c.seed): identity.training_identity(c)
                    for c in expand_suite(load_suite("cpu", ["train.stage2_lr=3e-4"]))}
    assert lower_stage2[("mixed", 0)] == plain[("mixed", 0)]  # mixed never reads stage2_lr
    assert lower_stage2[("two-stage", 0)] != plain[("two-stage", 0)]
    assert plain[("mixed", 0)] != plain[("mixed", 1)]  # the seed is part of it
    config = expand_suite(load_suite("cpu"))[0]
    renamed = dataclasses.replace(config, suite="mine", variant="v", trace={"enabled": False})
    assert identity.training_identity(renamed) == identity.training_identity(config)
    bookkeeping = dataclasses.replace(config, train=dataclasses.replace(
        config.train, log_every=1, checkpoint_every=7))
    assert identity.training_identity(bookkeeping) == identity.training_identity(config)
    batch = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=8))
    assert identity.training_identity(batch) != identity.training_identity(config)
    stored = json.loads(json.dumps(run_config_dict(config)))  # as result.json holds it
    assert identity.training_identity(stored) == identity.training_identity(config)
