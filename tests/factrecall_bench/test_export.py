"""`factrecall-bench export`: a finished run's model and tokenizer through save_pretrained, loaded
back with the Auto classes, score the run's exact match; anything else is refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from factrecall_bench.errors import UserError
from factrecall_bench.export import export_run
from tests.conftest import MICRO_SUITE, run_cli

# The module trains the micro run once, in a CLI subprocess, for all but one of its tests.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder of the micro suite's one run, trained once for this module."""
    runs = tmp_path_factory.mktemp("export-runs")
    completed = run_cli("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(runs), "--no-check")
    assert completed.returncode == 0, completed.stderr
    (result_file,) = runs.glob("micro/*/result.json")
    return result_file.parent


def _result(run_folder: Path) -> dict:
    return json.loads((run_folder / "result.json").read_text())


def _questions(run_folder: Path) -> dict[str, tuple[str, str]]:
    """question_id -> (prompt, answer) of the run's dataset, read straight from its Arrow files."""
    (dataset_folder,) = (run_folder.parent.parent / "data").glob("biosdata-*/dataset")
    dataset = datasets.load_from_disk(str(dataset_folder))
    return {row["question_id"]: (row["prompt"], row["answer"])
            for split in ("qa_train", "qa_test") for row in dataset[split]}


def _greedy_exact_match(model, tokenizer, prompt: str, answer: str) -> int:
    """1 iff greedy generation, one question at a time (no padding), yields exactly the answer's
    tokens and then stops with the end token."""
    prompt_ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    target = tokenizer(f" {answer}", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    input_ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        output = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                do_sample=False, max_new_tokens=len(target),
                                eos_token_id=tokenizer.eos_token_id,
                                pad_token_id=tokenizer.pad_token_id)
    return int(output[0, len(prompt_ids):].tolist() == target)


def test_exported_model_loads_and_scores_the_runs_exact_match(micro_run, tmp_path):
    out = tmp_path / "exports" / "micro-model"  # its parent does not exist yet
    completed = run_cli("export", str(micro_run), "--out", str(out))
    assert completed.returncode == 0, completed.stderr
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    result, questions = _result(micro_run), _questions(micro_run)
    for split in ("id", "ood"):
        stored = result["per_question"][split]
        scored = [_greedy_exact_match(model, tokenizer, *questions[qid])
                  for qid in stored["question_ids"]]
        assert scored == stored["exact_match"], split
        metric = result["metrics"][f"{split}_exact_match"]
        assert len(scored) == metric["n"] and sum(scored) / len(scored) == metric["value"]
    assert result["metrics"]["id_exact_match"]["value"] > 0.5  # a trained model, not a blank one


def test_export_says_where_it_came_from(micro_run, tmp_path):
    record = export_run(micro_run, tmp_path / "model")
    result = _result(micro_run)
    written = json.loads((tmp_path / "model" / "export.json").read_text())
    assert written == json.loads(json.dumps(record))
    assert written["run_id"] == result["run_id"] and written["config_hash"] == result["config_hash"]
    assert written["git_revision"] == result["environment"]["git_revision"]
    assert written["metrics"] == result["metrics"] and written["step"] == result["total_steps"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert result["run_id"] in card and result["config_hash"] in card
    assert not list(tmp_path.glob(".*")), "a temp folder was left beside the export"


def test_export_into_the_current_empty_folder(micro_run, tmp_path, monkeypatch):
    out = tmp_path / "empty"
    out.mkdir()
    monkeypatch.chdir(out)
    export_run(micro_run, Path("."))
    assert (out / "export.json").is_file() and (out / "model.safetensors").is_file()
    assert not list(out.glob(".factrecall-export-*"))


def test_a_non_empty_out_folder_is_refused_and_keeps_its_files(micro_run, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    completed = run_cli("export", str(micro_run), "--out", str(out))
    assert completed.returncode == 2, completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and "not empty" in completed.stderr
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert (out / "notes.txt").read_text() == "keep me"


def test_an_out_path_that_is_a_file_is_refused(micro_run, tmp_path):
    out = tmp_path / "model"
    out.write_text("a file of mine")
    with pytest.raises(UserError, match="is a file"):
        export_run(micro_run, out)
    assert out.read_text() == "a file of mine"


def test_a_folder_that_is_not_a_run_is_refused(tmp_path):
    (tmp_path / "some-folder").mkdir()
    completed = run_cli("export", str(tmp_path / "some-folder"), "--out", str(tmp_path / "out"))
    assert completed.returncode == 2 and "no finished run" in completed.stderr, completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1
    with pytest.raises(UserError, match="not a run folder"):
        export_run(tmp_path / "missing", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _copied_run(micro_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the run (to damage) and its final checkpoint."""
    copy = tmp_path / "runs" / "micro" / micro_run.name
    shutil.copytree(micro_run, copy)
    final = copy / "checkpoints" / f"step-{_result(copy)['total_steps']:08d}"
    assert final.is_dir()
    return copy, final


def test_a_corrupted_final_checkpoint_is_refused(micro_run, tmp_path):
    copy, final = _copied_run(micro_run, tmp_path)
    weights = bytearray((final / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (final / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(UserError, match="checksum"):  # never an earlier checkpoint instead
        export_run(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_missing_final_checkpoint_is_refused(micro_run, tmp_path):
    copy, final = _copied_run(micro_run, tmp_path)
    shutil.rmtree(final)
    with pytest.raises(UserError, match="missing"):
        export_run(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()
