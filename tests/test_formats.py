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
    optional = {"reused_from"}  # only in a run reused from another folder (tests/test_run_store.py)
    assert set(result) == set(typing.get_type_hints(ResultDocument)) - optional
    documented = _json_example("result.json")
    assert set(result["environment"]) == set(documented["environment"])
    assert set(result["environment"]["versions"]) == set(documented["environment"]["versions"])
    assert set(result["timings"]) == set(documented["timings"])
    assert set(result["per_question"]["ood"]) == set(documented["per_question"]["ood"])


def _keys(value, depth: int = 0):
    """The nested key structure of a trace, with the keys that vary (k fractions, definition
    names, module kinds, metric names) collapsed to '*'."""
    if not isinstance(value, dict) or depth > 6:
        return None
    varying = set(value) and all(re.fullmatch(r"[0-9.e-]+|[a-z_]+/[a-z_]+/[a-z_]+", k)
                                 for k in value)
    if varying:
        return {"*": _keys(next(iter(value.values())), depth + 1)}
    return {k: _keys(v, depth + 1) for k, v in value.items()
            if k not in ("by_kind", "by_kind_bio", "by_kind_qa", "summary", "baseline", "shared",
                         "drop", "random_drop_mean", "random_drop_sd", "bio_only",
                         "bio_only_drop") or not isinstance(v, dict)}


def test_the_documented_trace_has_the_keys_a_real_trace_has():
    from transformers import LlamaConfig, LlamaForCausalLM

    from factrecall_bench.trace import TraceSettings, trace_summary

    documented = _json_example("result.json: trace")
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=2, num_attention_heads=4,
                                         num_key_value_heads=4))
    import torch
    ids = torch.randint(0, 32, (4, 6), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    settings = TraceSettings(top_k=(0.3,), ablation_random_draws=1,  # a set that reaches heads
                             definitions=("probe/grad/global",))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    real = trace_summary(model, {"bio": [batch], "qa": [batch]}, settings, reference_state=state,
                         evaluate=lambda m: {"id_exact_match": 1.0})
    real = json.loads(json.dumps(real))
    assert _keys(real) == _keys(documented)
    def names(summary: dict) -> set[str]:
        return {key.split("@")[0] for key in summary}

    assert names(real["summary"]) >= names(documented["summary"])
