"""The registries at the extension points: a toy metric and a toy model family, added through
`register_metric` / `register_model_family` alone, reach every reader (evaluation, the trace's
ablation, the report, the TUI's rows and curves, the regression defaults; the model build, the
trace's location, plan and the run's revision). Each registration is undone after its test."""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import PhiForCausalLM

from factrecall_bench import metrics as metric_registry
from factrecall_bench import model_families as family_registry
from factrecall_bench.config import ModelSpec
from factrecall_bench.data.examples import BioItem, QAItem
from factrecall_bench.data.facts import FactData
from factrecall_bench.errors import UserError
from factrecall_bench.identity import model_revision
from factrecall_bench.metrics import Metric, register_metric
from factrecall_bench.model_families import (
    ModelFamily,
    PackagedWeights,
    ParameterNames,
    PublishedModel,
    register_model_family,
)
from factrecall_bench.models import build_model, check_model_name, count_parameters, tiny_architecture
from factrecall_bench.plan import activation_bytes_per_token, architecture_config, model_dims
from factrecall_bench.report import markdown_report, summary_rows
from factrecall_bench.runner import evaluate_recall
from factrecall_bench.trace.ablation import ablate
from factrecall_bench.trace.hook import ablation_evaluator
from factrecall_bench.trace.location import layer_of, locate, parameter_kind
from factrecall_bench.tui.curves_view import curve_rows
from factrecall_bench.tui.format import metric_label
from factrecall_bench.tui.results_view import result_columns, result_rows
from factrecall_bench.tui.run_state import RunState
from factrecall_bench.verdicts import RegressionSettings

TOY = "bio_train_first_token_toy"
PREDICTED = 7
"""The token the stub model always predicts."""


@pytest.fixture
def toy_metric():
    """BIO first-token recall of P_train again, under another name, lower-is-better (so the
    ablation's direction shows), in every place a metric can appear."""
    metric = register_metric(Metric(
        TOY, source="bio_train", score="first_token", label="Toy recall", column="Toy",
        higher_is_better=False, per_attribute=True, ablated=True, summarized=True, shown=True,
        curve="Toy", regression_checked=True))
    yield metric
    del metric_registry.METRICS[TOY]


def test_a_metric_name_is_registered_once(toy_metric):
    with pytest.raises(ValueError, match="already registered"):
        register_metric(toy_metric)


class ConstantModel(nn.Module):
    """Predicts PREDICTED as the next token everywhere."""

    def __init__(self, vocab: int = 12) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.vocab = vocab

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., PREDICTED] = 1.0
        return SimpleNamespace(logits=logits)


def _fact_data() -> FactData:
    """Two P_train biographies: the values' first tokens are city 7, 7 and year 9, 7."""
    bio_train = [BioItem(0, [1, 7, 9, 2], {"city": (1, 2), "year": (2, 3)}),
                 BioItem(1, [1, 7, 7, 2], {"city": (1, 2), "year": (2, 3)})]
    question = QAItem("p0/city", "city", [1, 3], [7, 2])
    return FactData(tokenizer=SimpleNamespace(pad_token_id=0), examples={}, id_questions=[question],
                    ood_questions=[question], bio_train_people=bio_train,
                    bio_test_people=bio_train[:1], bio_all=bio_train)


def test_a_registered_metric_is_evaluated_with_its_attributes(toy_metric):
    result = evaluate_recall(ConstantModel(), _fact_data(), batch_size=4)
    # 3 of the 4 values start with the predicted token: city 2 of 2, year 1 of 2
    toy = result["metrics"][TOY]
    assert (toy["value"], toy["n"]) == (0.75, 4)
    z = 1.959963984540054  # the Wilson score interval, by its formula
    centre = (0.75 + z * z / 8) / (1 + z * z / 4)
    half = z * math.sqrt(0.75 * 0.25 / 4 + z * z / 64) / (1 + z * z / 4)
    assert (toy["low"], toy["high"]) == pytest.approx((centre - half, centre + half))
    assert {a: v["value"] for a, v in result["per_attribute"][TOY].items()} == {"city": 1.0,
                                                                                "year": 0.5}
    assert list(result["metrics"])[-1] == TOY  # after the shipped ones, which stay as they were


def test_a_registered_metric_is_ablated_and_its_drop_follows_its_direction(toy_metric):
    evaluate = ablation_evaluator(_fact_data(), batch_size=4)
    assert evaluate(ConstantModel())[TOY] == 0.75
    # a model whose toy metric is its weight: reset to 0 from 0.5, a fall of 0.5, which for a
    # lower-is-better metric is a drop of -0.5 (an improvement); higher-is-better ones: +0.5
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.5)
    masks = {"weight": torch.ones(1, 1, dtype=torch.bool)}
    reference = {"weight": torch.zeros(1, 1)}
    result = ablate(model, masks, reference,
                    lambda m: {TOY: float(m.weight.detach().sum()),
                             "id_exact_match": float(m.weight.detach().sum())},
                    n_random_draws=0)
    assert result["drop"] == {TOY: -0.5, "id_exact_match": 0.5}


def _result(seed: int, toy: float) -> dict:
    shipped = {name: {"value": 1.0} for name in ("id_exact_match", "ood_exact_match",
                                                  "bio_first_token_test")}
    return {"strategy": "mixed", "model": "tiny-llama", "seed": seed,
            "metrics": {**shipped, TOY: {"value": toy}}, "timings": {"total_s": 10.0}}


def test_a_summarized_metric_is_a_report_column(toy_metric):
    rows = summary_rows([_result(0, 0.5), _result(1, 0.25)])
    assert rows[0][TOY] == pytest.approx({"mean": 0.375, "sd": math.sqrt(2 * 0.125 ** 2)})
    suite = SimpleNamespace(name="s", description="d", variation=None, overrides={},
                            report_name="s")
    document = {"summary": rows, "verdicts": [], "runs": []}
    text = markdown_report(suite, document, [])  # type: ignore[arg-type]
    assert ("| group | seeds | ID exact match | OOD exact match | BIO recall P_test | Toy recall "
            "| s/run |") in text.splitlines()


def test_runs_finished_before_a_metric_was_registered_show_a_dash(toy_metric):
    older = _result(0, 0.5)
    del older["metrics"][TOY]
    rows = summary_rows([older])
    assert rows[0][TOY] is None
    suite = SimpleNamespace(name="s", description="d", variation=None, overrides={},
                            report_name="s")
    text = markdown_report(suite, {"summary": rows, "verdicts": [], "runs": []}, [])  # type: ignore[arg-type]
    assert "| mixed / tiny-llama | 1 | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 | – | 10 |" in text


def _finished_run() -> RunState:
    run = RunState("r", "s", Path("r"))
    run.apply_event({"t": 1.0, "event": "run_start", "strategy": "mixed", "model": "m", "seed": 0,
                     "total_steps": 20, "phases": [{"name": "mixed", "steps": 20}],
                     "resumed_from_step": None})
    run.apply_event({"t": 2.0, "event": "eval", "phase": "mixed", "step": 10,
                     "metrics": {TOY: 0.25}})
    run.apply_event({"t": 3.0, "event": "run_end", "step": 20, "metrics": {TOY: 0.5}})
    return run


def test_a_shown_and_plotted_metric_reaches_the_tui(toy_metric):
    run = _finished_run()
    columns, rows = result_columns([run]), result_rows([run])
    assert columns[-1] == "Toy" and len(columns) == 7
    assert rows == [("mixed", "0", "–", "–", "–", "–", "0.50")]
    assert curve_rows()[-1] == (TOY, "Toy") and run.metric_history(TOY) == [0.25]
    assert metric_label(TOY) == "Toy recall"


def test_a_regression_checked_metric_is_a_regression_default(toy_metric):
    assert RegressionSettings().metrics == ("id_exact_match", "ood_exact_match", TOY)


# ---------------------------------------------------------------------------------------------
# A toy model family: transformers' Phi (fc1/fc2 MLP without a gate, a `dense` attention output)

PHI_NAMES = ParameterNames({
    "embed": r"(^|\.)embed_tokens\.", "lm_head": r"(^|\.)lm_head\.", "q": r"\.q_proj\.",
    "k": r"\.k_proj\.", "v": r"\.v_proj\.", "o": r"\.self_attn\.dense\.",
    "mlp_up": r"\.mlp\.fc1\.", "mlp_down": r"\.mlp\.fc2\.", "norm": r"layernorm\.(weight|bias)$"})
PUBLISHED = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                 num_attention_heads=4, max_position_embeddings=128)


@pytest.fixture
def toy_family():
    family = register_model_family(ModelFamily(
        model_type="phi", parameter_names=PHI_NAMES, tiny_preset="tiny-phi",
        tiny_settings={"resid_pdrop": 0.0, "embd_pdrop": 0.0, "attention_dropout": 0.0},
        gated_mlp=False,
        published={"phi-toy": PublishedModel(
            PUBLISHED, ("hf:toy/phi-toy",),
            PackagedWeights("pytest", "pytest", "phi-toy.gguf", "pip install pytest"))}))
    yield family
    del family_registry.MODEL_FAMILIES["phi"]


class FakeTokenizer:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0

    def __len__(self) -> int:
        return 50


def _phi_parameters(vocab: int, h: int, i: int, layers: int) -> int:
    """Phi, by its layout: embeddings; per layer q, k, v, dense (h x h + bias), fc1 (i x h + i),
    fc2 (h x i + h), one layer norm (2h); the final layer norm; an untied head with a bias."""
    per_layer = 4 * (h * h + h) + (i * h + i) + (h * i + h) + 2 * h
    return vocab * h + layers * per_layer + 2 * h + (vocab * h + vocab)


def test_a_family_preset_is_known_and_built(toy_family):
    check_model_name("tiny-phi")
    spec = ModelSpec(name="tiny-phi", n_layer=2, d_model=16, n_head=2, d_ff=32)
    assert spec.from_scratch and not ModelSpec(name="phi-toy").from_scratch
    model = build_model(spec, FakeTokenizer(), seed=0)  # type: ignore[arg-type]
    assert isinstance(model, PhiForCausalLM)
    assert count_parameters(model) == _phi_parameters(50, 16, 32, 2) == 6066
    assert model.config.pad_token_id == 0 and model.config.resid_pdrop == 0.0


def test_a_family_names_its_parameters_for_the_trace(toy_family):
    assert parameter_kind("model.layers.1.mlp.fc1.weight") == "mlp_up"
    assert parameter_kind("model.layers.0.self_attn.dense.bias") == "o"
    assert layer_of("model.layers.1.mlp.fc2.weight") == 1
    spec = ModelSpec(name="tiny-phi", n_layer=2, d_model=16, n_head=2, d_ff=32)
    model = build_model(spec, FakeTokenizer(), seed=0)  # type: ignore[arg-type]
    masks = {"model.layers.1.mlp.fc1.weight": torch.ones(32, 16, dtype=torch.bool),
             "model.layers.0.self_attn.dense.weight": torch.ones(16, 16, dtype=torch.bool)}
    location = locate(masks, model)
    assert location["by_kind"] == {"mlp_up": 32 * 16, "o": 16 * 16}
    assert location["by_layer"] == [256, 512]
    assert location["neurons"][1] == [16] * 32 and location["neurons"][0] == [0] * 32
    assert location["heads"][0] == [16 * 8, 16 * 8]  # 2 heads of 8 columns, 16 rows each


def test_a_family_architecture_is_planned(toy_family):
    published = model_dims(architecture_config("hf:toy/phi-toy"))
    assert published.parameters == _phi_parameters(100, 32, 64, 3)
    assert not published.gated_mlp
    with pytest.raises(UserError, match="plan the suite"):
        architecture_config("tiny-phi")
    spec = ModelSpec(name="tiny-phi", n_layer=2, d_model=16, n_head=2, d_ff=32)
    tiny = model_dims(tiny_architecture(spec, 50))
    # per layer 2 * (4h + 2kv + 2h + 2i) bytes, with kv = h and an ungated MLP; logits 10 V
    assert activation_bytes_per_token(tiny, False) == 2 * 2 * (4 * 16 + 32 + 32 + 64) + 500


def test_a_packaged_preset_takes_its_package_version_as_revision(toy_family):
    check_model_name("phi-toy")
    assert model_revision(ModelSpec(name="phi-toy")) == f"pytest=={metadata.version('pytest')}"
    assert model_revision(ModelSpec(name="tiny-phi")) == ""


def test_a_family_or_preset_is_registered_once(toy_family):
    with pytest.raises(ValueError, match="already registered"):
        register_model_family(toy_family)
    clash = ModelFamily(model_type="other", parameter_names=PHI_NAMES, tiny_preset="tiny-llama")
    with pytest.raises(ValueError, match="already registered"):
        register_model_family(clash)


def test_the_shipped_registry_is_back_after_a_test():
    assert TOY not in metric_registry.METRICS
    assert RegressionSettings().metrics == ("id_exact_match", "ood_exact_match")
    assert "phi" not in family_registry.MODEL_FAMILIES
    assert parameter_kind("model.layers.1.mlp.fc1.weight") == "other"
    with pytest.raises(UserError, match="unknown model 'tiny-phi'"):
        check_model_name("tiny-phi")
