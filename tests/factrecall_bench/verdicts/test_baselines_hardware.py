"""Baselines per hardware class (issue 17): runs are judged against the baseline of the hardware
they were made on, `baselines/<suite>.json` for CPUs (the shipped cpu.json among them) and
`baselines/<suite>@<class>.json` for another class; no baseline for the runs' class is one
inconclusive verdict that says so, never a comparison with another class's numbers."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from factrecall_bench import app, environment, exit_codes
from factrecall_bench.errors import UserError
from factrecall_bench.resources import default_baselines_dir
from factrecall_bench.suite import load_suite
from factrecall_bench.verdicts import judging
from factrecall_bench.verdicts.baselines import (
    baseline_class,
    baseline_from_results,
    baseline_path,
    read_baseline,
    write_baseline,
)
from factrecall_bench.verdicts.regressions import BaselineSubject, RegressionSettings
from tests.conftest import MICRO_SUITE, TINY_SUITE
from tests.factrecall_bench.verdicts.test_baselines import _results

H100 = "cuda:NVIDIA H100 80GB HBM3"
METRICS = ["ood_exact_match", "id_exact_match"]


def _on(hardware: str, accuracy: float, seed: int = 0) -> list[dict]:
    results = _results(accuracy, seed)
    for result in results:
        result["environment"] = {**result["environment"], "hardware": hardware}
    return results


def _store(folder: Path, results: list[dict], hardware: str) -> Path:
    suite = _tiny_subject()
    baseline = baseline_from_results(suite.suite_name, suite.suite_hash, results, hardware,
                                     alpha=0.05, min_effect=0.05, metrics=METRICS)
    path = baseline_path(folder, suite.suite_name, hardware)
    write_baseline(path, baseline)
    return path


def _tiny_subject() -> BaselineSubject:
    """The tiny suite as the baseline comparison reads it, its regression check on."""
    return dataclasses.replace(load_suite(str(TINY_SUITE)).baseline_subject,
                               settings=RegressionSettings(enabled=True))


@pytest.mark.parametrize("hardware, klass", [
    ("cpu:x86_64", "cpu"), ("cpu:arm64", "cpu"), ("cpu", "cpu"), ("", "cpu"),
    (H100, "cuda-nvidia-h100-80gb-hbm3"), ("cuda:Tesla T4", "cuda-tesla-t4"),
    ("cuda-tesla-t4", "cuda-tesla-t4"),
])
def test_the_class_of_recorded_hardware(hardware, klass):
    assert baseline_class(hardware) == klass
    assert baseline_class(klass) == klass  # a class is its own class


def test_cpu_baselines_keep_their_file_name_and_other_classes_get_their_own(tmp_path, monkeypatch):
    assert baseline_path(tmp_path, "cpu", "cpu:x86_64") == tmp_path / "cpu.json"
    assert baseline_path(tmp_path, "cpu", H100) == tmp_path / "cpu@cuda-nvidia-h100-80gb-hbm3.json"
    monkeypatch.setattr(environment, "hardware_class", lambda: "cuda:Tesla T4")
    assert baseline_path(tmp_path, "cpu") == tmp_path / "cpu@cuda-tesla-t4.json"  # this machine's
    monkeypatch.setattr(environment, "hardware_class", lambda: "cpu:aarch64")
    assert baseline_path(tmp_path, "cpu") == tmp_path / "cpu.json"


def test_the_shipped_cpu_baseline_is_the_cpu_class_one():
    path = baseline_path(default_baselines_dir(), "cpu", "cpu")
    baseline = read_baseline(path, expected_suite="cpu")
    assert baseline_class(baseline["hardware_class"]) == "cpu"


def test_cpu_runs_are_judged_against_the_cpu_baseline_and_gpu_runs_against_theirs(tmp_path):
    _store(tmp_path, _on("cpu:x86_64", 0.7), "cpu:x86_64")
    _store(tmp_path, _on(H100, 0.3), H100)  # far below: a comparison with it would fail
    suite = _tiny_subject()
    on_cpu = judging.judge_baseline(suite, _on("cpu:x86_64", 0.7, seed=1), tmp_path)
    assert on_cpu and all(verdict.status == "pass" for verdict in on_cpu)
    on_gpu = judging.judge_baseline(suite, _on(H100, 0.3, seed=1), tmp_path)
    assert on_gpu and all(verdict.status == "pass" for verdict in on_gpu)
    dropped = judging.judge_baseline(suite, _on(H100, 0.7, seed=1), tmp_path)
    assert any(verdict.status == "fail" for verdict in dropped)  # 0.3 -> 0.7 is a change too


def test_gpu_runs_without_a_gpu_baseline_are_one_inconclusive_verdict(tmp_path, capsys):
    _store(tmp_path, _on("cpu:x86_64", 0.7), "cpu:x86_64")
    [verdict] = judging.judge_baseline(_tiny_subject(), _on(H100, 0.7), tmp_path)
    assert (verdict.status, verdict.kind, verdict.outcome) == (
        "inconclusive", "regression", "undecided")
    assert verdict.detail == (
        f"no baseline for cuda-nvidia-h100-80gb-hbm3 hardware at "
        f"{tmp_path / 'tiny@cuda-nvidia-h100-80gb-hbm3.json'} (this suite's other baselines: "
        f"tiny.json): create one with `factrecall-bench baseline update --suite {TINY_SUITE}` on "
        "cuda-nvidia-h100-80gb-hbm3 hardware")
    assert capsys.readouterr().err == ""


def test_a_baseline_in_the_cpu_file_made_on_a_gpu_is_not_used_for_cpu_runs(tmp_path):
    path = _store(tmp_path, _on(H100, 0.7), "cpu:x86_64")
    text = json.loads(path.read_text("utf-8"))
    write_baseline(path, {**text, "hardware_class": H100})
    [verdict] = judging.judge_baseline(_tiny_subject(), _on("cpu:x86_64", 0.7), tmp_path)
    assert verdict.status == "inconclusive"
    assert verdict.detail.startswith(f"no baseline for cpu hardware: {path} was made on {H100}")


def test_runs_on_two_classes_have_no_single_baseline(tmp_path):
    _store(tmp_path, _on("cpu:x86_64", 0.7), "cpu:x86_64")
    mixed = _on("cpu:x86_64", 0.7)[:3] + _on(H100, 0.7)[3:]
    [verdict] = judging.judge_baseline(_tiny_subject(), mixed, tmp_path)
    assert verdict.status == "inconclusive" and "2 hardware classes" in verdict.detail


def test_another_cpu_is_the_same_class_with_a_note(tmp_path, capsys):
    _store(tmp_path, _on("cpu:x86_64", 0.7), "cpu:x86_64")
    verdicts = judging.judge_baseline(_tiny_subject(), _on("cpu:arm64", 0.7, seed=1), tmp_path)
    assert verdicts and all(verdict.status == "pass" for verdict in verdicts)
    assert "note: baseline made on cpu:x86_64, this is cpu:arm64" in capsys.readouterr().err


def test_runs_that_record_no_hardware_take_this_machines_class(tmp_path, monkeypatch):
    _store(tmp_path, _on("cpu:x86_64", 0.7), "cpu:x86_64")
    results = _on("cpu:x86_64", 0.7, seed=1)
    for result in results:
        del result["environment"]["hardware"]
    monkeypatch.setattr(judging, "hardware_class", lambda: "cpu:x86_64")
    assert all(v.status == "pass" for v in judging.judge_baseline(_tiny_subject(), results, tmp_path))
    monkeypatch.setattr(judging, "hardware_class", lambda: H100)
    [verdict] = judging.judge_baseline(_tiny_subject(), results, tmp_path)
    assert verdict.status == "inconclusive"


def test_baseline_update_and_check_on_another_class(tmp_path, monkeypatch, capsys):
    """The real commands: a baseline made on CPU, the same runs then recorded as made on a GPU
    (the class function monkeypatched): check is inconclusive (exit 3, not 1) until `baseline
    update` on that class writes its own file, which leaves cpu's alone."""
    suite_file = tmp_path / "microreg.toml"
    suite_file.write_text(MICRO_SUITE.read_text("utf-8").replace('name = "micro"', 'name = "microreg"')
                          + '\n[regression]\nmetrics = ["id_exact_match"]\n')
    runs, baselines = tmp_path / "runs", tmp_path / "baselines"
    monkeypatch.setattr(environment, "hardware_class", lambda: "cpu:x86_64")
    assert app.baseline_update_command(str(suite_file), runs, baselines) == exit_codes.OK
    cpu_file = baselines / "microreg.json"
    assert read_baseline(cpu_file)["hardware_class"] == "cpu:x86_64"
    assert app.check_command(str(suite_file), runs, baselines, as_json=True) == exit_codes.OK

    monkeypatch.setattr(environment, "hardware_class", lambda: "cuda:Imaginary GPU")
    monkeypatch.setattr(judging, "hardware_class", lambda: "cuda:Imaginary GPU")
    (result_file,) = runs.glob("microreg/*/result.json")
    result = json.loads(result_file.read_text("utf-8"))
    result["environment"]["hardware"] = "cuda:Imaginary GPU"
    result_file.write_text(json.dumps(result), "utf-8")
    capsys.readouterr()
    assert app.check_command(str(suite_file), runs, baselines, as_json=True) == (
        exit_codes.INCONCLUSIVE)
    [verdict] = json.loads(capsys.readouterr().out)["verdicts"]
    assert verdict["status"] == "inconclusive"
    assert "no baseline for cuda-imaginary-gpu hardware" in verdict["detail"]

    cpu_text = cpu_file.read_text("utf-8")
    assert app.baseline_update_command(str(suite_file), runs, baselines) == exit_codes.OK
    gpu_file = baselines / "microreg@cuda-imaginary-gpu.json"
    assert read_baseline(gpu_file)["hardware_class"] == "cuda:Imaginary GPU"
    assert cpu_file.read_text("utf-8") == cpu_text
    assert app.check_command(str(suite_file), runs, baselines, as_json=True) == exit_codes.OK


def _record_hardware(result_file: Path, hardware: str) -> None:
    result = json.loads(result_file.read_text("utf-8"))
    result["environment"]["hardware"] = hardware
    result_file.write_text(json.dumps(result), "utf-8")


def test_baseline_update_stores_the_class_the_runs_were_made_on(tmp_path, monkeypatch):
    """Runs trained on GPU nodes (`run --executor slurm`), `baseline update` on a CPU login node:
    the baseline is the GPU class's. Runs of two classes store nothing and say why."""
    suite_file = tmp_path / "microreg.toml"
    suite_file.write_text(MICRO_SUITE.read_text("utf-8").replace('name = "micro"', 'name = "microreg"')
                          .replace("seeds = [0]", "seeds = [0, 1]")
                          + '\n[regression]\nmetrics = ["id_exact_match"]\n')
    runs, baselines = tmp_path / "runs", tmp_path / "baselines"
    monkeypatch.setattr(environment, "hardware_class", lambda: "cpu:x86_64")
    monkeypatch.setattr(judging, "hardware_class", lambda: "cpu:x86_64")
    assert app.baseline_update_command(str(suite_file), runs, baselines) == exit_codes.OK
    cpu_file = baselines / "microreg.json"
    cpu_text = cpu_file.read_text("utf-8")

    first, second = sorted(runs.glob("microreg/*/result.json"))
    _record_hardware(first, "cuda:Imaginary GPU")
    with pytest.raises(UserError, match="made on 2 hardware classes .cpu, cuda-imaginary-gpu."):
        app.baseline_update_command(str(suite_file), runs, baselines)
    assert sorted(p.name for p in baselines.iterdir()) == ["microreg.json"]

    _record_hardware(second, "cuda:Imaginary GPU")
    assert app.baseline_update_command(str(suite_file), runs, baselines) == exit_codes.OK
    gpu_file = baselines / "microreg@cuda-imaginary-gpu.json"
    assert read_baseline(gpu_file)["hardware_class"] == "cuda:Imaginary GPU"
    assert cpu_file.read_text("utf-8") == cpu_text
