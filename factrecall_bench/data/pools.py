"""The attribute pools and BIO templates shipped as package data (bioS sizes)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import resources

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")
"""The six attributes, in the canonical (unpermuted) biography order."""

QA_FORMS = {
    "birth_date": "What is the birth date of {name}?",
    "birth_city": "What is the birth city of {name}?",
    "university": "Which university did {name} study?",
    "major": "What major did {name} study?",
    "company": "Which company did {name} work for?",
    "company_city": "Where did {name} work?",
}
"""The six question forms of bioS, one per attribute."""

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
          "September", "October", "November", "December")


@dataclass(frozen=True)
class Pools:
    """Every value a person's attributes and name are drawn from."""

    first_names: tuple[str, ...]
    first_name_genders: tuple[str, ...]
    middle_names: tuple[str, ...]
    last_names: tuple[str, ...]
    birth_cities: tuple[str, ...]
    universities: tuple[str, ...]
    majors: tuple[str, ...]
    companies: tuple[str, ...]
    company_cities: tuple[str, ...]
    templates: dict[str, tuple[str, ...]]

    @property
    def max_people(self) -> int:
        return len(self.first_names) * len(self.middle_names) * len(self.last_names)


def _lines(name: str) -> list[str]:
    text = resources.files("factrecall_bench.data").joinpath("pools", name).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip()]


def _pairs(name: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    rows = [line.split("\t") for line in _lines(name)]
    return tuple(row[0] for row in rows), tuple(row[1] for row in rows)


@cache
def load_pools() -> Pools:
    firsts, genders = _pairs("first_names.tsv")
    companies, company_cities = _pairs("companies.tsv")
    raw_templates = tomllib.loads(
        resources.files("factrecall_bench.data").joinpath("pools", "templates.toml").read_text("utf-8"))
    return Pools(
        first_names=firsts, first_name_genders=genders,
        middle_names=tuple(_lines("middle_names.txt")), last_names=tuple(_lines("last_names.txt")),
        birth_cities=tuple(_lines("birth_cities.txt")), universities=tuple(_lines("universities.txt")),
        majors=tuple(_lines("majors.txt")), companies=companies, company_cities=company_cities,
        templates={attribute: tuple(raw_templates[attribute]) for attribute in ATTRIBUTES},
    )
