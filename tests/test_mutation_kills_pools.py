"""Tests written for the survivors of mutation testing of factrecall_bench/data/pools.py
(docs/mutation.md, fourth round): reading the shipped pools afresh (not from `load_pools`' cache)
gives every line of each file, the published bioS sizes, each first name with its gender and each
company with its city, and the templates of every attribute in the file's order."""

from __future__ import annotations

import tomllib
from importlib import resources

from factrecall_bench.data.pools import ATTRIBUTES, Pools, load_pools

POOLS = resources.files("factrecall_bench.data").joinpath("pools")


def _fresh() -> Pools:
    """Read the package data again: `load_pools` caches its first result for the process."""
    return load_pools.__wrapped__()


def _rows(name: str) -> list[list[str]]:
    return [line.split("\t") for line in POOLS.joinpath(name).read_text("ascii").splitlines()]


def test_the_pools_have_the_published_sizes() -> None:
    pools = _fresh()
    sizes = {field: len(getattr(pools, field)) for field in (
        "first_names", "first_name_genders", "middle_names", "last_names", "birth_cities",
        "universities", "majors", "companies", "company_cities")}
    assert sizes == {"first_names": 400, "first_name_genders": 400, "middle_names": 400,
                     "last_names": 1000, "birth_cities": 200, "universities": 300, "majors": 100,
                     "companies": 263, "company_cities": 263}
    assert pools.max_people == 400 * 400 * 1000


def test_every_line_of_the_files_is_a_value_in_order() -> None:
    pools = _fresh()
    for name, values in (("middle_names.txt", pools.middle_names),
                         ("last_names.txt", pools.last_names),
                         ("birth_cities.txt", pools.birth_cities),
                         ("universities.txt", pools.universities), ("majors.txt", pools.majors)):
        assert list(values) == [row[0] for row in _rows(name)], name


def test_first_names_keep_their_gender_and_companies_their_city() -> None:
    pools = _fresh()
    names = _rows("first_names.tsv")
    assert list(zip(pools.first_names, pools.first_name_genders)) == [tuple(r) for r in names]
    assert set(pools.first_name_genders) == {"F", "M"}
    companies = _rows("companies.tsv")
    assert list(zip(pools.companies, pools.company_cities)) == [tuple(r) for r in companies]


def test_the_templates_of_each_attribute_are_read_in_order() -> None:
    templates = tomllib.loads(POOLS.joinpath("templates.toml").read_text("ascii"))
    pools = _fresh()
    assert list(pools.templates) == list(ATTRIBUTES)
    for attribute in ATTRIBUTES:
        assert pools.templates[attribute] == tuple(templates[attribute])


def test_the_cached_pools_equal_a_fresh_read() -> None:
    assert load_pools() == _fresh()
    assert load_pools() is load_pools()
