"""Experiment trackers through accelerate: TensorBoard for real (its event files read back equal
the run's events), a missing tracker refused before any run, trackers finished on failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from factrecall_bench import orchestrate
from factrecall_bench.config import config_hash
from factrecall_bench.errors import UserError
from factrecall_bench.events import read_events
from factrecall_bench.runfolder import run_dir
from factrecall_bench.runner import RunOptions, run_one
from factrecall_bench.suite import load_suite
from factrecall_bench.tracking import check_trackers, flat_config, requested_trackers, tracker_values
from tests.conftest import MICRO_SUITE


def micro_config():
    return load_suite(str(MICRO_SUITE)).runs[0]


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The micro run trained with log_with="tensorboard": its folder and its result."""
    runs = tmp_path_factory.mktemp("tracked")
    config = micro_config()
    outcome = run_one(config, runs, options=RunOptions(log_with="tensorboard"))
    assert outcome.status == "finished", outcome.reason
    return run_dir(runs, config), outcome.result


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder / "tracking" / "micro"))  # the project: the suite
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


@pytest.mark.slow
def test_tensorboard_curves_are_the_step_events(tensorboard_run):
    folder, _ = tensorboard_run
    logged = scalars(folder)
    steps = [e for e in read_events(folder / "events.jsonl").events if e["event"] == "step"]
    assert steps
    for key in ("loss", "lr", "tokens_per_s"):
        assert logged[f"train/{key}"] == [(e["step"], pytest.approx(e[key], rel=1e-6))
                                          for e in steps], key
    for key in ("loss_bio", "loss_qa"):
        expected = [(e["step"], pytest.approx(e[key], rel=1e-6)) for e in steps if key in e]
        assert expected and logged[f"train/{key}"] == expected, key


@pytest.mark.slow
def test_tensorboard_has_every_evaluation_and_the_final_metrics(tensorboard_run):
    folder, result = tensorboard_run
    logged = scalars(folder)
    evals = [e for e in read_events(folder / "events.jsonl").events if e["event"] == "eval"]
    assert {e["phase"] for e in evals} >= {"bio", "final"}  # a phase end and the final one
    for name in result["metrics"]:
        assert logged[f"eval/{name}"] == [(e["step"], pytest.approx(e["metrics"][name], abs=1e-6))
                                          for e in evals]
        assert logged[f"final/{name}"] == [(result["total_steps"], pytest.approx(
            result["metrics"][name]["value"], abs=1e-6))]


@pytest.mark.slow
def test_tracking_changes_neither_the_run_id_nor_its_reuse(tensorboard_run):
    folder, result = tensorboard_run
    config = micro_config()
    assert folder.name == config.run_id and result["config_hash"] == config_hash(config)
    assert run_one(config, folder.parent.parent).status == "skipped"  # no options: the same run
    hparams = next((folder / "tracking").rglob("hparams.yml")).read_text()
    assert config.run_id in hparams and "train.lr" in hparams


def test_a_tracker_that_is_not_installed_is_one_clear_line(monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(UserError, match=r"^--log-with wandb: the wandb package is not installed"):
        check_trackers("wandb")
    with pytest.raises(UserError, match="not a tracker accelerate knows"):
        check_trackers("tensorbored")
    check_trackers(None)  # nothing asked: nothing checked


def test_a_missing_tracker_stops_the_suite_before_any_run(monkeypatch, tmp_path):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(UserError, match="tensorboard package is not installed"):
        orchestrate.run_configs([micro_config()], tmp_path, options=RunOptions(log_with="tensorboard"))
    assert not any(tmp_path.iterdir())
    outcome = run_one(micro_config(), tmp_path, options=RunOptions(log_with="tensorboard"))
    assert outcome.status == "failed"  # called directly: the run fails, with the same line
    assert outcome.reason == ("starting the trackers: --log-with tensorboard: the tensorboard "
                              "package is not installed (pip install 'factrecall-bench[tensorboard]')")


def test_workers_get_the_run_options(monkeypatch, tmp_path):
    captured = {}

    def fake_map(self, target, tasks):
        captured["options"] = target.keywords["options"]
        return [orchestrate.TaskEnd(("failed", "not run"), True, 0) for _ in tasks]

    monkeypatch.setattr(orchestrate.ProcessPool, "map", fake_map)
    options = RunOptions(log_with="tensorboard", log_samples=True)
    orchestrate.run_configs([micro_config()], tmp_path, jobs=2, options=options)
    assert captured["options"] == options


def test_trackers_are_finished_when_the_run_fails(monkeypatch, tmp_path):
    import accelerate.tracking

    import factrecall_bench.runner as runner

    finished = []
    monkeypatch.setattr(accelerate.tracking.TensorBoardTracker, "finish",
                        lambda self: finished.append(self.run_name))

    def broken(*args, **kwargs):
        raise RuntimeError("the data would not load")

    monkeypatch.setattr(runner, "load_fact_data", broken)
    outcome = run_one(micro_config(), tmp_path, options=RunOptions(log_with="tensorboard"))
    assert outcome.status == "failed" and "the data would not load" in outcome.reason
    assert finished == ["micro"]


def test_flat_config_and_event_values():
    assert requested_trackers(" TensorBoard, wandb ,") == ["tensorboard", "wandb"]
    flat = flat_config({"train": {"lr": 0.1, "phases": [1, 2]}, "seed": 0, "gate": None})
    assert flat == {"train.lr": 0.1, "train.phases": "[1, 2]", "seed": 0, "gate": "null"}
    step = {"event": "step", "step": 5, "loss": 2.0, "lr": 1e-3, "tokens_per_s": 10.0, "phase": "bio"}
    assert tracker_values(step) == ({"train/loss": 2.0, "train/lr": 1e-3,
                                     "train/tokens_per_s": 10.0}, 5)
    assert tracker_values({"event": "eval", "step": 7, "phase": "qa",
                           "metrics": {"ood_exact_match": 0.5}}) == ({"eval/ood_exact_match": 0.5}, 7)
    assert tracker_values({"event": "checkpoint", "step": 7, "path": "x"}) is None
