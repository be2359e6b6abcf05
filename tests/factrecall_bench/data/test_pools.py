"""The shipped attribute pools and BIO templates: bioS sizes and the rules every entry follows.

The rules keep every generated example checkable: a value must stand verbatim in its biography and
tokenize the same there as after "Answer:", so values and templates are plain, unambiguous text.
"""

from __future__ import annotations

import re
import tomllib
from importlib import resources

import pytest

from factrecall_bench.data.pools import Pools, load_pools

POOLS = resources.files("factrecall_bench.data").joinpath("pools")

ATTRIBUTES = ("birth_date", "birth_city", "university", "major", "company", "company_city")
PERSON_PLACEHOLDERS = ("{subject}", "{possessive}", "{object}")
MIN_TEMPLATES = 40

US_STATES = set(
    "AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM "
    "NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY DC".split()
)
CITY = re.compile(r"[A-Z][A-Za-z.' -]*[a-z], ([A-Z]{2})")
FORBIDDEN = re.compile(r'[{}"\\0-9]')
NAME = re.compile(r"[A-Z][A-Za-z]*[a-z]")


def read_lines(name: str) -> list[str]:
    """The file's lines, after checking the file itself is clean (ASCII, LF, no blank lines)."""
    raw = POOLS.joinpath(name).read_bytes()
    assert raw.isascii(), f"{name}: non-ASCII bytes"
    text = raw.decode("ascii")
    assert "\r" not in text, f"{name}: CR line endings"
    assert text.endswith("\n") and not text.endswith("\n\n"), f"{name}: must end with one newline"
    lines = text[:-1].split("\n")
    for number, line in enumerate(lines, 1):
        assert line.strip(), f"{name}:{number}: empty line"
    return lines


def read_pairs(name: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(read_lines(name), 1):
        fields = line.split("\t")
        assert len(fields) == 2, f"{name}:{number}: expected exactly two tab-separated fields"
        pairs.append((fields[0], fields[1]))
    return pairs


def check_value(pool: str, value: str) -> None:
    """The rules shared by every value of every pool."""
    where = f"{pool}: {value!r}"
    assert value, f"{pool}: empty value"
    assert value.isascii(), where
    assert value == value.strip(), f"{where} has leading/trailing whitespace"
    assert "\t" not in value and "\n" not in value, f"{where} contains a tab"
    assert "  " not in value, f"{where} contains a double space"
    assert value[-1].isalnum(), f"{where} ends with punctuation"
    assert not FORBIDDEN.search(value), f"{where} contains a brace, quote, backslash or digit"


def check_pool(pool: str, values: list[str], size: int) -> None:
    assert len(values) == size, f"{pool}: {len(values)} values, expected {size}"
    for value in values:
        check_value(pool, value)
    seen: dict[str, str] = {}
    for value in values:
        key = value.lower()
        assert key not in seen, f"{pool}: {value!r} duplicates {seen[key]!r} (case-insensitive)"
        seen[key] = value


def check_city(pool: str, city: str) -> None:
    match = CITY.fullmatch(city)
    assert match, f"{pool}: {city!r} is not written 'City, ST'"
    assert match.group(1) in US_STATES, f"{pool}: {city!r} has an unknown state code"


# ---------------------------------------------------------------------------------------- names

def test_first_names() -> None:
    pairs = read_pairs("first_names.tsv")
    names = [name for name, _ in pairs]
    check_pool("first_names", names, 400)
    for name, gender in pairs:
        assert NAME.fullmatch(name), f"first_names: {name!r} is not a single capitalized word"
        assert gender in ("F", "M"), f"first_names: {name!r} has gender {gender!r}"
    females = sum(gender == "F" for _, gender in pairs)
    assert 160 <= females <= 240, f"first_names: {females} F of 400, expected roughly half"


def test_middle_names() -> None:
    names = read_lines("middle_names.txt")
    check_pool("middle_names", names, 400)
    for name in names:
        assert NAME.fullmatch(name), f"middle_names: {name!r} is not a single capitalized word"


def test_last_names() -> None:
    names = read_lines("last_names.txt")
    check_pool("last_names", names, 1000)
    for name in names:
        assert name[0].isupper(), f"last_names: {name!r} is not capitalized"


# ------------------------------------------------------------------------------- other pools

def test_birth_cities() -> None:
    cities = read_lines("birth_cities.txt")
    check_pool("birth_cities", cities, 200)
    for city in cities:
        check_city("birth_cities", city)


def test_universities() -> None:
    check_pool("universities", read_lines("universities.txt"), 300)


def test_majors() -> None:
    check_pool("majors", read_lines("majors.txt"), 100)


def test_companies() -> None:
    pairs = read_pairs("companies.tsv")
    check_pool("companies", [company for company, _ in pairs], 263)
    for company, city in pairs:
        check_value("company_cities", city)
        check_city(f"companies ({company})", city)


def test_values_start_with_a_letter() -> None:
    """A value opens with a letter, so it never merges with the space or colon before it."""
    files = ["middle_names.txt", "last_names.txt", "birth_cities.txt", "universities.txt",
             "majors.txt"]
    values = [v for name in files for v in read_lines(name)]
    values += [v for name in ("first_names.tsv", "companies.tsv") for pair in read_pairs(name)
               for v in pair]
    for value in values:
        assert value[0].isalpha(), f"{value!r} does not start with a letter"


# --------------------------------------------------------------------------------- templates

def load_templates() -> dict[str, list[str]]:
    raw = POOLS.joinpath("templates.toml").read_bytes()
    assert raw.isascii(), "templates.toml: non-ASCII bytes"
    return tomllib.loads(raw.decode("ascii"))


def test_templates_cover_every_attribute() -> None:
    templates = load_templates()
    assert set(templates) == set(ATTRIBUTES)
    for attribute in ATTRIBUTES:
        texts = templates[attribute]
        assert isinstance(texts, list) and all(isinstance(t, str) for t in texts), attribute
        assert len(texts) >= MIN_TEMPLATES, f"{attribute}: {len(texts)} templates"
        lowered = [t.lower() for t in texts]
        duplicates = sorted({t for t in lowered if lowered.count(t) > 1})
        assert not duplicates, f"{attribute}: duplicate templates {duplicates}"


def template_cases() -> list[tuple[str, str]]:
    templates = load_templates()
    return [(a, t) for a in ATTRIBUTES for t in templates.get(a, [])]


def template_problems(template: str) -> list[str]:
    """Every rule the template breaks (empty when it is valid)."""
    problems = []
    if template != template.strip() or "  " in template or "\t" in template:
        problems.append("stray whitespace")
    if template.count("{value}") != 1:
        problems.append("{value} must occur exactly once")
    person = sum(template.count(p) for p in PERSON_PLACEHOLDERS)
    if person != 1:
        problems.append("exactly one of {subject}/{possessive}/{object} must occur, once")
    bare = template.replace("{value}", "")
    for placeholder in PERSON_PLACEHOLDERS:
        bare = bare.replace(placeholder, "")
    if "{" in bare or "}" in bare:
        problems.append("unknown placeholder or stray brace")
    if not template.endswith(".") or template.count(".") != 1:
        problems.append("must end with '.' and contain no other '.'")
    if re.search(r"[0-9\"\\]", bare):
        problems.append("digit, quote or backslash in the template text")
    if not (template[:1].isupper() or template.startswith(PERSON_PLACEHOLDERS)):
        problems.append("must start with a capital letter or a person placeholder")
    if template.count("{value}") == 1:
        before, after = template.split("{value}")
        if not before.endswith(" ") or before.endswith("  ") or before.strip() == "":
            problems.append("{value} must follow a single space, not open the sentence")
        if not (after == "." or after.startswith(",") or re.match(r" [a-z]", after)):
            problems.append("{value} must be followed by the final '.', ',' or a space and a "
                            "lowercase word")
    return problems


def test_every_template_follows_the_rules() -> None:
    """One test over every shipped template (not one case each: the count of test cases should
    not be mostly word lists); a failure lists every template that breaks a rule."""
    broken = {f"{attribute}: {template!r}": problems for attribute, template in template_cases()
              if (problems := template_problems(template))}
    assert not broken, broken


def test_every_template_renders_its_value_verbatim() -> None:
    wrong = []
    for attribute, template in template_cases():
        value = {"birth_date": "October 2, 1996", "company": "Meta Platforms"}.get(attribute,
                                                                                   "Zz Yy")
        for forms in ({"subject": "she", "possessive": "her", "object": "her"},
                      {"subject": "Anya Briar Forger", "possessive": "Anya Briar Forger's",
                       "object": "Anya Briar Forger"}):
            sentence = template.format(value=value, **forms)
            if sentence.count(value) != 1 or f" {value}" not in sentence:
                wrong.append(sentence)
    assert not wrong, wrong


@pytest.mark.parametrize("template", [
    "{value} is the hometown of {subject}.",          # value opens the sentence
    "{subject} was born in {value}",                  # no final period
    "{subject} was born in {value}. Really.",         # a second period
    "{subject} was born in  {value}.",                # double space before the value
    "{subject} loved {value}'s parks.",               # value followed by 's
    "{subject} lived in {value}ville.",               # value glued to a letter
    "{subject} lived in {value} Today.",              # value followed by a capitalized word
    "{subject} was born in {value} and {object} liked it.",  # two person placeholders
    "The city {value} is nice.",                      # no person placeholder
    "{subject} spent {possessive_adj} youth in {value}.",   # unknown placeholder
    "{subject} was born in {value} or {value}.",      # value twice
    "{subject} was born in {{value}}.",               # stray braces
])
def test_template_checker_rejects_bad_templates(template: str) -> None:
    assert template_problems(template)


def test_template_checker_accepts_good_templates() -> None:
    for template in ("{subject} spent the early years of life in {value}.",
                     "{possessive} hometown is {value}.",
                     "The city of {value} is where {subject} was born.",
                     "On {value}, {subject} was born."):
        assert template_problems(template) == [], template


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# Tests written for the survivors of mutation testing of factrecall_bench/data/pools.py (docs/mutation.md,
# fourth round): reading the shipped pools afresh (not from `load_pools`' cache) gives every line of each
# file, the published bioS sizes, each first name with its gender and each company with its city, and the
# templates of every attribute in the file's order.


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
