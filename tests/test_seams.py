"""Seam tests: what a user relies on where two parts meet (generated data -> runner -> events and
result.json -> baselines, verdicts, reports, the CLI), each checked against an independent
reference rather than against the code it tests.

One tiny two-stage run (a few seconds) is trained once for the module and read by several tests.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import re
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from xml.etree import ElementTree

import pytest
import torch
from typer.testing import CliRunner

from factrecall_bench import runner as runner_module
from factrecall_bench.checkpoints import latest_checkpoint
from factrecall_bench.cli import app
from factrecall_bench.data.dataset import generate_dataset
from factrecall_bench.data.examples import IGNORE
from factrecall_bench.data.facts import load_fact_data
from factrecall_bench.data.pools import ATTRIBUTES
from factrecall_bench.environment import hardware_class
from factrecall_bench.events import read_events
from factrecall_bench.models import build_model
from factrecall_bench.plan import parameter_count
from factrecall_bench.runner import run_one
from factrecall_bench.suite import find_suite, load_suite
from factrecall_bench.verdicts.baselines import baseline_from_results
from tests.conftest import MICRO_SUITE

GPU_DOC = Path(__file__).parent.parent / "docs" / "gpu.md"
WARMUP_FRACTION = 0.2


def micro_variant(folder: Path, name: str, **train: Any) -> Path:
    """The micro suite (two-stage, 20 people, one tiny layer) with extra [train] settings."""
    text = MICRO_SUITE.read_text()
    assert "[train]\n" in text and 'name = "micro"' in text
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in train.items())
    text = text.replace('name = "micro"', f'name = "{name}"')
    text = re.sub(r"(?m)^log_every = \d+\n", "", text).replace("[train]\n", "[train]\n" + lines)
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The micro suite's two-stage run, logging every step, with a visible warmup."""
    folder = tmp_path_factory.mktemp("seams")
    suite = load_suite(str(micro_variant(folder, "seams", log_every=1,
                                         warmup_fraction=WARMUP_FRACTION)))
    (config,) = suite.runs
    assert config.strategy == "two-stage" and len(config.phases) == 2
    runs = folder / "runs"
    outcome = run_one(config, runs)
    assert outcome.status == "finished", outcome.reason
    run_folder = runs / config.suite / config.run_id
    result = json.loads((run_folder / "result.json").read_text())
    events = read_events(run_folder / "events.jsonl").events
    return SimpleNamespace(config=config, runs=runs, folder=run_folder, result=result,
                           events=events)


def groups_of(dataset) -> dict[int, str]:
    people = dataset["people"]
    return dict(zip(people["person_id"], people["group"], strict=True))


def mean(values: list[int]) -> float:
    return sum(values) / len(values)


def person_of(question_id: str) -> int:
    match = re.fullmatch(r"p(\d+)/([a-z_]+)", question_id)
    assert match is not None and match[2] in ATTRIBUTES, question_id
    return int(match[1])


# --- 1. OOD questions are the held-out people's ---------------------------------------------


def test_generated_ood_questions_are_about_p_test_people_only(small_dataset):
    people = small_dataset["people"]
    group = groups_of(small_dataset)
    for split, wanted in (("qa_test", "test"), ("qa_train", "train")):
        rows = small_dataset[split]
        assert {group[p] for p in rows["person_id"]} == {wanted}
        expected = {(p, a) for p, g in group.items() if g == wanted for a in ATTRIBUTES}
        assert set(zip(rows["person_id"], rows["attribute"], strict=True)) == expected
        for row in rows:
            person = people[row["person_id"]]
            assert person["full_name"] in row["prompt"]
            assert row["answer"] == person[row["attribute"]]
            assert person_of(row["question_id"]) == row["person_id"]


def test_result_ood_entries_are_the_held_out_people(two_stage):
    group = groups_of(generate_dataset(two_stage.config.data))
    per_question = two_stage.result["per_question"]
    for split, wanted in (("ood", "test"), ("id", "train")):
        ids = per_question[split]["question_ids"]
        expected = {f"p{p}/{a}" for p, g in group.items() if g == wanted for a in ATTRIBUTES}
        assert set(ids) == expected and len(ids) == len(expected)
        metric = two_stage.result["metrics"][f"{split}_exact_match"]
        assert metric["n"] == len(expected)
        assert metric["value"] == pytest.approx(sum(per_question[split]["exact_match"]) / len(ids))


# --- 2. BIO value recall: the argmax at the position before each value's first token --------


def test_bio_recall_in_result_equals_a_naive_argmax_loop(two_stage):
    config = two_stage.config
    data = load_fact_data(config.data, config.model, config.eval, two_stage.runs / "data")
    model = build_model(config.model, data.tokenizer, config.seed)
    checkpoint = latest_checkpoint(two_stage.folder / "checkpoints")
    assert checkpoint is not None and checkpoint.step == two_stage.result["total_steps"]
    checkpoint.load_model(model)
    model.eval()
    naive = {}
    for name, people in (("train", data.bio_train_people), ("test", data.bio_test_people)):
        hits: dict[str, list[int]] = {attribute: [] for attribute in ATTRIBUTES}
        for item in people:  # one biography at a time, no padding
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([item.input_ids])).logits[0]
            for attribute, (start, _) in item.value_token_spans.items():
                hits[attribute].append(int(logits[start - 1].argmax()) == item.input_ids[start])
        naive[name] = hits
    everything = {name: [h for hits in naive[name].values() for h in hits] for name in naive}
    assert mean(everything["train"]) > 0.3  # trained enough that a misread would show
    metrics = two_stage.result["metrics"]
    for name in ("train", "test"):
        reported = metrics[f"bio_first_token_{name}"]
        assert reported["n"] == len(everything[name])
        assert reported["value"] == pytest.approx(mean(everything[name]))
    per_attribute = two_stage.result["per_attribute"]["bio_first_token_test"]
    for attribute in ATTRIBUTES:
        assert per_attribute[attribute]["value"] == pytest.approx(mean(naive["test"][attribute]))


# --- 3. Two-stage forgetting is recorded: an evaluation at the end of stage 1 ----------------


def test_stage_one_end_is_evaluated_with_bio_recall_of_both_groups(two_stage):
    (start,) = [e for e in two_stage.events if e["event"] == "run_start"]
    stage1 = start["phases"][0]
    assert stage1["name"] == "bio"
    (phase_end,) = [e for e in two_stage.events
                    if e["event"] == "phase_end" and e["phase"] == "bio"]
    assert phase_end["step"] == stage1["steps"]
    evals = [e for e in two_stage.events if e["event"] == "eval" and e["phase"] == "bio"]
    assert [e["step"] for e in evals] == [stage1["steps"]]
    recorded = [e for e in two_stage.result["phase_evals"]
                if e["phase"] == "bio" and e["step"] == stage1["steps"]]
    assert len(recorded) == 1
    for metrics in (evals[0]["metrics"], recorded[0]["metrics"]):
        for key in ("bio_first_token_train", "bio_first_token_test",
                    "id_exact_match", "ood_exact_match"):
            assert 0.0 <= metrics[key] <= 1.0
    # The final evaluation is not a phase-end one: stage 2 is measured once, as "final".
    final = [e for e in two_stage.result["phase_evals"] if e["phase"] == "final"]
    assert [e["step"] for e in final] == [two_stage.result["total_steps"]]


# --- 4. Each phase: its own warmup from ~0 and cosine to min_lr_fraction --------------------


def expected_lr(peak: float, steps: int, done: int, warmup_fraction: float,
                 min_fraction: float) -> float:
    """The learning rate after `done` of a phase's `steps` optimizer steps, i.e. the rate step
    done + 1 uses (the value its `step` event logs): linear warmup over
    ceil(warmup_fraction * steps), then cosine to min_fraction."""
    warmup = math.ceil(warmup_fraction * steps)
    if done < warmup:
        return peak * done / warmup
    progress = (done - warmup) / max(1, steps - warmup)
    return peak * (min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress)))


def test_learning_rate_warms_up_and_decays_within_each_phase(two_stage):
    train = two_stage.config.train
    (start,) = [e for e in two_stage.events if e["event"] == "run_start"]
    steps = [e for e in two_stage.events if e["event"] == "step"]
    first = 0
    for phase, planned in zip(two_stage.config.phases, start["phases"], strict=True):
        n = planned["steps"]
        logged = {e["step"]: e["lr"] for e in steps if e["phase"] == phase.name}
        assert sorted(logged) == list(range(first + 1, first + n + 1))
        lrs = [logged[first + done] for done in range(1, n + 1)]
        assert lrs[0] == 0.0  # the warmup restarts from 0 at the phase's start
        assert max(lrs) == pytest.approx(phase.lr)  # ... reaches this phase's peak
        assert train.min_lr_fraction * phase.lr < lrs[-1] < 0.2 * phase.lr  # ... and decays
        for done, lr in enumerate(lrs):
            assert lr == pytest.approx(expected_lr(phase.lr, n, done, WARMUP_FRACTION,
                                                   train.min_lr_fraction), rel=1e-6, abs=1e-12)
        first += n


# --- 8. A variant's settings reach its runs -------------------------------------------------


def test_sensitivity_variants_reach_their_run_configs():
    """Each [[variants]] entry crossed with each [grid] value is one variant, and both the
    variant's tables and the grid's value reach every run of it."""
    import tomllib

    raw = tomllib.loads(find_suite("sensitivity").read_text())
    ((grid_key, grid_values),) = [(key, values) for key, values in raw["grid"].items()
                                  if key != "labels"]
    table, key = grid_key.split(".")
    configs = load_suite("sensitivity").runs
    by_variant: dict[str, list] = {}
    for config in configs:
        by_variant.setdefault(config.variant, []).append(config)
    assert len(by_variant) == len(raw["variants"]) * len(grid_values)
    crossed = set()
    for name, variant_configs in by_variant.items():
        (variant,) = [v for v in raw["variants"] if name.startswith(v["name"] + "-")]
        values = {config.train.stage2_lr for config in variant_configs}
        assert len(values) == 1 and values <= set(grid_values), name
        crossed.add((variant["name"], *values))
        for config in variant_configs:
            for section in ("data", "model", "train"):
                for setting, value in {**raw.get(section, {}), **variant.get(section, {})}.items():
                    assert getattr(getattr(config, section), setting) == value, \
                        f"{name}: {section}.{setting}"
            assert getattr(getattr(config, table), key) in grid_values
            if config.strategy == "two-stage":
                assert config.phases[1].lr == config.train.stage2_lr
    assert crossed == {(v["name"], lr) for v in raw["variants"] for lr in grid_values}
    single = {c.data.bio_variants for c in configs if c.variant.startswith("single")}
    aug = {c.data.bio_variants for c in configs if c.variant.startswith("aug")}
    assert single == {1} and aug == {5}
    assert len({c.run_id for c in configs}) == len(configs)


def test_a_variant_overrides_the_base_tables_it_names(tmp_path):
    path = tmp_path / "overrides.toml"
    path.write_text(
        'name = "overrides"\nstrategies = ["two-stage"]\n'
        "[data]\nn_people = 20\nbio_variants = 3\n"
        "[model]\nn_layer = 2\nd_model = 32\nn_head = 2\nd_ff = 64\n"
        "[train]\nlr = 2e-3\nstage2_lr = 1e-3\nbatch_size = 8\n"
        '[[variants]]\nname = "base"\n'
        '[[variants]]\nname = "changed"\ndata = {bio_variants = 1}\nmodel = {n_layer = 1}\n'
        "train = {stage2_lr = 1e-4, batch_size = 4}\n")
    base, changed = load_suite(str(path)).runs
    assert (base.data.bio_variants, base.model.n_layer, base.train.stage2_lr,
            base.train.batch_size, base.phases[1].lr) == (3, 2, 1e-3, 8, 1e-3)
    assert (changed.data.bio_variants, changed.model.n_layer, changed.train.stage2_lr,
            changed.train.batch_size, changed.phases[1].lr) == (1, 1, 1e-4, 4, 1e-4)
    assert (changed.data.n_people, changed.model.d_model, changed.train.lr) == (20, 32, 2e-3)


# --- 9. bio_loss = "values": the loss covers exactly the value tokens ------------------------


class _Captured(Exception):
    """Raised by the stand-in Trainer once the runner has handed it the training examples."""


def training_examples(monkeypatch, folder: Path, bio_loss: str):
    """The examples the runner would train a micro run on (training itself is not started)."""
    seen: dict[str, Any] = {}

    def capture(**kwargs: Any) -> None:
        seen.update(kwargs)
        raise _Captured

    monkeypatch.setattr(runner_module, "Trainer", capture)
    suite = load_suite(str(micro_variant(folder, f"loss-{bio_loss}", bio_loss=bio_loss)))
    (config,) = suite.runs
    with contextlib.suppress(_Captured):  # the runner may also report it as a failed run
        run_one(config, folder / "runs")
    assert "examples" in seen, "the runner never built a Trainer"
    data = load_fact_data(config.data, config.model, config.eval, folder / "runs" / "data")
    return seen["examples"], data.tokenizer, generate_dataset(config.data)["bio"]


def value_tokens(tokenizer, text: str, starts: list[int], ends: list[int]) -> dict[int, int]:
    """Token index (after the BOS) -> attribute index, for tokens overlapping a value's chars in
    the biography as it is tokenized (with its leading space)."""
    offsets = tokenizer(f" {text}", add_special_tokens=False,
                        return_offsets_mapping=True)["offset_mapping"]
    shift = 1 if tokenizer.bos_token_id is not None else 0
    covered = {}
    for index, (low, high) in enumerate(offsets):
        for attribute, (start, end) in enumerate(zip(starts, ends, strict=True)):
            if low < end + 1 and high > start + 1:
                covered[index + shift] = attribute
    return covered


def test_values_bio_loss_covers_exactly_the_value_tokens(monkeypatch, tmp_path):
    examples, tokenizer, bios = training_examples(monkeypatch, tmp_path, "values")
    assert len(examples["bio"]) == len(bios)
    for example, row in zip(examples["bio"], bios, strict=True):
        covered = value_tokens(tokenizer, row["text"], row["value_starts"], row["value_ends"])
        labelled = {i for i, label in enumerate(example.labels) if label != IGNORE}
        assert labelled == set(covered), row["text"]
        assert all(example.labels[i] == example.input_ids[i] for i in labelled)
        for attribute in range(len(ATTRIBUTES)):
            tokens = [example.input_ids[i] for i in sorted(covered) if covered[i] == attribute]
            start, end = row["value_starts"][attribute], row["value_ends"][attribute]
            assert tokenizer.decode(tokens).strip() == row["text"][start:end]


def test_all_bio_loss_covers_every_token(monkeypatch, tmp_path):
    examples, _, bios = training_examples(monkeypatch, tmp_path, "all")
    assert len(examples["bio"]) == len(bios)
    for example in examples["bio"]:
        assert example.labels[1:] == example.input_ids[1:]


# --- 10. A baseline built from a real result records the versions --------------------------


def test_baseline_from_a_real_result_records_versions(two_stage):
    result = two_stage.result
    baseline = baseline_from_results("seams", "hash", [result], hardware_class(), 0.01, 0.05,
                                     ["id_exact_match", "ood_exact_match"])
    versions = baseline["versions"]
    assert versions["torch"] == metadata.version("torch") == torch.__version__
    assert versions["transformers"] == metadata.version("transformers")
    assert versions["python"] == platform.python_version()
    assert baseline["git_revision"] == result["environment"]["git_revision"]
    assert baseline["hardware_class"] == result["environment"]["hardware"]


# --- 11. Paper models: the exact parameter counts docs/gpu.md quotes ------------------------


README_MODEL_NAMES = {"Llama-3.2-1B": "llama-3.2-1b", "3B": "llama-3.2-3b",
                      "Pythia-2.8B": "pythia-2.8b", "SmolLM2": "smollm2-135m"}


def readme_parameter_counts() -> dict[str, int]:
    """docs/gpu.md (the README's "Pretrained models, paper scale and GPUs" links it): "parameter
    counts tested against the published sizes: Llama-3.2-1B 1,235,814,400; 3B ...; SmolLM2
    134,515,008"."""
    text = " ".join(GPU_DOC.read_text().split())
    match = re.search(r"published sizes: ([^)]*)\)", text)
    assert match is not None, "docs/gpu.md no longer quotes the parameter counts"
    counts = {}
    for entry in match[1].split(";"):
        name, number = entry.strip().rsplit(" ", 1)
        counts[README_MODEL_NAMES[name]] = int(number.replace(",", ""))
    return counts


def test_paper_parameter_counts_are_the_numbers_the_gpu_doc_quotes():
    quoted = readme_parameter_counts()
    assert sorted(quoted) == sorted(README_MODEL_NAMES.values())
    assert {name: parameter_count(name) for name in quoted} == quoted


# --- 5, 6, 7. Verdicts through the `run` command: Holm, exit codes, JUnit -------------------


def fake_result(strategy: str, seed: int, ood: float, bio: float) -> dict[str, Any]:
    """Enough of a result.json for verdicts and reports (training is stubbed out)."""
    def proportion(value: float) -> dict[str, float]:
        return {"value": value, "low": max(value - 0.05, 0.0), "high": min(value + 0.05, 1.0),
                "n": 120}
    return {
        "schema_version": 1, "run_id": f"{strategy}-tiny-llama-s{seed}", "variant": "base",
        "strategy": strategy, "model": "tiny-llama", "seed": seed,
        "metrics": {"id_exact_match": proportion(1.0), "ood_exact_match": proportion(ood),
                    "bio_first_token_test": proportion(bio)},
        "per_question": {}, "loss_curve": [[1, 3.0], [2, 1.0]], "timings": {"total_s": 1.0},
        "trace": None,
    }


CLAIM = """
[[claims]]
name = "{name}"
why = "seam test"
metric = "{metric}"
kind = "greater"
a = "mixed"
b = "two-stage"
min_effect = {min_effect}
test = "welch"
expect = "{expect}"
"""


def suite_file(folder: Path, name: str, claims: list[dict[str, Any]]) -> str:
    text = f'name = "{name}"\nseeds = [0, 1, 2]\nstrategies = ["mixed", "two-stage"]\n'
    path = folder / f"{name}.toml"
    path.write_text(text + "".join(CLAIM.format(**claim) for claim in claims))
    return str(path)


def run_stubbed(monkeypatch, tmp_path: Path, results: dict[str, list[dict[str, Any]]],
                suites: list[str]) -> tuple[int, Path]:
    """`factrecall-bench run --suite A --suite B ...` with training replaced by fixed results."""
    from factrecall_bench import app as use_cases

    def fake_run_suite(suite, runs_dir, jobs, show_progress, options=None, shard=None):
        rows = [{"run_id": r["run_id"], "status": "finished", "reason": ""}
                for r in results[suite.name]]
        return results[suite.name], rows

    monkeypatch.setattr(use_cases, "run_suite", fake_run_suite)
    junit = tmp_path / "junit.xml"
    args = ["run", *[a for s in suites for a in ("--suite", s)], "--runs-dir",
            str(tmp_path / "runs"), "--baselines-dir", str(tmp_path / "none"), "--json",
            "--junit-xml", str(junit)]
    invoked = CliRunner().invoke(app, args)
    assert invoked.exception is None or isinstance(invoked.exception, SystemExit), invoked.output
    return invoked.exit_code, junit


def verdicts_of(tmp_path: Path, suite: str) -> list[dict[str, Any]]:
    return json.loads((tmp_path / "runs" / suite / "verdicts.json").read_text())["verdicts"]


def seed_results(ood: dict[str, list[float]], bio: dict[str, list[float]]) -> list[dict]:
    return [fake_result(strategy, seed, ood[strategy][seed], bio[strategy][seed])
            for strategy in ood for seed in range(3)]


def test_a_suites_claims_are_holm_corrected_together(monkeypatch, tmp_path):
    suite = suite_file(tmp_path, "holm", [
        {"name": "ood", "metric": "ood_exact_match", "min_effect": 0.0, "expect": "report"},
        {"name": "bio", "metric": "bio_first_token_test", "min_effect": 0.0, "expect": "report"}])
    results = {"holm": seed_results(
        ood={"mixed": [0.50, 0.56, 0.61], "two-stage": [0.44, 0.52, 0.55]},
        bio={"mixed": [0.70, 0.74, 0.80], "two-stage": [0.55, 0.60, 0.66]})}
    code, _ = run_stubbed(monkeypatch, tmp_path, results, [suite])
    assert code == 0
    verdicts = {v["name"]: v for v in verdicts_of(tmp_path, "holm")}
    raw = sorted((v["p_value"], name) for name, v in verdicts.items())
    assert all(0.0 < p < 0.5 for p, _ in raw) and raw[0][0] < raw[1][0]
    (p_low, low_name), (p_high, high_name) = raw
    holm_low = min(1.0, 2 * p_low)  # Holm over a family of two
    holm_high = max(holm_low, p_high)
    assert verdicts[low_name]["p_adjusted"] == pytest.approx(holm_low)
    assert verdicts[high_name]["p_adjusted"] == pytest.approx(holm_high)


FAILING = {"name": "mixed beats two-stage OOD", "metric": "ood_exact_match", "min_effect": 0.1,
           "expect": "holds"}
UNDECIDABLE = {"name": "shared parameters", "metric": "trace.shared_count@0.01",
               "min_effect": 0.0, "expect": "holds"}


@pytest.mark.parametrize("order", [("failing", "undecidable"), ("undecidable", "failing")])
def test_a_failed_suite_outranks_an_inconclusive_one(monkeypatch, tmp_path, order):
    paths = {"failing": suite_file(tmp_path, "failing", [FAILING]),
             "undecidable": suite_file(tmp_path, "undecidable", [UNDECIDABLE])}
    reversed_gap = seed_results(ood={"mixed": [0.10, 0.12, 0.11], "two-stage": [0.90, 0.91, 0.92]},
                                bio={"mixed": [0.5] * 3, "two-stage": [0.5] * 3})
    results = {"failing": reversed_gap, "undecidable": reversed_gap}  # no trace: undecidable
    code, junit = run_stubbed(monkeypatch, tmp_path, results, [paths[name] for name in order])
    assert [v["status"] for v in verdicts_of(tmp_path, "failing")] == ["fail"]
    assert [v["status"] for v in verdicts_of(tmp_path, "undecidable")] == ["inconclusive"]
    assert code == 1

    suites = {node.get("name"): node for node in ElementTree.parse(junit).getroot()}
    (failed_case,) = suites["failing"].iter("testcase")
    assert failed_case.get("name") == FAILING["name"]
    assert [child.tag for child in failed_case] == ["failure"]
    assert suites["failing"].get("failures") == "1"
    (undecided_case,) = suites["undecidable"].iter("testcase")
    assert [child.tag for child in undecided_case] == ["skipped"]
    assert suites["undecidable"].get("failures") == "0"
