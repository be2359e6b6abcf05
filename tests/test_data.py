"""The bioS-style generator: determinism, splits, augmentations, validation, bad input."""

from __future__ import annotations

import re

import datasets
import pytest

from factrecall_bench.config import DataSpec
from factrecall_bench.data.dataset import content_digest, ensure_dataset, save_dataset
from factrecall_bench.data.generate import build_corpus
from factrecall_bench.data.pools import ATTRIBUTES, load_pools
from factrecall_bench.errors import UserError
from tests.conftest import run_cli

PRONOUN = re.compile(r"\b(she|he|her|his|him|She|He|Her|His|Him)\b")


def test_pools_have_bios_sizes():
    pools = load_pools()
    sizes = (len(pools.first_names), len(pools.middle_names), len(pools.last_names),
             len(pools.birth_cities), len(pools.universities), len(pools.majors),
             len(pools.companies))
    assert sizes == (400, 400, 1000, 200, 300, 100, 263)
    assert all(len(pools.templates[a]) >= 20 for a in ATTRIBUTES)


def test_same_spec_same_bytes_and_other_seed_differs(tmp_path, small_spec, small_dataset):
    save_dataset(small_dataset, small_spec, tmp_path / "a")
    save_dataset(small_dataset.__class__(small_dataset), small_spec, tmp_path / "b")
    from factrecall_bench.data.dataset import generate_dataset

    save_dataset(generate_dataset(small_spec), small_spec, tmp_path / "c")
    other = DataSpec(**{**small_spec.__dict__, "seed": small_spec.seed + 1})
    save_dataset(generate_dataset(other), other, tmp_path / "d")
    digests = [content_digest(tmp_path / name / "dataset") for name in "abcd"]
    assert digests[0] == digests[1] == digests[2]
    assert digests[3] != digests[0]


def test_saved_folder_loads_with_plain_datasets(tmp_path, small_spec):
    folder = ensure_dataset(small_spec, tmp_path)
    loaded = datasets.load_from_disk(str(folder / "dataset"))
    assert set(loaded) == {"people", "bio", "qa_train", "qa_test"}
    assert len(loaded["bio"]) == small_spec.n_people * small_spec.bio_variants
    assert ensure_dataset(small_spec, tmp_path) == folder  # cached: same folder


def test_splits_are_disjoint_and_complete(small_dataset, small_spec):
    people = small_dataset["people"]
    train = {p for p, g in zip(people["person_id"], people["group"]) if g == "train"}
    test = {p for p, g in zip(people["person_id"], people["group"]) if g == "test"}
    assert train.isdisjoint(test) and len(train | test) == small_spec.n_people
    assert len(train) == round(small_spec.n_people * small_spec.train_fraction)
    assert set(small_dataset["qa_train"]["person_id"]) == train
    assert set(small_dataset["qa_test"]["person_id"]) == test
    assert len(set(people["full_name"])) == small_spec.n_people
    for split in ("qa_train", "qa_test"):
        per_person = {}
        for person, attribute in zip(small_dataset[split]["person_id"],
                                     small_dataset[split]["attribute"]):
            per_person.setdefault(person, set()).add(attribute)
        assert all(attributes == set(ATTRIBUTES) for attributes in per_person.values())


def test_every_value_stands_at_its_offsets(small_dataset):
    people = small_dataset["people"]
    for row in small_dataset["bio"]:
        person = people[row["person_id"]]
        for attribute, start, end in zip(ATTRIBUTES, row["value_starts"], row["value_ends"]):
            assert row["text"][start:end] == person[attribute]
    for split in ("qa_train", "qa_test"):
        for row in small_dataset[split]:
            assert row["answer"] == people[row["person_id"]][row["attribute"]]
            assert people[row["person_id"]]["full_name"] in row["prompt"]


def test_dates_follow_bios():
    corpus = build_corpus(DataSpec(n_people=300, seed=1), load_pools())
    for date in corpus.people.attributes["birth_date"]:
        month, day, year = re.fullmatch(r"([A-Z][a-z]+) (\d+), (\d{4})", date).groups()
        assert 1 <= int(day) <= 28 and 1900 <= int(year) <= 2099


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.) (?=[A-Z])", text) if s]


def test_multi_m_gives_distinct_biographies():
    spec = DataSpec(n_people=20, seed=0, bio_variants=5)
    corpus = build_corpus(spec, load_pools())
    texts = corpus.bio["text"]
    for person in range(spec.n_people):
        variants = texts[person * 5:(person + 1) * 5]
        assert len(set(variants)) == 5


def test_permute_shuffles_order_and_keeps_name_first():
    fixed = build_corpus(DataSpec(n_people=30, seed=0, bio_variants=2), load_pools())
    shuffled = build_corpus(DataSpec(n_people=30, seed=0, bio_variants=2, permute=True), load_pools())
    fixed_orders = {tuple(sorted(range(6), key=lambda i: starts[i]))
                    for starts in fixed.bio["value_starts"]}
    assert fixed_orders == {tuple(range(6))}
    shuffled_orders = {tuple(sorted(range(6), key=lambda i: starts[i]))
                       for starts in shuffled.bio["value_starts"]}
    assert len(shuffled_orders) > 10
    for text, person in zip(shuffled.bio["text"], shuffled.bio["person_id"]):
        assert shuffled.people.full_names[person] in _sentences(text)[0]


def test_pronouns_by_default_and_full_name_when_asked():
    plain = build_corpus(DataSpec(n_people=20, seed=0), load_pools())
    named = build_corpus(DataSpec(n_people=20, seed=0, fullname=True), load_pools())
    assert all(PRONOUN.search(text) for text in plain.bio["text"])
    for text, person in zip(named.bio["text"], named.bio["person_id"]):
        name = named.people.full_names[person]
        assert all(name in sentence for sentence in _sentences(text))
        assert not PRONOUN.search(text.replace(name, ""))


def test_pronouns_match_gender():
    corpus = build_corpus(DataSpec(n_people=60, seed=2), load_pools())
    for text, person in zip(corpus.bio["text"], corpus.bio["person_id"]):
        wrong = r"\b(he|him|his|He|His|Him)\b" if corpus.people.genders[person] == "F" \
            else r"\b(she|her|She|Her)\b"
        assert not re.search(wrong, text.replace(corpus.people.full_names[person], ""))


@pytest.mark.parametrize("values", [
    {"n_people": 0}, {"n_people": -3}, {"train_fraction": 0.0}, {"train_fraction": 1.0},
    {"bio_variants": 0}])
def test_bad_specs_are_user_errors(values):
    with pytest.raises(UserError):
        DataSpec(**values)


def test_more_people_than_names_is_a_user_error():
    with pytest.raises(UserError, match="exceeds"):
        build_corpus(DataSpec(n_people=400 * 400 * 1000 + 1), load_pools())


@pytest.mark.parametrize("args, message", [
    (["--people", "0"], "--people"), (["--people", "-5"], "--people"),
    (["--people", "160000001"], "exceeds"), (["--train-fraction", "1.5"], "--train-fraction"),
])
def test_cli_bad_input_one_line_exit_2(tmp_path, args, message):
    result = run_cli("data", "generate", "--out", str(tmp_path / "d"), *args)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "d").exists()


def test_cli_unwritable_output_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run_cli("data", "generate", "--out", str(locked / "d"), "--people", "10")
    finally:
        locked.chmod(0o700)
    import os

    if os.geteuid() == 0:  # root ignores permission bits; use a path under a file instead
        blocker = tmp_path / "file"
        blocker.write_text("x")
        result = run_cli("data", "generate", "--out", str(blocker / "d"), "--people", "10")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_generate_and_show_json(tmp_path):
    import json

    out = tmp_path / "data"
    made = run_cli("data", "generate", "--out", str(out), "--people", "12", "--variants", "2",
                   "--permute", "--json")
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["counts"] == {"people": 12, "bio": 24, "qa_train": 36,
                                                 "qa_test": 36}
    shown = run_cli("data", "show", str(out), "--json")
    description = json.loads(shown.stdout)
    assert description["attribute_spread"]["company"]["distinct"] >= 2


@pytest.mark.parametrize("max_questions", [0, 7])
def test_each_metric_reads_the_people_and_questions_the_datasets_columns_name(tmp_path,
                                                                              max_questions):
    """Which people each BIO recall reads and which questions ID and OOD exact match read, checked
    against the saved dataset's own columns: a person's `group`, a biography's `person_id` and
    `variant`, the rows of qa_train and qa_test (the first max_questions of each)."""
    import dataclasses

    from factrecall_bench.data.dataset import load_saved_dataset
    from factrecall_bench.data.facts import load_fact_data
    from factrecall_bench.suite import load_suite
    from tests.conftest import MICRO_SUITE

    (config,) = load_suite(str(MICRO_SUITE)).runs
    evaluation = dataclasses.replace(config.eval, max_questions=max_questions)
    data = load_fact_data(config.data, config.model, evaluation, tmp_path)
    dataset = load_saved_dataset(ensure_dataset(config.data, tmp_path))
    group = dict(zip(dataset["people"]["person_id"], dataset["people"]["group"], strict=True))
    assert set(group.values()) == {"train", "test"}
    bios = dataset["bio"]
    first_bio_of = {}
    for row, (person, variant) in enumerate(zip(bios["person_id"], bios["variant"], strict=True)):
        if variant == 0:
            first_bio_of[person] = row
    for wanted, people in (("train", data.bio_train_people), ("test", data.bio_test_people)):
        ids = [item.person_id for item in people]
        assert sorted(ids) == sorted(p for p, g in group.items() if g == wanted)
        assert len(set(ids)) == len(ids)
        for item in people:  # the person's first biography (variant 0), not another variant
            assert item.input_ids == data.bio_all[first_bio_of[item.person_id]].input_ids
    for split, wanted, items in (("qa_train", "train", data.id_questions),
                                 ("qa_test", "test", data.ood_questions)):
        rows = dataset[split]
        expected = rows["question_id"][:max_questions or None]
        assert [item.question_id for item in items] == expected
        assert {group[p] for p in rows["person_id"]} == {wanted}
    assert len(data.bio_all) == len(bios)
