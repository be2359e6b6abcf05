"""Tests written for the survivors of mutation testing of factrecall_bench/trace/consistency.py
(docs/mutation.md, fifth round): the cosine between the BIO and QA summed gradients over the whole
model, per layer and outside the layers, and the two norms, against a hand-computed reference on a
model whose gradients are its inputs; batches without loss tokens; a task with no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from factrecall_bench.trace.consistency import gradient_consistency

SCALE = 0.01


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))


class LinearModel(nn.Module):
    """loss = SCALE * (ids[0:4] . layers.0.w + ids[4:8] . layers.1.w + ids[8:10] . head), summed
    over the rows: the gradient is SCALE times the ids, split over two layers and a head."""

    def __init__(self, n_layers_in_config: int | None = 2, head: bool = True) -> None:
        super().__init__()
        self.inner = nn.Module()
        self.inner.layers = nn.ModuleList([Layer(), Layer()])
        self.inner.head = nn.Parameter(torch.zeros(2), requires_grad=head)
        if n_layers_in_config is not None:
            self.config = SimpleNamespace(num_hidden_layers=n_layers_in_config)

    def forward(self, input_ids, attention_mask, labels):  # noqa: ANN001, ANN201
        x = input_ids.float().sum(0)
        w = torch.cat([self.inner.layers[0].w, self.inner.layers[1].w, self.inner.head])
        return SimpleNamespace(loss=SCALE * (w * x).sum())


def batch(values: Sequence[float], with_loss: bool = True) -> dict[str, torch.Tensor]:
    ids = torch.tensor([values])
    labels = ids.clone() if with_loss else torch.full_like(ids, -100)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}


def cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


BIO_1 = [1, 2, 0, 3, 4, 0, 1, 1, 2, 5]
BIO_2 = [1, 0, 0, 0, 1, 1, 0, 2, 1, 0]
QA = [3, 1, 2, 0, 0, 0, 5, 1, 7, 1]


def test_cosines_per_layer_outside_and_whole_and_norms() -> None:
    model = LinearModel()
    result = gradient_consistency(
        model, {"bio": [batch(BIO_1), batch(BIO_2), batch([9] * 10, with_loss=False)],
                "qa": [batch(QA)]})
    bio = [SCALE * (a + b) for a, b in zip(BIO_1, BIO_2, strict=True)]
    qa = [SCALE * q for q in QA]
    assert result["cosine"] == pytest.approx(cosine(bio, qa))
    assert result["per_layer"] == pytest.approx([cosine(bio[:4], qa[:4]),
                                                 cosine(bio[4:8], qa[4:8])])
    assert result["outside_layers"] == pytest.approx(cosine(bio[8:], qa[8:]))
    assert result["norm_bio"] == pytest.approx(math.sqrt(sum(x * x for x in bio)))
    assert result["norm_qa"] == pytest.approx(math.sqrt(sum(x * x for x in qa)))
    assert sorted(result) == ["cosine", "norm_bio", "norm_qa", "outside_layers", "per_layer"]
    assert all(p.grad is None for p in model.parameters())


def test_a_part_one_task_does_not_move_has_cosine_zero() -> None:
    model = LinearModel()
    qa = [0, 0, 0, 0, 1, 2, 3, 4, 0, 0]  # nothing in layer 0 and the head
    result = gradient_consistency(model, {"bio": [batch(BIO_1)], "qa": [batch(qa)]})
    assert result["per_layer"][0] == 0.0 and result["outside_layers"] == 0.0
    assert result["per_layer"][1] == pytest.approx(cosine(BIO_1[4:8], qa[4:8]))
    reversed_roles = gradient_consistency(model, {"bio": [batch(qa)], "qa": [batch(BIO_1)]})
    assert reversed_roles["per_layer"][0] == 0.0 and reversed_roles["outside_layers"] == 0.0


def test_a_task_without_loss_tokens_has_no_gradient_and_cosine_zero() -> None:
    model = LinearModel()
    result = gradient_consistency(model, {"bio": [batch(BIO_1)],
                                          "qa": [batch(QA, with_loss=False)]})
    assert result["cosine"] == 0.0 and result["norm_qa"] == 0.0
    assert result["per_layer"] == [0.0, 0.0] and result["outside_layers"] == 0.0
    assert result["norm_bio"] == pytest.approx(SCALE * math.sqrt(sum(x * x for x in BIO_1)))


def test_layers_come_from_the_config_and_tasks_name_the_norms() -> None:
    without_config = gradient_consistency(LinearModel(None), {"x": [batch(BIO_1)],
                                                               "y": [batch(QA)]},
                                          tasks=("x", "y"))
    assert without_config["per_layer"] == []
    assert without_config["norm_x"] == pytest.approx(SCALE * math.sqrt(sum(x * x for x in BIO_1)))
    assert without_config["norm_y"] == pytest.approx(SCALE * math.sqrt(sum(x * x for x in QA)))
    three = gradient_consistency(LinearModel(3), {"bio": [batch(BIO_1)], "qa": [batch(QA)]})
    assert len(three["per_layer"]) == 3 and three["per_layer"][2] == 0.0


def test_a_model_with_every_parameter_in_a_layer_has_cosine_zero_outside() -> None:
    result = gradient_consistency(LinearModel(head=False), {"bio": [batch(BIO_1)],
                                                            "qa": [batch(QA)]})
    assert result["outside_layers"] == 0.0
    assert result["cosine"] == pytest.approx(cosine(BIO_1[:8], QA[:8]))
