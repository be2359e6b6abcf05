"""Planning without downloads: published parameter counts, and memory estimates that behave."""

from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from factrecall_bench.data.facts import load_fact_data
from factrecall_bench.errors import UserError
from factrecall_bench.model_families import published_models
from factrecall_bench.models import build_model, count_parameters
from factrecall_bench.plan import (
    OVER_MARK,
    SETTINGS,
    activation_bytes_per_token,
    architecture_config,
    memory_per_gpu,
    memory_settings,
    model_dims,
    parameter_count,
    plan_suite,
    render_plan,
)
from factrecall_bench.suite import load_suite
from tests.conftest import run_cli

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


@pytest.mark.parametrize("name", sorted(published_models()))
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


@pytest.mark.parametrize("name", sorted(published_models()))
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
    assert "configs/accelerate/{ddp,fsdp2}.yaml" in rendered(plan)


def rendered(plan: dict, width: int = 80) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render_plan(plan))
    return console.file.getvalue()


def marked_over(line: str) -> list[bool]:
    """Per memory cell of a rendered memory row: marked as over the limit?"""
    cells = re.findall(r"(\d+\.\d+)( \S)?", line.split("M ", 1)[1])
    return [mark == f" {OVER_MARK}" for _, mark in cells]


@pytest.mark.parametrize("gpu_memory", [16, 30])
def test_paper_plan_marks_exactly_the_settings_that_do_not_fit(gpu_memory):
    plan = plan_suite(load_suite("paper"), gpus=1, gpu_memory_gib=gpu_memory)
    text = rendered(plan)
    for row in plan["rows"]:
        memory = row["memory_gib"]
        over = [memory[s][k]["total"] > gpu_memory for s, k in SETTINGS]
        assert [not memory[s][k]["fits"] for s, k in SETTINGS] == over
        (line,) = [line for line in text.splitlines() if line.startswith(f"{row['model']} ")
                   and f"{row['parameters'] / 1e6:,.0f}M" in line]
        assert marked_over(line) == over
    assert any(not row["fits"]["fsdp2"] for row in plan["rows"])  # the case to mark is there


def test_paper_plan_at_16_gib_names_the_fewest_gpus_that_fit():
    plan = plan_suite(load_suite("paper"), gpus=1, gpu_memory_gib=16)
    text = " ".join(rendered(plan, width=200).split())
    configs = {config.model.name: config for config in load_suite("paper").runs}
    for row in plan["rows"]:
        dims = model_dims(architecture_config(row["model"]))
        gpus = row["fits_with"]["gpus"]
        fitting = memory_settings(dims, configs[row["model"]], gpus, 16)
        fewer = memory_settings(dims, configs[row["model"]], gpus - 1, 16)
        assert any(fitting[s][k]["fits"] for s, k in SETTINGS)
        assert not any(fewer[s][k]["fits"] for s, k in SETTINGS)
        assert f"{row['model']}: no setting fits 16 GiB on 1 GPU;" in text
        assert f"(--gpus {gpus})" in text


@pytest.mark.parametrize("suite", ["paper", "sensitivity"])
def test_cli_plan_prints_whole_model_names_at_80_columns(suite):
    plan = plan_suite(load_suite(suite), gpus=1, gpu_memory_gib=16)
    done = run_cli("plan", "--suite", suite, "--gpu-memory", "16", env={"COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "\u2026" not in done.stdout and max(map(len, lines)) <= 80
    for row in plan["rows"]:  # every row of both tables starts with the whole name
        label = row["model"] if row["variant"] == "base" else f"{row['model']} ({row['variant']})"
        assert sum(line.startswith(label + " ") for line in lines) >= 2, label
        assert any(line.startswith(label + " ") and row["strategy"] in line for line in lines)


def test_names_too_long_for_the_tables_go_whole_into_a_key():
    plan = plan_suite(load_suite("paper"), gpus=1, gpu_memory_gib=16)
    for row in plan["rows"]:
        row["model"] = "hf:/home/someone/a/rather/long/folder/of/checkpoints/" + row["model"][3:]
    text = rendered(plan)
    assert "\u2026" not in text
    for number, name in enumerate(dict.fromkeys(row["model"] for row in plan["rows"]), 1):
        assert f"#{number} {name}\n" in text


def test_plan_counts_the_parameters_a_run_of_the_cpu_suite_builds(tmp_path):
    config = load_suite("cpu").runs[0]
    data = load_fact_data(config.data, config.model, config.eval, tmp_path / "data")
    built = build_model(config.model, data.tokenizer, config.seed)
    plan = plan_suite(load_suite("cpu"), gpus=1, gpu_memory_gib=16)
    for row in plan["rows"]:
        assert row["parameters"] == count_parameters(built)
        assert row["vocab_size"] == len(data.tokenizer)


def test_cpu_plan_says_gpu_times_are_not_cpu_times():
    plan = plan_suite(load_suite("cpu"), gpus=1, gpu_memory_gib=16)
    text = rendered(plan)
    assert 0 < plan["suite_hours"] < 1 / 3600
    assert " 0 s" not in text and "<1 s" in text
    assert "needs no GPU" in text and "2.5-3 min per run" in text


def test_bad_plan_settings_are_user_errors():
    with pytest.raises(UserError):
        plan_suite(load_suite("cpu"), gpus=0, gpu_memory_gib=80)
