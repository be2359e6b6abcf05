"""docs/formats.md against the code that owns each format (runfolder, events), and against what a
real run writes: the documentation and the contract cannot drift apart."""

from __future__ import annotations

import json
import re
import typing
from pathlib import Path

import pytest

from factrecall_bench.events import EVENT_KINDS, check_event
from factrecall_bench.runfolder import ResultDocument, RunFolder, SuiteFolder, VerdictsDocument

FORMATS = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text("utf-8")


def _section(title: str) -> str:
    start = FORMATS.index(f"## {title}")
    end = FORMATS.find("\n## ", start + 1)
    return FORMATS[start:end if end != -1 else None]


def _json_example(title: str) -> dict:
    block = re.search(r"```json\n(.*?)```", _section(title), re.S)
    assert block is not None, f"no JSON example under {title}"
    return json.loads(block.group(1))


def _documented_events() -> dict[str, set[str]]:
    rows = re.findall(r"^\| `([a-z_]+)` \| (.*) \|$", _section("events.jsonl"), re.M)
    required = {}
    for kind, keys in rows:
        always = re.sub(r"\([^)]*\)", "", keys.split("optional")[0])  # not asides in brackets
        required[kind] = set(re.findall(r"`([a-z_]+)`", always))
    return required


def test_every_event_kind_is_documented_with_its_keys():
    documented = _documented_events()
    assert set(documented) == set(EVENT_KINDS)
    for kind, keys in EVENT_KINDS.items():
        assert set(keys) <= documented[kind], kind


def test_the_run_folder_files_are_the_documented_ones():
    listed = set(re.findall(r"^\| `([^`/]+)/?[^`]*` \|", FORMATS, re.M))
    owned = {RunFolder.CONFIG, RunFolder.EVENTS, RunFolder.RESULT, RunFolder.TRACE,
             RunFolder.CHECKPOINTS, RunFolder.LOCK}
    assert owned <= listed
    assert f"`{SuiteFolder.VERDICTS}`" in FORMATS and f"`{SuiteFolder.REPORT}`" in FORMATS


def test_the_documented_result_has_exactly_the_typed_keys():
    assert set(_json_example("result.json")) == set(typing.get_type_hints(ResultDocument))


def test_the_documented_verdicts_have_exactly_the_typed_keys():
    assert set(_json_example("verdicts.json")) == set(typing.get_type_hints(VerdictsDocument))


def test_an_event_writer_cannot_invent_a_kind_or_drop_a_key():
    with pytest.raises(ValueError, match="unknown event kind"):
        check_event("run_skipped", {})
    with pytest.raises(ValueError, match="missing"):
        check_event("run_failed", {})


@pytest.mark.slow
def test_a_real_run_writes_what_is_documented(micro_uninterrupted, tmp_path):
    result = micro_uninterrupted
    assert set(result) == set(typing.get_type_hints(ResultDocument))
    documented = _json_example("result.json")
    assert set(result["environment"]) == set(documented["environment"])
    assert set(result["environment"]["versions"]) == set(documented["environment"]["versions"])
    assert set(result["timings"]) == set(documented["timings"])
    assert set(result["per_question"]["ood"]) == set(documented["per_question"]["ood"])
