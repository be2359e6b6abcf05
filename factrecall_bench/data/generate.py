"""bioS-style people, biographies (BIO) and questions (QA), all drawn from one seeded generator.

Every example is validated as it is made: each attribute value stands verbatim at its recorded
offsets in its biography, and each QA answer is the person's attribute value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from factrecall_bench.config import DataSpec
from factrecall_bench.data.pools import ATTRIBUTES, MONTHS, QA_FORMS, Pools
from factrecall_bench.errors import UserError

ProgressCallback = Callable[[int, int], None]

PRONOUNS = {"F": {"subject": "she", "possessive": "her", "object": "her"},
            "M": {"subject": "he", "possessive": "his", "object": "him"}}


@dataclass(frozen=True)
class People:
    """Columns of the people table; row i is person_id i."""

    full_names: list[str]
    genders: list[str]
    attributes: dict[str, list[str]]
    in_train: np.ndarray
    """Boolean per person: True for P_train (QA trained), False for P_test (OOD)."""


@dataclass(frozen=True)
class Template:
    """A BIO template split around its value, with the person placeholder still in place."""

    before: str
    after: str

    @classmethod
    def parse(cls, text: str) -> Template:
        before, after = text.split("{value}")
        return cls(before, after)


def check_spec_fits(spec: DataSpec, pools: Pools) -> None:
    """Refuse, with one line, a spec the pools cannot serve."""
    if spec.n_people > pools.max_people:
        raise UserError(f"n_people={spec.n_people} exceeds the {pools.max_people} unique names "
                        "the pools allow")
    if spec.n_people < 2:
        raise UserError("n_people must be at least 2 to split into P_train and P_test")
    shipped = min(len(templates) for templates in pools.templates.values())
    if spec.templates_per_attribute > shipped:
        raise UserError(f"templates_per_attribute={spec.templates_per_attribute} exceeds the "
                        f"{shipped} templates shipped per attribute")


def draw_people(spec: DataSpec, pools: Pools, rng: np.random.Generator) -> People:
    """Unique full names, genders, six attributes and the P_train/P_test split (the spec is
    checked against the pools by `build_corpus`)."""
    codes = rng.choice(pools.max_people, size=spec.n_people, replace=False)
    n_middle, n_last = len(pools.middle_names), len(pools.last_names)
    first_idx, rest = np.divmod(codes, n_middle * n_last)
    middle_idx, last_idx = np.divmod(rest, n_last)
    full_names = [f"{pools.first_names[f]} {pools.middle_names[m]} {pools.last_names[la]}"
                  for f, m, la in zip(first_idx.tolist(), middle_idx.tolist(), last_idx.tolist())]
    genders = [pools.first_name_genders[f] for f in first_idx.tolist()]
    attributes = _draw_attributes(spec.n_people, pools, rng)
    return People(full_names, genders, attributes, _draw_split(spec, rng))


def _draw_attributes(n: int, pools: Pools, rng: np.random.Generator) -> dict[str, list[str]]:
    months = rng.integers(0, 12, n).tolist()
    days = rng.integers(1, 29, n).tolist()
    years = rng.integers(1900, 2100, n).tolist()
    company_idx = rng.integers(0, len(pools.companies), n).tolist()

    def pick(pool: tuple[str, ...]) -> list[str]:
        return [pool[i] for i in rng.integers(0, len(pool), n).tolist()]

    return {
        "birth_date": [f"{MONTHS[m]} {d}, {y}" for m, d, y in zip(months, days, years)],
        "birth_city": pick(pools.birth_cities),
        "university": pick(pools.universities),
        "major": pick(pools.majors),
        "company": [pools.companies[i] for i in company_idx],
        "company_city": [pools.company_cities[i] for i in company_idx],
    }


def _draw_split(spec: DataSpec, rng: np.random.Generator) -> np.ndarray:
    n_train = min(max(round(spec.n_people * spec.train_fraction), 1), spec.n_people - 1)
    in_train = np.zeros(spec.n_people, dtype=bool)
    in_train[rng.permutation(spec.n_people)[:n_train]] = True
    return in_train


def choose_templates(spec: DataSpec, pools: Pools, rng: np.random.Generator
                     ) -> dict[str, list[Template]]:
    """The templates this dataset draws from (all, or a seeded subset per attribute)."""
    chosen = {}
    for attribute in ATTRIBUTES:
        texts = pools.templates[attribute]
        count = spec.templates_per_attribute or len(texts)
        picked = sorted(rng.choice(len(texts), size=count, replace=False).tolist())
        chosen[attribute] = [Template.parse(texts[i]) for i in picked]
    return chosen


def _fill(part: str, forms: dict[str, str], at_start: bool) -> str:
    text = part.format(**forms)
    return text[:1].upper() + text[1:] if at_start else text


def _person_forms(full_name: str, gender: str, use_name: bool) -> dict[str, str]:
    if use_name:
        return {"subject": full_name, "possessive": f"{full_name}'s", "object": full_name}
    return PRONOUNS[gender]


def render_biography(full_name: str, gender: str, values: dict[str, str],
                     sentence_plan: list[tuple[str, Template]], fullname: bool
                     ) -> tuple[str, dict[str, tuple[int, int]]]:
    """One biography and the (start, end) offsets of each attribute value in it."""
    name_forms = _person_forms(full_name, gender, use_name=True)
    pronoun_forms = name_forms if fullname else _person_forms(full_name, gender, use_name=False)
    pieces: list[str] = []
    offsets: dict[str, tuple[int, int]] = {}
    cursor = 0
    for position, (attribute, template) in enumerate(sentence_plan):
        forms = name_forms if position == 0 else pronoun_forms
        before = _fill(template.before, forms, at_start=True)
        value = values[attribute]
        after = _fill(template.after, forms, at_start=False)
        start = cursor + len(before)
        offsets[attribute] = (start, start + len(value))
        sentence = before + value + after
        pieces.append(sentence)
        cursor += len(sentence) + 1
    return " ".join(pieces), offsets


def validate_biography(text: str, values: dict[str, str],
                       offsets: dict[str, tuple[int, int]]) -> None:
    for attribute, (start, end) in offsets.items():
        if text[start:end] != values[attribute]:
            raise AssertionError(f"value of {attribute} not at its offsets in: {text!r}")


@dataclass(frozen=True)
class Corpus:
    """The generated people and the columns of every split."""

    people: People
    bio: dict[str, list]
    qa_train: dict[str, list]
    qa_test: dict[str, list]


def _variant_templates(n: int, n_templates: int, variants: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """[n, variants] template indices: distinct across one person's variants where possible."""
    ranking = rng.random((n, n_templates)).argsort(axis=1)
    return ranking[:, np.arange(variants) % n_templates]


def _sentence_orders(spec: DataSpec, rng: np.random.Generator) -> np.ndarray:
    shape = (spec.n_people, spec.bio_variants, len(ATTRIBUTES))
    if spec.permute:
        return rng.random(shape).argsort(axis=-1)
    return np.broadcast_to(np.arange(len(ATTRIBUTES)), shape)


def _bio_columns(spec: DataSpec, people: People, templates: dict[str, list[Template]],
                 rng: np.random.Generator, progress: ProgressCallback | None) -> dict[str, list]:
    chosen = {a: _variant_templates(spec.n_people, len(templates[a]), spec.bio_variants, rng)
              for a in ATTRIBUTES}
    orders = _sentence_orders(spec, rng).tolist()
    columns: dict[str, list] = {"person_id": [], "variant": [], "text": [],
                                "value_starts": [], "value_ends": []}
    chosen_lists = {a: chosen[a].tolist() for a in ATTRIBUTES}
    for person in range(spec.n_people):
        values = {a: people.attributes[a][person] for a in ATTRIBUTES}
        for variant in range(spec.bio_variants):
            plan = [(ATTRIBUTES[i], templates[ATTRIBUTES[i]][chosen_lists[ATTRIBUTES[i]][person][variant]])
                    for i in orders[person][variant]]
            text, offsets = render_biography(people.full_names[person], people.genders[person],
                                             values, plan, spec.fullname)
            validate_biography(text, values, offsets)
            columns["person_id"].append(person)
            columns["variant"].append(variant)
            columns["text"].append(text)
            columns["value_starts"].append([offsets[a][0] for a in ATTRIBUTES])
            columns["value_ends"].append([offsets[a][1] for a in ATTRIBUTES])
        if progress is not None and (person + 1) % 5000 == 0:
            progress(person + 1, spec.n_people)
    return columns


def _qa_columns(people: People, in_group: np.ndarray) -> dict[str, list]:
    columns: dict[str, list] = {"question_id": [], "person_id": [], "attribute": [],
                                "prompt": [], "answer": []}
    for person in np.flatnonzero(in_group).tolist():
        for attribute in ATTRIBUTES:
            question = QA_FORMS[attribute].format(name=people.full_names[person])
            columns["question_id"].append(f"p{person}/{attribute}")
            columns["person_id"].append(person)
            columns["attribute"].append(attribute)
            columns["prompt"].append(f"{question} Answer:")
            columns["answer"].append(people.attributes[attribute][person])
    return columns


def build_corpus(spec: DataSpec, pools: Pools, progress: ProgressCallback | None = None) -> Corpus:
    """All splits of one dataset, from one seeded generator."""
    check_spec_fits(spec, pools)
    rng = np.random.default_rng(spec.seed)
    templates = choose_templates(spec, pools, rng)
    people = draw_people(spec, pools, rng)
    bio = _bio_columns(spec, people, templates, rng, progress)
    if progress is not None:
        progress(spec.n_people, spec.n_people)
    return Corpus(people, bio, _qa_columns(people, people.in_train),
                  _qa_columns(people, ~people.in_train))
