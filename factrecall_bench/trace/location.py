"""Where the shared set sits: counts by layer, module kind, attention head and MLP neuron, and how
centralized they are (Gini, normalized entropy, the top heads' share).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from factrecall_bench.model_families import PARAMETER_KINDS, parameter_names
from factrecall_bench.trace.selection import _ratio
from factrecall_bench.trace.settings import Masks
from factrecall_bench.trace.sharding import column_counts, row_counts


def parameter_kind(name: str) -> str:
    """embed, q, k, v, o, qkv, mlp_gate, mlp_up, mlp_down, norm, lm_head, or other: the first
    kind (in PARAMETER_KINDS' order) whose pattern in any registered family matches."""
    families = parameter_names()
    for kind in PARAMETER_KINDS:
        if any(kind in f.kinds and re.search(f.kinds[kind], name) for f in families):
            return kind
    return "other"


def layer_of(name: str) -> int | None:
    """The decoder layer's index by the first family's layer pattern that matches."""
    for pattern in dict.fromkeys(f.layer for f in parameter_names()):
        match = re.search(pattern, name)
        if match:
            return int(match.group(1))
    return None


def locate(masks: Masks, model: nn.Module) -> dict[str, Any]:
    """Counts of masked elements by layer, by module kind, per attention head (layer x head: q, k, v
    rows and o columns of that head; under grouped-query attention a k/v head's count is split
    evenly over the query heads sharing it, and kv_heads keeps it whole) and per MLP neuron (layer x
    neuron: gate/up rows and biases, down columns). Head counts and sizes come from model.config."""
    config: Any = model.config
    n_layers, n_heads = config.num_hidden_layers, config.num_attention_heads
    n_kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    by_layer = [0] * n_layers
    by_kind: dict[str, int] = {}
    heads = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    kv_heads = torch.zeros(n_layers, n_kv_heads, dtype=torch.float64)
    neurons = torch.zeros(n_layers, config.intermediate_size, dtype=torch.int64)
    outside_layers = 0
    for name, mask in masks.items():
        kind, layer = parameter_kind(name), layer_of(name)
        rows = row_counts(mask)
        count = int(rows.sum())
        by_kind[kind] = by_kind.get(kind, 0) + count
        if layer is None:
            outside_layers += count
            continue
        by_layer[layer] += count
        columns = column_counts(mask) if mask.dim() == 2 and kind in ("o", "mlp_down") else None
        _add_head_counts(kind, rows, columns, heads[layer], kv_heads[layer])
        _add_neuron_counts(kind, rows, columns, neurons[layer])
    return {
        "by_layer": by_layer,
        "outside_layers": outside_layers,
        "by_kind": by_kind,
        "heads": heads.tolist(),
        "kv_heads": kv_heads.tolist(),
        "neurons": neurons.tolist(),
    }


def _add_head_counts(kind: str, rows: Tensor, columns: Tensor | None, heads: Tensor,
                     kv_heads: Tensor) -> None:
    """rows / columns: the mask's counts per row / per column (columns only for o)."""
    n_heads, n_kv_heads = heads.numel(), kv_heads.numel()
    if kind in ("q", "qkv"):
        # q rows are [head, head_dim]; NeoX's fused rows are [head, (q, k, v), head_dim].
        heads += rows.reshape(n_heads, -1).sum(1).double()
        if kind == "qkv":
            kv_heads += rows.reshape(n_heads, 3, -1)[:, 1:].sum((1, 2)).double()
    elif kind in ("k", "v"):
        per_kv_head = rows.reshape(n_kv_heads, -1).sum(1).double()
        kv_heads += per_kv_head
        # Query head h reads kv head h // (n_heads / n_kv_heads) (transformers' repeat_kv).
        group = n_heads // n_kv_heads
        heads += (per_kv_head / group).repeat_interleave(group)
    elif kind == "o" and columns is not None:
        heads += columns.reshape(n_heads, -1).sum(1).double()


def _add_neuron_counts(kind: str, rows: Tensor, columns: Tensor | None, neurons: Tensor) -> None:
    if kind in ("mlp_gate", "mlp_up"):
        neurons += rows
    elif kind == "mlp_down" and columns is not None:
        neurons += columns


def gini(values: Sequence[float] | Tensor) -> float:
    """Gini coefficient of non-negative counts: 0 when even, (n - 1) / n when one holds all;
    0 for an all-zero input."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten().sort().values
    n, total = x.numel(), float(x.sum())
    if n == 0 or total <= 0.0:
        return 0.0
    ranks = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2.0 * (ranks * x).sum() / (n * total) - (n + 1) / n)


def normalized_entropy(values: Sequence[float] | Tensor) -> float:
    """Shannon entropy of the counts' distribution over log(n): 1 when even, 0 when one holds all;
    1 for an all-zero input (nothing is concentrated)."""
    x = torch.as_tensor(values, dtype=torch.float64).flatten()
    total = float(x.sum())
    if x.numel() < 2 or total <= 0.0:
        return 1.0
    p = x[x > 0] / total
    return float(-(p * p.log()).sum() / math.log(x.numel()))


def centralization(location: Mapping[str, Any], top_heads: int = 5) -> dict[str, float | None]:
    """Gini and normalized entropy over heads and over neurons, and the share the top heads hold.
    None where the set holds no parameter of any head (or neuron): a distribution over nothing is
    neither even nor concentrated, and 0 would read as "even"."""
    heads = torch.tensor(location["heads"], dtype=torch.float64).flatten()
    neurons = torch.tensor(location["neurons"], dtype=torch.float64).flatten()
    top = heads.sort(descending=True).values[:top_heads].sum()
    any_head, any_neuron = bool(heads.sum() > 0), bool(neurons.sum() > 0)
    return {
        "gini_heads": gini(heads) if any_head else None,
        "entropy_heads": normalized_entropy(heads) if any_head else None,
        f"top{top_heads}_heads_share": _ratio(float(top), float(heads.sum())) if any_head else None,
        "gini_neurons": gini(neurons) if any_neuron else None,
        "entropy_neurons": normalized_entropy(neurons) if any_neuron else None,
    }
