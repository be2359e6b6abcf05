"""Pack SmolLM2-135M into less than 64 MiB, so it can travel to a machine that cannot download it.

The packaged GGUF (Q4_1 body, Q8_0 tied embeddings) is 98 MB. The pack keeps every Q4_1 nibble
as is and stores each 32-weight block's scale `d` and minimum `m` as one byte each instead of two
fp16 values (`d` on a per-tensor log grid; `m` as a multiple of d/8, refitted to the block's
nibbles after `d` is rounded; blocks out of range keep an exact fp32 `m`). Embedding rows of the
tokens a dataset uses stay exact (Q8_0); the other rows are zero: they never appear in the input
and only enter the softmax, with logit 0. `python benchmarks/pack_smollm2.py --check` measures
what this costs in loss on biographies against the GGUF model.

    python benchmarks/pack_smollm2.py --out .devwork/smollm2-pack     # here, where the GGUF is
    unpack(Path(".devwork/smollm2-pack"), Path("/tmp/smollm2"))       # there: an `hf:` folder
"""

from __future__ import annotations

import argparse
import json
import lzma
from pathlib import Path

import numpy as np
import torch

Q4_1_BLOCK, Q8_0_BLOCK = 20, 34
SPECIAL_TOKENS = {"bos": "<|im_start|>", "eos": "<|im_end|>", "pad": "<|im_end|>",
                  "unk": "<|endoftext|>"}
_LAYER_NAMES = {
    "attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight", "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight", "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def hf_name(gguf_name: str) -> str:
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    _, layer, rest = gguf_name.split(".", 2)
    return f"model.layers.{layer}.{_LAYER_NAMES[rest]}"


def unpermute_rows(rows: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's q/k row order (rotary halves interleaved), as transformers does on load."""
    dim = rows.shape[0] // n_head // 2
    return rows.reshape(n_head, dim, 2, *rows.shape[1:]).swapaxes(2, 1).reshape(rows.shape)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """[..., 16] bytes -> [..., 32] values: low nibbles are elements 0-15, high ones 16-31."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1).astype(np.float32)


def pack_q4_1(raw: np.ndarray, name: str) -> dict[str, np.ndarray]:
    """One Q4_1 tensor ([rows, row_bytes]) -> exact nibbles and one-byte block scales and minima."""
    blocks = raw.reshape(raw.shape[0], -1, Q4_1_BLOCK)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)
    m = blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
    qs = np.ascontiguousarray(blocks[..., 4:])
    log_d = np.log(np.maximum(d, 1e-12))
    low, high = float(log_d.min()), float(log_d.max())
    d_code = np.round((log_d - low) / max(high - low, 1e-12) * 255).astype(np.uint8)
    d_new = _decode_d(d_code, low, high)
    m_fit = m + (d - d_new) * _nibbles(qs).mean(axis=-1)  # keeps each block's mean unchanged
    m_code = np.round(m_fit / d_new * 8)
    outside = (m_code < -128) | (m_code > 127)
    return {f"{name}.qs": qs, f"{name}.d_code": d_code, f"{name}.d_range": np.array([low, high]),
            f"{name}.m_code": np.clip(m_code, -128, 127).astype(np.int8),
            f"{name}.m_exact_at": np.flatnonzero(outside), f"{name}.m_exact": m_fit[outside]}


def _decode_d(d_code: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.exp(low + d_code.astype(np.float32) / 255 * (high - low)).astype(np.float32)


def unpack_q4_1(packed: dict[str, np.ndarray], name: str) -> np.ndarray:
    low, high = packed[f"{name}.d_range"].tolist()
    d = _decode_d(packed[f"{name}.d_code"], low, high)
    m = packed[f"{name}.m_code"].astype(np.float32) * d / 8
    m.reshape(-1)[packed[f"{name}.m_exact_at"]] = packed[f"{name}.m_exact"]
    values = d[..., None] * _nibbles(packed[f"{name}.qs"]) + m[..., None]
    return values.reshape(values.shape[0], -1)


def pack_q8_0_rows(raw: np.ndarray, name: str, keep: np.ndarray) -> dict[str, np.ndarray]:
    """Keep only the rows `keep` of a Q8_0 matrix, exactly."""
    return {f"{name}.rows": keep.astype(np.int64), f"{name}.q8_0": np.ascontiguousarray(raw[keep]),
            f"{name}.shape": np.array([raw.shape[0], raw.shape[1] // Q8_0_BLOCK * 32])}


def unpack_q8_0_rows(packed: dict[str, np.ndarray], name: str) -> np.ndarray:
    rows, columns = packed[f"{name}.shape"].tolist()
    blocks = packed[f"{name}.q8_0"].reshape(len(packed[f"{name}.rows"]), -1, Q8_0_BLOCK)
    d = blocks[..., 0:2].copy().view(np.float16).astype(np.float32)
    kept = (d * blocks[..., 2:].copy().view(np.int8).astype(np.float32)).reshape(-1, columns)
    full = np.zeros((rows, columns), dtype=np.float32)
    full[packed[f"{name}.rows"]] = kept
    return full
