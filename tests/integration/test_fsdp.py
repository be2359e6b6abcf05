"""FSDP2: each process holds a shard of every parameter. Trained, checkpointed, resumed, evaluated
and traced shard-locally, a run must give what the whole model gives (the DDP path, itself equal to
one process). On CPU accelerate's state is switched to FSDP2 by hand (it picks FSDP only when it
sees GPUs), then accelerate shards the model as on GPUs; the GPU test goes through
`accelerate launch` with the shipped config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import MICRO_SUITE, ROOT, TESTS, micro_result, run_cli

# One at a time under pytest-xdist (`--dist loadgroup`): each launch starts processes that
# meet at a rendezvous, two cores' worth.
pytestmark = pytest.mark.xdist_group("multi_process")


SUITE = """
name = "fsdp"
seeds = [0]
strategies = ["two-stage"]
models = ["tiny-llama"]
[data]
n_people = 20
bio_variants = 2
fullname = true
templates_per_attribute = 2
[model]
n_layer = 2
d_model = 32
n_head = 2
d_ff = 63  # odd: MLP rows split unevenly over the two processes
[train]
bio_epochs = 24
qa_epochs = 12
lr = 3e-3
stage2_lr = 3e-3
batch_size = 8
grad_accum = 2
checkpoint_every = 9
log_every = 2
"""


@pytest.fixture(scope="module")
def sharded_and_whole(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What tests/integration/fsdp_worker.py measured with two processes, sharded and whole."""
    work = tmp_path_factory.mktemp("fsdp")
    suite = work / "fsdp.toml"
    suite.write_text(SUITE)
    out = work / "out.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(TESTS / "integration" / "fsdp_worker.py"), str(suite), str(out), str(work)],
        capture_output=True, text=True, timeout=600, env=env, cwd=TESTS.parent)
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_sharded_training_gives_the_whole_models_update(sharded_and_whole):
    ddp, fsdp = sharded_and_whole["ddp"]["losses"], sharded_and_whole["fsdp"]["losses"]
    assert [step for step, _ in fsdp] == [step for step, _ in ddp] and len(ddp) > 50
    np.testing.assert_allclose([loss for _, loss in fsdp], [loss for _, loss in ddp], rtol=1e-4)
    assert sharded_and_whole["max_weight_difference"]["fsdp_vs_ddp"] < 1e-4


@pytest.mark.slow
def test_a_sharded_run_resumes_mid_phase_from_its_gathered_checkpoint(sharded_and_whole):
    """The optimizer state comes back too: a fresh AdamW would move the weights by ~lr."""
    assert sharded_and_whole["fsdp_checkpoints"] == ["step-00000207", "step-00000210"]
    resumed = sharded_and_whole["fsdp_resumed"]
    assert resumed["resumed_from"] == 207
    assert resumed["losses"] == [loss for loss in sharded_and_whole["fsdp"]["losses"]
                                 if loss[0] > 207]
    assert sharded_and_whole["max_weight_difference"]["fsdp_resumed_vs_fsdp"] < 1e-6


@pytest.mark.slow
def test_a_gathered_checkpoint_loads_whole_or_sharded_and_a_whole_one_is_refused_sharded(
        sharded_and_whole):
    loads = sharded_and_whole["optimizer_loads"]
    assert loads["fsdp_into_whole"]["tensors"] == loads["fsdp_into_sharded"]["tensors"] > 0
    assert loads["fsdp_into_whole"]["exp_avg_abs_sum"] == pytest.approx(
        loads["fsdp_into_sharded"]["exp_avg_abs_sum"], rel=1e-6)
    assert loads["fsdp_into_whole"]["exp_avg_abs_sum"] > 0
    assert "written without FSDP" in loads["whole_into_sharded"]["refused"]


@pytest.mark.slow
def test_sharded_evaluation_scores_every_item_as_the_whole_model(sharded_and_whole):
    recall = sharded_and_whole["recall"]
    assert recall["fsdp"] == recall["ddp"]
    # every question's exact match and first token, BIO recall of both groups, per attribute
    assert recall["ddp"]["per_question"]["id"]["first_token"].count(1) > 0  # something learned


@pytest.mark.slow
@pytest.mark.parametrize("ranking", ["global", "per_matrix"])
def test_the_shard_local_trace_equals_the_whole_models(sharded_and_whole, ranking):
    whole, sharded = (sharded_and_whole["trace"][layout][ranking] for layout in ("ddp", "fsdp"))
    assert sharded["per_k"] == whole["per_k"]  # counts, locations (heads, neurons), centralization
    assert sharded["ablation"] == whole["ablation"]  # shared, random and BIO-only resets
    assert sharded["consistency"]["cosine"] == pytest.approx(whole["consistency"]["cosine"])
    assert sharded["consistency"]["per_layer"] == pytest.approx(whole["consistency"]["per_layer"])
    assert all(entry["shared"]["count"] > 0 for entry in whole["per_k"].values())


@pytest.mark.parametrize(("version", "message"), [("1", "only FSDP2"), ("2", "needs CUDA GPUs")])
def test_fsdp_without_gpus_or_of_version_1_is_refused_with_one_line(tmp_path, version, message):
    completed = run_cli("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path), timeout=120,
                        env={"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": version,
                             "CUDA_VISIBLE_DEVICES": ""})
    assert completed.returncode == 2
    assert completed.stderr.strip().count("\n") == 0 and message in completed.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.gpu
def test_fsdp2_through_accelerate_launch_on_a_gpu(tmp_path):
    """The shipped config, one process (one GPU is all a test machine is sure to have)."""
    accelerate = shutil.which("accelerate") or "accelerate"
    completed = subprocess.run(
        [accelerate, "launch", "--config_file",
         str(ROOT / "configs" / "accelerate" / "fsdp2.yaml"),
         "--num_processes", "1", "-m", "factrecall_bench", "run", "--suite", str(MICRO_SUITE),
         "--runs-dir", str(tmp_path), "--no-check"], capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = micro_result(tmp_path)
    assert result["metrics"]["id_exact_match"]["n"] > 0 and result["trace"] is None
    again = run_cli("run", "--suite", str(MICRO_SUITE), "--runs-dir", str(tmp_path), "--no-check")
    assert again.returncode == 0 and "nothing to do" in again.stderr


def test_a_gathered_state_with_tied_weights_is_written_once_per_name(tmp_path):
    """Gathered whole states of tied models (SmolLM2) name one storage twice: both are written."""
    import torch
    from safetensors.torch import load_file

    from factrecall_bench.checkpoints import GatheredState, latest_checkpoint, save_checkpoint

    weight = torch.arange(6.0).reshape(3, 2)
    model = torch.nn.Linear(2, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    gathered = GatheredState({"embed.weight": weight, "lm_head.weight": weight}, {"state": {}})
    save_checkpoint(tmp_path, 3, model, optimizer, scheduler, phase_done=False, gathered=gathered)
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.optimizer_keys == "name"
    saved = load_file(str(checkpoint.path / "model.safetensors"))
    assert torch.equal(saved["embed.weight"], weight) and torch.equal(saved["lm_head.weight"], weight)
