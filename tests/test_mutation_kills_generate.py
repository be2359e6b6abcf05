"""Tests written for the survivors of mutation testing of factrecall_bench/data/generate.py
(docs/mutation.md, third round): the P_train/P_test split (every OOD question belongs to a P_test
person, every ID question to a P_train one, sizes at their clamps), the people drawn (unique
names decoded from the pools, genders of the first name, attributes in their ranges, a company with
its own city), the templates chosen, the rendered biographies and their offsets, and the QA rows."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from factrecall_bench.config import DataSpec
from factrecall_bench.data import generate as gen
from factrecall_bench.data.pools import ATTRIBUTES, MONTHS, QA_FORMS, load_pools
from factrecall_bench.errors import UserError

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
