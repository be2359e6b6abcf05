"""Runs: which people and questions each metric reads (checked against the dataset's own columns
with a model that knows chosen facts), skipped when finished, resumed after a crash (SIGKILL) with
identical metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from factrecall_bench import runner as runner_module
from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.data.dataset import ensure_dataset, load_saved_dataset
from factrecall_bench.data.pools import ATTRIBUTES
from factrecall_bench.events import read_events
from factrecall_bench.io import write_json_atomic
from factrecall_bench.runner import run_one
from factrecall_bench.suite import load_suite
from factrecall_bench.train import total_steps
from tests.conftest import MICRO_SUITE as MICRO
from tests.conftest import (
    ctrl_c_as_at_a_terminal,
    micro_result,
    run_cli,
    training_trace_suite,
    wait_for_step,
)

# --- which people and questions each metric reads ------------------------------------------


def squashed(text: str) -> str:
    """A text without its whitespace, as a decode of its tokens gives it back."""
    return "".join(text.split()).lower()


class KnowsChosenFacts(torch.nn.Module):
    """Recites a sequence it was taught, token by token (up to its end token, or without it for
    the texts it cannot stop); says the pad token for any other.

    It decodes each row it is shown and looks the text up among the texts it knows, so which
    biographies and questions it gets right is chosen from the dataset's columns, independently
    of how the runner and the data code pick and tokenize them.
    """

    def __init__(self, tokenizer: Any, known_texts: set[str], unstoppable: set[str]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tokenizer = tokenizer
        self.known = {squashed(text) for text in known_texts}
        self.unstoppable = {squashed(text) for text in unstoppable}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                **_: Any) -> SimpleNamespace:
        logits = torch.zeros(*input_ids.shape, len(self.tokenizer))
        logits[..., self.tokenizer.pad_token_id] = 1.0  # wrong wherever it does not know
        for row, (ids, mask) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
            real = ids[:sum(mask)]
            text = squashed(self.tokenizer.decode(real, skip_special_tokens=True))
            if text in self.known:
                for position, following in enumerate(real[1:]):
                    if following != self.tokenizer.eos_token_id or text not in self.unstoppable:
                        logits[row, position, following] = 2.0
        return SimpleNamespace(logits=logits)


class NoTraining:
    """Stands in for the Trainer: trains nothing, evaluates once at the first phase's end."""

    def __init__(self, **given: Any) -> None:
        self.model, self.accelerator = given["model"], given["accelerator"]
        self.total_steps = total_steps(given["plans"])
        self.first_phase = given["plans"][0].phase.name
        self.on_phase_end = given["on_phase_end"]
        self.recorder = None

    def run(self) -> dict[str, float]:
        assert self.on_phase_end is not None, "a two-phase run evaluates at its phase ends"
        self.on_phase_end(self.first_phase, 1)
        return {"train_s": 0.0, "train_tokens": 0, "train_tokens_per_s": 0.0}


def question_knowledge(split: str, row: int) -> str | None:
    """Whether the model answers a QA split's row and stops ("answered"), answers it without
    stopping ("unstopped": first token right, exact match wrong), or knows nothing of it."""
    if split == "qa_train":
        return "answered" if row % 2 == 0 else "unstopped" if row % 6 == 1 else None
    return "answered" if row % 4 == 0 else "unstopped" if row % 4 == 1 else None


def chosen_facts(dataset) -> SimpleNamespace:
    """What the model will know, chosen from the dataset's columns: the first biography (variant
    0) of 70% of P_train and 30% of P_test, and a later variant of everyone else (so reading the
    wrong variant shows); the QA rows of `question_knowledge`."""
    people = dataset["people"]
    groups = dict(zip(people["person_id"], people["group"], strict=True))
    members = {g: sorted(p for p, group in groups.items() if group == g) for g in ("train", "test")}
    knows_first_bio = set(members["train"][:round(0.7 * len(members["train"]))]) | set(
        members["test"][:round(0.3 * len(members["test"]))])
    bios = dataset["bio"]
    known_bios = {text for person, variant, text in zip(bios["person_id"], bios["variant"],
                                                        bios["text"], strict=True)
                  if (variant == 0) == (person in knows_first_bio)}
    answered: dict[str, str] = {}  # the question's text (prompt and answer) -> its id
    unstopped: dict[str, str] = {}
    for split in ("qa_train", "qa_test"):
        for index, row in enumerate(dataset[split]):
            knowledge = question_knowledge(split, index)
            if knowledge is not None:
                known = answered if knowledge == "answered" else unstopped
                known[f"{row['prompt']} {row['answer']}"] = row["question_id"]
    return SimpleNamespace(groups=groups, knows_first_bio=knows_first_bio,
                           texts=known_bios | set(answered) | set(unstopped),
                           unstoppable=set(unstopped), answered=set(answered.values()),
                           first_token_only=set(unstopped.values()))


def share(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


@pytest.fixture(scope="module", params=[0, 7], ids=["all-questions", "max_questions=7"])
def run_of_known_facts(request, tmp_path_factory) -> SimpleNamespace:
    """The micro suite's run with a model that knows chosen facts and no training: its
    result.json, the dataset's columns, and what the model knows."""
    (config,) = load_suite(str(MICRO)).runs
    config = dataclasses.replace(config, eval=dataclasses.replace(
        config.eval, max_questions=request.param))
    runs = tmp_path_factory.mktemp("known-facts")
    dataset = load_saved_dataset(ensure_dataset(config.data, runs / "data"))
    facts = chosen_facts(dataset)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runner_module, "Trainer", NoTraining)
        patch.setattr(runner_module, "build_model",
                      lambda spec, tokenizer, seed: KnowsChosenFacts(tokenizer, facts.texts,
                                                                     facts.unstoppable))
        outcome = run_one(config, runs)
    assert outcome.status == "finished", outcome.reason
    result = json.loads((runs / config.suite / config.run_id / "result.json").read_text())
    return SimpleNamespace(result=result, dataset=dataset, facts=facts, cap=request.param)


def expected_bio_recall(run: SimpleNamespace, group: str) -> tuple[float, int]:
    """BIO value recall on one group's people, from the people's `group` column: a person's
    values are all hits when the model knows their first biography, else all misses."""
    people = [p for p, g in run.facts.groups.items() if g == group]
    return share([p in run.facts.knows_first_bio for p in people]), len(people) * len(ATTRIBUTES)


def test_bio_recall_reads_p_train_and_p_test_people_by_their_group_column(run_of_known_facts):
    run = run_of_known_facts
    metrics = run.result["metrics"]
    expected = {group: expected_bio_recall(run, group) for group in ("train", "test")}
    assert expected["train"][0] != expected["test"][0]  # a swap of the groups would show
    for group, (value, n) in expected.items():
        assert metrics[f"bio_first_token_{group}"]["value"] == pytest.approx(value)
        assert metrics[f"bio_first_token_{group}"]["n"] == n
    for attribute in ATTRIBUTES:  # every value of a person is known or not: the same share
        by_attribute = run.result["per_attribute"]["bio_first_token_test"][attribute]
        assert by_attribute["value"] == pytest.approx(expected["test"][0])
        assert by_attribute["n"] == expected["test"][1] // len(ATTRIBUTES)


def expected_questions(run: SimpleNamespace, split: str
                       ) -> tuple[list[str], list[int], list[int]]:
    """The question ids of a QA split's rows (its first max_questions), which are answered
    exactly, and which have their first answer token right."""
    ids = run.dataset[split]["question_id"][:run.cap or None]
    exact = [int(question in run.facts.answered) for question in ids]
    first = [int(question in run.facts.answered | run.facts.first_token_only) for question in ids]
    return ids, exact, first


def test_id_and_ood_scores_read_qa_train_and_qa_test_rows(run_of_known_facts):
    run = run_of_known_facts
    shares = {}
    for name, split in (("id", "qa_train"), ("ood", "qa_test")):
        ids, exact, first = expected_questions(run, split)
        assert {run.facts.groups[int(q.split("/")[0][1:])] for q in ids} == {
            "train" if name == "id" else "test"}
        assert share(exact) < share(first)  # reading one score for the other would show
        per_question = run.result["per_question"][name]
        assert per_question["question_ids"] == ids
        assert per_question["exact_match"] == exact
        assert per_question["first_token"] == first
        for metric, flags in (("exact_match", exact), ("first_token", first)):
            reported = run.result["metrics"][f"{name}_{metric}"]
            assert (reported["value"], reported["n"]) == (pytest.approx(share(flags)), len(ids))
        shares[name] = share(exact)
    assert shares["id"] != shares["ood"]  # a swap of the splits would show


def test_per_attribute_exact_match_reads_each_questions_own_attribute(run_of_known_facts):
    run = run_of_known_facts
    for name, split in (("id", "qa_train"), ("ood", "qa_test")):
        _, known, _ = expected_questions(run, split)
        attributes = run.dataset[split]["attribute"][:run.cap or None]
        reported = run.result["per_attribute"][f"{name}_exact_match"]
        assert set(reported) == set(attributes)
        for attribute in set(attributes):
            flags = [k for k, a in zip(known, attributes, strict=True) if a == attribute]
            assert reported[attribute]["value"] == pytest.approx(share(flags)), (name, attribute)
            assert reported[attribute]["n"] == len(flags)


def test_a_phase_end_evaluation_reads_the_same_people_and_questions(run_of_known_facts):
    run = run_of_known_facts
    (phase_end,) = [e for e in run.result["phase_evals"] if e["phase"] != "final"]
    expected = {f"bio_first_token_{group}": expected_bio_recall(run, group)[0]
                for group in ("train", "test")}
    for name, split in (("id", "qa_train"), ("ood", "qa_test")):
        _, exact, first = expected_questions(run, split)
        expected[f"{name}_exact_match"], expected[f"{name}_first_token"] = share(exact), share(first)
    assert phase_end["metrics"] == pytest.approx(expected, abs=1e-6)


def comparable(result: dict) -> dict:
    return {"metrics": result["metrics"], "per_question": result["per_question"],
            "loss_curve": result["loss_curve"], "phase_evals": result["phase_evals"]}


@pytest.mark.slow  # trains the micro run end to end
def test_finished_run_is_skipped_and_says_so(tmp_path):
    config = load_suite(str(MICRO)).runs[0]
    first = run_one(config, tmp_path)
    assert first.status == "finished"
    events_before = (tmp_path / "micro" / config.run_id / "events.jsonl").read_bytes()
    again = run_one(config, tmp_path)
    assert again.status == "skipped"
    assert again.result == json.loads(json.dumps(first.result))
    assert (tmp_path / "micro" / config.run_id / "events.jsonl").read_bytes() == events_before
    rerun = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert rerun.returncode == 0 and "nothing to do" in rerun.stderr


@pytest.mark.slow  # trains the micro run end to end
@pytest.mark.parametrize("kill_at_steps", [(40,), (25, 170, 290)])
def test_sigkill_then_rerun_gives_the_uninterrupted_metrics(tmp_path, micro_uninterrupted,
                                                            kill_at_steps):
    """Killed mid-phase, at a phase boundary's neighbourhood, several times: same result."""
    config = load_suite(str(MICRO)).runs[0]
    events_file = tmp_path / "micro" / config.run_id / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "factrecall_bench", "run", "--suite", str(MICRO),
               "--runs-dir", str(tmp_path), "--no-check"]
    for step in kill_at_steps:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_for_step(events_file, process, step)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert not (tmp_path / "micro" / config.run_id / "result.json").exists()
    resumed = run_cli("run", "--suite", str(MICRO), "--runs-dir", str(tmp_path), "--no-check")
    assert resumed.returncode == 0, resumed.stderr
    assert any(e["event"] == "resume" for e in read_events(events_file).events)
    assert comparable(micro_result(tmp_path)) == comparable(micro_uninterrupted)


@pytest.mark.slow  # trains the micro run end to end
def test_corrupted_checkpoint_falls_back_to_the_previous_one(tmp_path):
    config = load_suite(str(MICRO)).runs[0]
    run_one(config, tmp_path)
    folder = tmp_path / "micro" / config.run_id / "checkpoints"
    newest = latest_checkpoint(folder)
    assert newest is not None
    (newest.path / "model.safetensors").write_bytes(b"garbage")
    fallback = latest_checkpoint(folder)
    assert fallback is not None and fallback.step < newest.step


@pytest.mark.slow  # trains the micro run end to end
def test_ctrl_c_keeps_finished_work_and_says_how_to_resume(tmp_path):
    config = load_suite(str(MICRO)).runs[0]
    events_file = tmp_path / "micro" / config.run_id / "events.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "factrecall_bench", "run", "--suite", str(MICRO),
                                "--runs-dir", str(tmp_path), "--no-check"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=ctrl_c_as_at_a_terminal)
    wait_for_step(events_file, process, 20)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "interrupted: finished runs are kept; rerun to resume" in stderr
    assert "Traceback" not in stderr
    assert latest_checkpoint(events_file.parent / "checkpoints") is not None


@pytest.fixture(scope="module")
def training_trace_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """The micro suite with a training-mode trace, trained once without interruption: (suite,
    runs folder)."""
    folder = tmp_path_factory.mktemp("training-trace")
    suite = training_trace_suite(folder)
    whole = folder / "whole"
    completed = run_cli("run", "--suite", suite, "--runs-dir", str(whole), "--no-check")
    assert completed.returncode == 0, completed.stderr
    return suite, whole


@pytest.mark.slow
def test_a_training_mode_trace_survives_kills(tmp_path, training_trace_run):
    """The recorder's sums go into every checkpoint: a resumed run traces what an uninterrupted
    one does, and `trace` recomputes it from the final checkpoint."""
    suite, whole = training_trace_run
    killed = tmp_path / "killed"
    config = load_suite(suite).runs[0]
    events_file = killed / "micro" / config.run_id / "events.jsonl"
    command = [sys.executable, "-m", "factrecall_bench", "run", "--suite", suite,
               "--runs-dir", str(killed), "--no-check"]
    for step in (40, 250):  # in stage 1, then in stage 2
        process = subprocess.Popen(command, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_step(events_file, process, step)
        process.send_signal(signal.SIGKILL)
        process.wait()
    resumed = run_cli("run", "--suite", suite, "--runs-dir", str(killed), "--no-check")
    assert resumed.returncode == 0, resumed.stderr
    assert sum(e["event"] == "resume" for e in read_events(events_file).events) == 2
    expected, got = micro_result(whole)["trace"], micro_result(killed)["trace"]
    assert got["settings"]["mode"] == "training" and got["summary"]["shared_count@0.05"] > 0
    assert got["per_k"] == expected["per_k"] and got["ablation"] == expected["ablation"]
    result_file = events_file.parent / "result.json"
    write_json_atomic(result_file, {**micro_result(killed), "trace": None})  # retrace must refill it
    retraced = run_cli("trace", str(events_file.parent))
    assert retraced.returncode == 0, retraced.stderr
    assert micro_result(killed)["trace"]["per_k"] == expected["per_k"]


@pytest.mark.slow  # trains the micro run end to end
def test_a_checkpoint_with_a_corrupted_recorder_file_is_skipped(tmp_path, training_trace_run):
    _, whole = training_trace_run
    (checkpoints,) = whole.glob("micro/*/checkpoints")
    folder = shutil.copytree(checkpoints, tmp_path / "checkpoints")
    newest = latest_checkpoint(folder)
    assert newest is not None and (newest.path / "trace-recorder.safetensors").exists()
    (newest.path / "trace-recorder.safetensors").write_bytes(b"garbage")
    fallback = latest_checkpoint(folder)
    assert fallback is not None and fallback.step < newest.step
