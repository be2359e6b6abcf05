"""Per-sample answers: samples.jsonl agrees with result.json question by question; wrong answers
are told apart (another attribute of the same person, a P_train or P_test person's value, other);
the report counts them per group."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from factrecall_bench.report import markdown_report, sample_summaries, wrong_answers_section
from factrecall_bench.runfolder import SuiteFolder, run_dir
from factrecall_bench.runner import RunOptions, run_one
from factrecall_bench.samples import (
    SAMPLES_FILE,
    SUMMARY_FILE,
    WRONG_KINDS,
    People,
    ValueFrequencies,
    classify_wrong_answer,
    disagreements,
    read_samples,
    read_summary,
    summarize,
)
from factrecall_bench.suite import load_suite
from tests.conftest import MICRO_SUITE

PEOPLE = People(
    values={
        0: {"birth_city": "Austin, TX", "company_city": "Boston, MA", "major": "Law"},
        1: {"birth_city": "Boston, MA", "company_city": "Denver, CO", "major": "Art"},
        2: {"birth_city": "Denver, CO", "company_city": "Austin, TX", "major": "Law"},
        3: {"birth_city": "Miami, FL", "company_city": "Austin, TX", "major": "Music"},
    },
    in_train={0: True, 1: True, 2: False, 3: False},
)


@pytest.mark.parametrize(("answer", "person", "attribute", "kind"), [
    ("Boston, MA", 0, "birth_city", "wrong_attribute"),  # person 0's company city (and 1's birth city)
    ("Boston, MA", 3, "birth_city", "p_train_value"),  # person 1's (P_train) birth city
    ("Denver, CO", 3, "birth_city", "p_test_value"),  # person 2's (P_test) birth city only
    ("Austin, TX", 2, "birth_city", "wrong_attribute"),
    ("Austin, TX", 3, "birth_city", "wrong_attribute"),  # its own company city
    ("Art", 2, "major", "p_train_value"),
    ("Music", 2, "major", "p_test_value"),
    ("Law", 3, "major", "p_train_value"),  # a P_train and a P_test person's: P_train counts
    (" Paris, FR ", 3, "birth_city", "other"),
    ("", 3, "birth_city", "other"),
])
def test_wrong_answers_are_told_apart(answer, person, attribute, kind):
    assert classify_wrong_answer(answer, person, attribute, PEOPLE) == kind


def line(split: str, qid: str, exact: int, kind: str | None = None) -> dict:
    return {"split": split, "question_id": qid, "exact_match": exact, "wrong_kind": kind}


def test_summary_counts_every_kind_per_split():
    lines = [line("id", "p0/a", 1), line("ood", "p2/a", 0, "p_train_value"),
             line("ood", "p2/b", 0, "p_train_value"), line("ood", "p3/a", 0, "other"),
             line("ood", "p3/b", 1)]
    summary = summarize(lines)
    assert summary["id"] == {"questions": 1, "wrong": 0, "wrong_kinds": dict.fromkeys(WRONG_KINDS, 0),
                             "p_train_value_by_chance": 0.0}
    assert summary["ood"]["questions"] == 4 and summary["ood"]["wrong"] == 3
    assert summary["ood"]["wrong_kinds"] == {"wrong_attribute": 0, "p_train_value": 2,
                                             "p_test_value": 0, "other": 1}
    per_question = {"id": {"question_ids": ["p0/a"], "exact_match": [1]},
                    "ood": {"question_ids": ["p2/a", "p2/b", "p3/a", "p3/b"],
                            "exact_match": [0, 0, 0, 0]}}
    assert disagreements(lines, per_question) == ["p3/b"]


def test_report_section_only_with_samples():
    summary = {"strategy": "mixed", "model": "tiny-llama", "variant": "base",
               "ood": {"questions": 10, "wrong": 4,
                       "wrong_kinds": {"wrong_attribute": 1, "p_train_value": 2, "p_test_value": 0,
                                       "other": 1}}}
    assert wrong_answers_section([]) == []
    table = "\n".join(wrong_answers_section([summary, summary]))
    assert "## Wrong OOD answers" in table
    # a summary written before the chance count: its cell says nothing rather than 0%
    assert "| mixed / tiny-llama | 2 | 20 | 8 | 2 (25%) | 4 (50%) | 0 (0%) | 2 (25%) | - |" in table


@pytest.mark.parametrize(("person", "attribute", "chance"), [
    # person 2 (P_test, Law): the others with another major are 1 (Art, P_train's) and
    # 3 (Music, only P_test's): 1 of 2
    (2, "major", 1 / 2),
    # person 3 (Music): 0 (Law), 1 (Art), 2 (Law): Law and Art are P_train people's: 3 of 3
    (3, "major", 1.0),
    # person 3 (Miami): Austin (0, P_train), Boston (1, P_train), Denver (2, P_test): 2 of 3
    (3, "birth_city", 2 / 3),
    # person 2 (Austin, TX as company city, with 3): Boston (0, P_train), Denver (1, P_train)
    (2, "company_city", 1.0),
])
def test_the_chance_that_another_persons_value_is_a_p_train_persons(person, attribute, chance):
    own_value = PEOPLE.values[person][attribute]
    assert ValueFrequencies.of(PEOPLE, attribute).p_train_chance(own_value) == pytest.approx(chance)


def test_no_chance_when_everyone_holds_the_value():
    same = People({0: {"major": "Law"}, 1: {"major": "Law"}}, {0: True, 1: False})
    assert ValueFrequencies.of(same, "major").p_train_chance("Law") is None


def test_chance_is_summed_over_wrong_answers_that_are_a_persons_value():
    def wrong(kind: str, chance: float) -> dict:
        return {**line("ood", f"q{chance}", 0, kind), "p_train_chance": chance}
    lines = [wrong("p_train_value", 0.5), wrong("p_test_value", 0.25), wrong("other", 0.9),
             wrong("wrong_attribute", 0.8), {**line("ood", "r", 1), "p_train_chance": 0.7}]
    assert summarize(lines)["ood"]["p_train_value_by_chance"] == pytest.approx(0.75)


def test_report_puts_the_chance_beside_the_observed_share():
    def summary(p_train: int, p_test: int, by_chance: float) -> dict:
        kinds = {"wrong_attribute": 0, "p_train_value": p_train, "p_test_value": p_test,
                 "other": 1}
        return {"strategy": "two-stage", "model": "tiny-llama", "variant": "base",
                "ood": {"questions": 50, "wrong": p_train + p_test + 1, "wrong_kinds": kinds,
                        "p_train_value_by_chance": by_chance}}
    table = "\n".join(wrong_answers_section([summary(18, 2, 12.0), summary(9, 1, 6.0)]))
    # 27 of the 30 answers that are a person's value are P_train's (90%); chance 18 / 30 = 60%
    assert table.splitlines()[-1].endswith("| 90% (60%) |")
    assert "P_train among people's values (chance)" in table


@pytest.fixture(scope="module")
def sampled_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    runs = tmp_path_factory.mktemp("sampled")
    config = load_suite(str(MICRO_SUITE)).runs[0]
    outcome = run_one(config, runs, options=RunOptions(log_samples=True))
    assert outcome.status == "finished", outcome.reason
    return run_dir(runs, config), outcome.result


@pytest.mark.slow
def test_samples_agree_with_per_question(sampled_run):
    folder, result = sampled_run
    lines = read_samples(folder)
    for split in ("id", "ood"):
        mine = [entry for entry in lines if entry["split"] == split]
        scored = result["per_question"][split]
        assert [entry["question_id"] for entry in mine] == scored["question_ids"]
        assert [entry["exact_match"] for entry in mine] == scored["exact_match"]
        assert [entry["first_token"] for entry in mine] == scored["first_token"]
    assert 0 < sum(entry["exact_match"] for entry in lines) < len(lines)  # some right, some wrong
    for entry in lines:
        if entry["exact_match"]:
            assert entry["greedy_answer"] == entry["target"] and entry["ended"]
        assert (entry["wrong_kind"] is None) == bool(entry["exact_match"])
        assert entry["prompt"] and entry["target"] and entry["attribute"] in entry["question_id"]
    events = (folder / "events.jsonl").read_text()
    assert "samples:" not in events  # no disagreement warning


@pytest.mark.slow
def test_samples_summary_is_stored_and_reaches_the_report(sampled_run):
    folder, result = sampled_run
    summary = read_summary(folder)
    assert summary is not None and summary["run_id"] == result["run_id"]
    assert {k: summary[k] for k in ("id", "ood")} == summarize(read_samples(folder))
    assert sum(summary["ood"]["wrong_kinds"].values()) == summary["ood"]["wrong"] > 0
    people_values = summary["ood"]["wrong_kinds"]["p_train_value"] + summary["ood"]["wrong_kinds"][
        "p_test_value"]
    assert 0 < summary["ood"]["p_train_value_by_chance"] <= people_values
    print("micro OOD:", summary["ood"])
    suite_folder = SuiteFolder(folder.parent)
    assert sample_summaries(suite_folder, [result]) == [summary]
    document = {"summary": [], "verdicts": [], "runs": []}
    suite = SimpleNamespace(name="micro", description="d", report_name="micro", overrides=())
    text = markdown_report(suite, document, [], sample_summaries(suite_folder, [result]))  # type: ignore[arg-type]
    assert "## Wrong OOD answers" in text and "two-stage / tiny-llama | 1 |" in text
    json.loads((folder / SUMMARY_FILE).read_text())
    assert (folder / SAMPLES_FILE).read_text().endswith("\n")


@pytest.mark.slow
def test_the_documented_formats_are_the_written_ones(sampled_run):
    folder, _ = sampled_run
    formats = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text("utf-8")
    documented = [json.loads(block) for block in re.findall(r"```json\n(.*?)```", formats, re.S)]
    line_example = next(d for d in documented if "greedy_answer" in d)
    summary_example = next(d for d in documented if "wrong_kinds" in d.get("ood", {}))
    assert all(set(entry) == set(line_example) for entry in read_samples(folder))
    summary = read_summary(folder)
    assert summary is not None and set(summary) == set(summary_example)
    assert set(summary["ood"]["wrong_kinds"]) == set(summary_example["ood"]["wrong_kinds"])


def test_no_samples_without_the_option(tmp_path):
    assert read_summary(tmp_path) is None
    assert sample_summaries(SuiteFolder(tmp_path), [{"run_id": "nope"}, {}]) == []


# --- every line in both directions, against answers the test scripted -----------------------

WORDS = ["<pad>", "<eos>", "Austin,", "TX", "Boston,", "MA", "Denver,", "CO", "Miami,", "FL",
         "Law", "Art", "Music", "Where", "was", "born?", "study?", "p0", "p1", "p2", "p3", "Paris"]
TOKEN = {word: index for index, word in enumerate(WORDS)}
EOS_ID = TOKEN["<eos>"]


class WordTokenizer:
    """One token per word: decoding is the test's own join, independent of the code."""

    eos_token_id = EOS_ID
    pad_token_id = TOKEN["<pad>"]

    def decode(self, tokens: list[int], skip_special_tokens: bool = False) -> str:
        skipped = {0, EOS_ID} if skip_special_tokens else set()
        return " ".join(WORDS[t] for t in tokens if t not in skipped)


def ids(text: str) -> list[int]:
    return [TOKEN[word] for word in text.split()]


def test_every_sample_line_shows_the_target_and_what_the_model_said_in_both_directions(
        monkeypatch):
    """Questions of two splits in a scripted order; the scripted model answers some right and some
    wrong (another attribute of the person, a P_train person's value, a P_test person's value,
    text of no one, no end token). Each line must show the dataset's target, the words the model
    said (the test's own decode), exact match 1 exactly for the right ones, and the wrong kind."""
    from factrecall_bench import samples
    from factrecall_bench.data.examples import QAItem

    rows = {  # question_id -> (person, attribute, prompt, target)
        "p0/birth_city": (0, "birth_city", "Where was p0 born?", "Austin, TX"),
        "p1/major": (1, "major", "p1 study?", "Art"),
        "p2/birth_city": (2, "birth_city", "Where was p2 born?", "Denver, CO"),
        "p3/major": (3, "major", "p3 study?", "Music"),
        "p0/major": (0, "major", "p0 study?", "Law"),
        "p3/birth_city": (3, "birth_city", "Where was p3 born?", "Miami, FL"),
    }
    said = {  # what the scripted model answers (tokens, with or without an end token)
        "p0/birth_city": ids("Austin, TX") + [EOS_ID],           # right
        "p1/major": ids("Law") + [EOS_ID],                       # P_train value (p0, p2: Law)
        "p2/birth_city": ids("Boston, MA") + [EOS_ID],           # another person's: p1 (train)
        "p3/major": ids("Music") + [EOS_ID],                     # right
        "p0/major": ids("Boston, MA") + [EOS_ID],                # p0's own company_city
        "p3/birth_city": ids("Paris Paris Paris Paris Paris"),   # no one's, never ended
    }
    split_of = {"p0/birth_city": "id", "p1/major": "id", "p0/major": "id",
                "p2/birth_city": "ood", "p3/major": "ood", "p3/birth_city": "ood"}
    items = {qid: QAItem(qid, attribute, ids(prompt), ids(target) + [EOS_ID])
             for qid, (_, attribute, prompt, target) in rows.items()}
    data = SimpleNamespace(
        tokenizer=WordTokenizer(),
        id_questions=[items[q] for q in ("p1/major", "p0/major", "p0/birth_city")],
        ood_questions=[items[q] for q in ("p3/birth_city", "p2/birth_city", "p3/major")])

    def scripted(model, asked, pad_id, eos_id, batch_size, max_new_tokens):
        by_prompt = {tuple(items[q].prompt_ids): said[q] for q in said}
        return [by_prompt[tuple(item.prompt_ids)] for item in asked]

    monkeypatch.setattr(samples, "generate_answers", scripted)
    monkeypatch.setattr(samples, "question_table", lambda dataset: {
        qid: {"person_id": person, "attribute": attribute, "prompt": prompt, "answer": target}
        for qid, (person, attribute, prompt, target) in rows.items()})
    monkeypatch.setattr(samples.People, "from_table", classmethod(lambda cls, *args: PEOPLE))
    lines = samples.collect_samples(None, data, {"people": None}, batch_size=2)

    assert [(line["split"], line["question_id"]) for line in lines] == [
        ("id", "p1/major"), ("id", "p0/major"), ("id", "p0/birth_city"),
        ("ood", "p3/birth_city"), ("ood", "p2/birth_city"), ("ood", "p3/major")]
    expected_kind = {"p0/birth_city": None, "p3/major": None, "p1/major": "p_train_value",
                     "p2/birth_city": "p_train_value", "p0/major": "wrong_attribute",
                     "p3/birth_city": "other"}
    for line in lines:
        qid = line["question_id"]
        person, attribute, prompt, target = rows[qid]
        spoken = [WORDS[t] for t in said[qid] if t != EOS_ID][:len(items[qid].answer_ids) + 4]
        assert line["split"] == split_of[qid]
        assert (line["person_id"], line["attribute"], line["prompt"], line["target"]) == (
            person, attribute, prompt, target)
        assert line["greedy_answer"] == " ".join(spoken), qid
        assert line["exact_match"] == int(" ".join(spoken) == target), qid
        assert line["first_token_prediction"] == WORDS[said[qid][0]]
        assert line["first_token"] == int(said[qid][0] == items[qid].answer_ids[0])
        assert line["ended"] == (said[qid][-1] == EOS_ID)
        assert line["wrong_kind"] == expected_kind[qid], qid
    assert [line["greedy_answer"] for line in lines if not line["exact_match"]] == [
        "Law", "Boston, MA", "Paris Paris Paris Paris Paris", "Boston, MA"]
    per_question = {"id": {"question_ids": ["p0/birth_city", "p1/major", "p0/major"],
                           "exact_match": [1, 0, 0]},
                    "ood": {"question_ids": ["p3/major", "p2/birth_city", "p3/birth_city"],
                            "exact_match": [1, 0, 0]}}
    assert disagreements(lines, per_question) == []
    per_question["ood"]["exact_match"] = [0, 0, 0]  # a wrong record is caught, in either direction
    per_question["id"]["exact_match"] = [1, 1, 0]
    assert disagreements(lines, per_question) == ["p1/major", "p3/major"]
