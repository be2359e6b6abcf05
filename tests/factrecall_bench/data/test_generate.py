"""The bioS-style generator: determinism, splits, augmentations, validation, bad input."""

from __future__ import annotations

import dataclasses
import re

import datasets
import numpy as np
import pytest

from factrecall_bench.config import DataSpec
from factrecall_bench.data import generate as gen
from factrecall_bench.data.dataset import content_digest, ensure_dataset, save_dataset
from factrecall_bench.data.generate import build_corpus
from factrecall_bench.data.pools import ATTRIBUTES, MONTHS, QA_FORMS, load_pools
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


@pytest.mark.slow
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


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Tests written for the survivors of mutation testing of factrecall_bench/data/generate.py
# (docs/mutation.md, third round): the P_train/P_test split (every OOD question belongs to a P_test person,
# every ID question to a P_train one, sizes at their clamps), the people drawn (unique names decoded from
# the pools, genders of the first name, attributes in their ranges, a company with its own city), the
# templates chosen, the rendered biographies and their offsets, and the QA rows.


POOLS = load_pools()


def _corpus(**spec):
    return gen.build_corpus(DataSpec(**{"n_people": 12, "seed": 5, **spec}), POOLS)


@pytest.mark.parametrize("n, fraction, n_train", [
    (2, 0.1, 1), (2, 0.9, 1), (10, 0.5, 5), (10, 0.99, 9), (10, 0.01, 1), (7, 0.5, 4),
    (11, 0.25, 3),
])
def test_the_split_sizes_and_clamps(n, fraction, n_train) -> None:
    spec = DataSpec(n_people=n, train_fraction=fraction)
    in_train = gen._draw_split(spec, np.random.default_rng(0))
    assert in_train.dtype == bool and in_train.shape == (n,)
    assert int(in_train.sum()) == n_train


def test_the_split_is_a_seeded_permutation() -> None:
    spec = DataSpec(n_people=20, train_fraction=0.5)
    expected = np.zeros(20, dtype=bool)
    expected[np.random.default_rng(4).permutation(20)[:10]] = True
    assert gen._draw_split(spec, np.random.default_rng(4)).tolist() == expected.tolist()


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_every_ood_question_belongs_to_a_p_test_person(fraction) -> None:
    corpus = _corpus(train_fraction=fraction, n_people=16)
    in_train = corpus.people.in_train
    train = set(np.flatnonzero(in_train).tolist())
    test = set(np.flatnonzero(~in_train).tolist())
    assert len(train) == round(16 * fraction) and train.isdisjoint(test)
    assert set(corpus.qa_test["person_id"]) == test
    assert set(corpus.qa_train["person_id"]) == train
    for columns, group in ((corpus.qa_test, test), (corpus.qa_train, train)):
        assert len(columns["question_id"]) == len(group) * len(ATTRIBUTES)
        for qid, person, attribute, prompt, answer in zip(
                columns["question_id"], columns["person_id"], columns["attribute"],
                columns["prompt"], columns["answer"]):
            assert person in group
            assert qid == f"p{person}/{attribute}"
            name = corpus.people.full_names[person]
            assert prompt == QA_FORMS[attribute].format(name=name) + " Answer:"
            assert answer == corpus.people.attributes[attribute][person]
    # person-major, attributes in canonical order
    assert corpus.qa_test["attribute"][:6] == list(ATTRIBUTES)
    assert corpus.qa_test["person_id"] == sorted(corpus.qa_test["person_id"])


def test_people_are_decoded_from_the_pools() -> None:
    spec = DataSpec(n_people=50, seed=1)
    people = gen.draw_people(spec, POOLS, np.random.default_rng(9))
    rng = np.random.default_rng(9)
    codes = rng.choice(POOLS.max_people, size=50, replace=False)
    n_m, n_l = len(POOLS.middle_names), len(POOLS.last_names)
    expected = [f"{POOLS.first_names[c // (n_m * n_l)]} {POOLS.middle_names[c // n_l % n_m]} "
                f"{POOLS.last_names[c % n_l]}" for c in codes.tolist()]
    assert people.full_names == expected
    assert people.genders == [POOLS.first_name_genders[c // (n_m * n_l)] for c in codes.tolist()]
    assert len(set(people.full_names)) == 50
    assert set(people.attributes) == set(ATTRIBUTES)


def test_attributes_stay_in_their_ranges_and_a_company_keeps_its_city() -> None:
    attributes = gen._draw_attributes(3000, POOLS, np.random.default_rng(2))
    dates = [date.replace(",", "").split() for date in attributes["birth_date"]]
    assert {month for month, _, _ in dates} == set(MONTHS)
    days = {int(day) for _, day, _ in dates}
    years = {int(year) for _, _, year in dates}
    assert min(days) == 1 and max(days) == 28
    assert min(years) == 1900 and max(years) == 2099
    city_of = dict(zip(POOLS.companies, POOLS.company_cities))
    pairs = list(zip(attributes["company"], attributes["company_city"]))
    assert all(city_of[company] == city for company, city in pairs)
    assert set(attributes["company"]) == set(POOLS.companies)  # the first one included
    for attribute, pool in (("birth_city", POOLS.birth_cities), ("university", POOLS.universities),
                            ("major", POOLS.majors)):
        assert set(attributes[attribute]) == set(pool)  # every entry reachable, the last included
    assert all(len(values) == 3000 for values in attributes.values())


def test_check_spec_fits_edges_and_messages() -> None:
    small = dataclasses.replace(POOLS, first_names=("Ann", "Bo"), first_name_genders=("F", "M"),
                                middle_names=("C",), last_names=("D",))
    gen.check_spec_fits(DataSpec(n_people=2), small)
    with pytest.raises(UserError) as caught:
        gen.check_spec_fits(DataSpec(n_people=3), small)
    assert str(caught.value) == "n_people=3 exceeds the 2 unique names the pools allow"
    with pytest.raises(UserError) as caught:
        gen.check_spec_fits(DataSpec(n_people=1), POOLS)
    assert str(caught.value) == "n_people must be at least 2 to split into P_train and P_test"
    fewest = min(len(t) for t in POOLS.templates.values())
    gen.check_spec_fits(DataSpec(templates_per_attribute=fewest), POOLS)
    with pytest.raises(UserError) as caught:
        gen.check_spec_fits(DataSpec(templates_per_attribute=fewest + 1), POOLS)
    assert str(caught.value) == (f"templates_per_attribute={fewest + 1} exceeds the {fewest} "
                                 "templates shipped per attribute")
    uneven = dataclasses.replace(POOLS, templates={**POOLS.templates,
                                                   "major": POOLS.templates["major"][:3]})
    gen.check_spec_fits(DataSpec(templates_per_attribute=3), uneven)
    with pytest.raises(UserError, match="exceeds the 3 templates"):
        gen.check_spec_fits(DataSpec(templates_per_attribute=4), uneven)


def test_templates_chosen() -> None:
    every = gen.choose_templates(DataSpec(), POOLS, np.random.default_rng(0))
    for attribute in ATTRIBUTES:
        texts = POOLS.templates[attribute]
        assert every[attribute] == [gen.Template.parse(text) for text in texts]
    some = gen.choose_templates(DataSpec(templates_per_attribute=3), POOLS,
                                np.random.default_rng(0))
    rng = np.random.default_rng(0)
    for attribute in ATTRIBUTES:
        texts = POOLS.templates[attribute]
        picked = sorted(rng.choice(len(texts), size=3, replace=False).tolist())
        assert some[attribute] == [gen.Template.parse(texts[i]) for i in picked]
    assert gen.Template.parse("{subject} was born in {value}.") == gen.Template(
        "{subject} was born in ", ".")


def test_rendering_offsets_names_and_pronouns() -> None:
    plan = [("birth_city", gen.Template("{possessive} home is ", ".")),
            ("major", gen.Template("{subject} studied ", " with {object}."))]
    values = {"birth_city": "Oslo", "major": "Art"}
    text, offsets = gen.render_biography("Ann Bo Cy", "F", values, plan, fullname=False)
    assert text == "Ann Bo Cy's home is Oslo. She studied Art with her."
    assert offsets == {"birth_city": (20, 24), "major": (38, 41)}
    text, offsets = gen.render_biography("Ann Bo Cy", "M", values, plan[::-1], fullname=True)
    assert text == "Ann Bo Cy studied Art with Ann Bo Cy. Ann Bo Cy's home is Oslo."
    assert offsets == {"major": (18, 21), "birth_city": (58, 62)}
    text, _ = gen.render_biography("Ann Bo Cy", "M", values, plan, fullname=False)
    assert text == "Ann Bo Cy's home is Oslo. He studied Art with him."
    lower = [("company", gen.Template("{subject} joined ", "soft as {possessive} first job."))]
    text, offsets = gen.render_biography("Ann Bo Cy", "F", {"company": "Micro"}, lower, False)
    assert text == "Ann Bo Cy joined Microsoft as Ann Bo Cy's first job."  # not "MicroSoft"
    assert offsets == {"company": (17, 22)}
    assert gen._fill("{subject} x", {"subject": "he"}, at_start=False) == "he x"
    assert gen._fill("", {}, at_start=True) == ""
    assert gen._person_forms("A", "M", use_name=False) == {"subject": "he",
                                                           "possessive": "his", "object": "him"}
    assert gen._person_forms("A", "F", use_name=True) == {"subject": "A", "possessive": "A's",
                                                          "object": "A"}
    with pytest.raises(AssertionError) as caught:
        gen.validate_biography("x Oslo", {"birth_city": "Oslo"}, {"birth_city": (1, 5)})
    assert str(caught.value) == "value of birth_city not at its offsets in: 'x Oslo'"
    gen.validate_biography("x Oslo", {"birth_city": "Oslo"}, {"birth_city": (2, 6)})


def test_variant_templates_and_sentence_orders() -> None:
    chosen = gen._variant_templates(50, 4, 3, np.random.default_rng(0))
    assert chosen.shape == (50, 3)
    assert all(len(set(row)) == 3 for row in chosen.tolist())
    cycling = gen._variant_templates(20, 2, 5, np.random.default_rng(0))
    assert all(row[0] == row[2] == row[4] and row[1] == row[3] != row[0]
               for row in cycling.tolist())
    plain = gen._sentence_orders(DataSpec(n_people=3, bio_variants=2), np.random.default_rng(0))
    assert plain.shape == (3, 2, 6) and (plain == np.arange(6)).all()
    shuffled = gen._sentence_orders(DataSpec(n_people=30, bio_variants=2, permute=True),
                                    np.random.default_rng(0))
    assert shuffled.shape == (30, 2, 6)
    assert all(sorted(order) == list(range(6)) for order in shuffled.reshape(-1, 6).tolist())
    assert not (shuffled == np.arange(6)).all()


def test_bio_columns_rows_and_offsets() -> None:
    corpus = _corpus(bio_variants=3, n_people=5)
    bio = corpus.bio
    assert bio["person_id"] == [p for p in range(5) for _ in range(3)]
    assert bio["variant"] == [0, 1, 2] * 5
    for person, text, starts, ends in zip(bio["person_id"], bio["text"], bio["value_starts"],
                                          bio["value_ends"]):
        for attribute, start, end in zip(ATTRIBUTES, starts, ends):
            assert text[start:end] == corpus.people.attributes[attribute][person]
        name = corpus.people.full_names[person]
        assert text.count(name) == 1 and text.index(name) < starts[1]  # once, first sentence
    assert len(set(bio["text"][:3])) == 3


def test_progress_is_reported_every_5000_people_and_at_the_end() -> None:
    calls: list[tuple[int, int]] = []
    gen.build_corpus(DataSpec(n_people=5001, templates_per_attribute=1), POOLS,
                     lambda done, total: calls.append((done, total)))
    assert calls == [(5000, 5001), (5001, 5001)]
    calls.clear()
    gen.build_corpus(DataSpec(n_people=4), POOLS, lambda d, t: calls.append((d, t)))
    assert calls == [(4, 4)]


def test_the_corpus_is_seeded_and_uses_the_spec_seed() -> None:
    a, b, c = _corpus(), _corpus(), _corpus(seed=6)
    assert a.bio == b.bio and a.people.full_names == b.people.full_names
    assert a.people.full_names != c.people.full_names
    rng = np.random.default_rng(5)
    gen.choose_templates(DataSpec(n_people=12, seed=5), POOLS, rng)
    people = gen.draw_people(DataSpec(n_people=12, seed=5), POOLS, rng)
    assert people.full_names == a.people.full_names
    assert people.in_train.tolist() == a.people.in_train.tolist()
