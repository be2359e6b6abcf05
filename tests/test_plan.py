"""Planning without downloads: published parameter counts, and memory estimates that behave."""

from __future__ import annotations

import pytest
from rich.table import Table

from factrecall_bench.errors import UserError
from factrecall_bench.plan import (
    PAPER_ARCHITECTURES,
    activation_bytes_per_token,
    architecture_config,
    memory_per_gpu,
    model_dims,
    parameter_count,
    plan_suite,
    render_plan,
)
from factrecall_bench.suite import load_suite

PUBLISHED = {"llama-3.2-1b": 1.24e9, "llama-3.2-3b": 3.21e9, "pythia-2.8b": 2.78e9,
             "smollm2-135m": 135e6}
TOKENS = 16 * 128


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_sizes(name):
    assert parameter_count(name) == pytest.approx(PUBLISHED[name], rel=0.02)


def test_suite_model_names_resolve_to_their_architecture():
    assert parameter_count("hf:meta-llama/Llama-3.2-1B") == parameter_count("llama-3.2-1b")
    assert parameter_count("hf:EleutherAI/pythia-2.8b") == parameter_count("pythia-2.8b")


def test_unknown_model_is_a_user_error():
    with pytest.raises(UserError, match="no architecture known"):
        architecture_config("hf:someone/unknown-model")


def test_dims_split_parameters_into_layers_and_the_rest():
    dims = model_dims(architecture_config("llama-3.2-1b"))
    assert dims.layers * dims.layer_parameters + dims.root_parameters == dims.parameters
    assert dims.root_parameters == 128256 * 2048 + 2048  # tied embeddings + final norm
    assert not model_dims(architecture_config("pythia-2.8b")).gated_mlp


@pytest.mark.parametrize("name", sorted(PAPER_ARCHITECTURES))
@pytest.mark.parametrize("gpus", [2, 4, 8])
def test_fsdp2_needs_less_memory_per_gpu_than_ddp(name, gpus):
    dims = model_dims(architecture_config(name))
    ddp = memory_per_gpu(dims, "ddp", gpus, TOKENS, checkpointing=False)
    fsdp2 = memory_per_gpu(dims, "fsdp2", gpus, TOKENS, checkpointing=False)
    assert fsdp2.total < ddp.total
    assert fsdp2.activations == ddp.activations


def test_fsdp2_memory_falls_with_more_gpus_and_ddp_does_not():
    dims = model_dims(architecture_config("llama-3.2-3b"))
    fsdp2 = [memory_per_gpu(dims, "fsdp2", n, TOKENS, False).total for n in (1, 2, 4, 8)]
    ddp = {memory_per_gpu(dims, "ddp", n, TOKENS, False).total for n in (1, 2, 4, 8)}
    assert fsdp2 == sorted(fsdp2, reverse=True)
    assert len(ddp) == 1


@pytest.mark.parametrize("name", sorted(PAPER_ARCHITECTURES))
def test_checkpointing_lowers_activations(name):
    dims = model_dims(architecture_config(name))
    assert activation_bytes_per_token(dims, True) < activation_bytes_per_token(dims, False)
    plain = memory_per_gpu(dims, "ddp", 1, TOKENS, checkpointing=False)
    checkpointed = memory_per_gpu(dims, "ddp", 1, TOKENS, checkpointing=True)
    assert checkpointed.activations < plain.activations
    assert checkpointed.states == plain.states


def test_states_are_sixteen_bytes_per_parameter_under_ddp():
    dims = model_dims(architecture_config("smollm2-135m"))
    estimate = memory_per_gpu(dims, "ddp", 1, 0, checkpointing=False)
    assert estimate.states * 2**30 == pytest.approx(16 * dims.parameters)
    assert estimate.activations == 0


def test_plan_of_the_paper_suite():
    plan = plan_suite(load_suite("paper"), gpus=8, gpu_memory_gib=80)
    models = {row["model"] for row in plan["rows"]}
    assert models == {"hf:meta-llama/Llama-3.2-1B", "hf:EleutherAI/pythia-2.8b"}
    assert {row["strategy"] for row in plan["rows"]} == {"mixed", "two-stage"}
    for row in plan["rows"]:
        assert row["fits"]["fsdp2"]
        assert row["tokens_per_step"] > 0 and row["run_hours"] > 0
        memory = row["memory_gib"]
        assert memory["fsdp2"]["checkpointing"]["total"] < memory["ddp"]["no_checkpointing"]["total"]
    table = render_plan(plan)
    assert isinstance(table, Table) and "fsdp2.yaml" in str(table.caption)


def test_plan_of_the_cpu_suite_uses_its_tiny_model():
    plan = plan_suite(load_suite("cpu"), gpus=1, gpu_memory_gib=16)
    assert all(row["parameters"] < 5e6 for row in plan["rows"])
    assert render_plan(plan).row_count == len(plan["rows"])


def test_bad_plan_settings_are_user_errors():
    with pytest.raises(UserError):
        plan_suite(load_suite("cpu"), gpus=0, gpu_memory_gib=80)
