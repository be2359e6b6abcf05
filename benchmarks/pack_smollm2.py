"""Pack SmolLM2-135M into less than 64 MiB, so it can travel to a machine that cannot download it.

The packaged GGUF (Q4_1 body, Q8_0 tied embeddings) is 98 MB. The pack keeps every Q4_1 nibble
as is and stores each 32-weight block's scale `d` and minimum `m` as one byte each instead of two
fp16 values (`d` on a per-tensor log grid; `m` as a multiple of d/8, refitted to the block's
nibbles after `d` is rounded; blocks out of range keep an exact fp32 `m`). Embedding rows of the
tokens a dataset uses stay exact (Q8_0); the other rows are zero: they never appear in the input
and only enter the softmax, with logit 0. `python benchmarks/pack_smollm2.py --check` measures
what this costs in loss on biographies against the GGUF model (measured: 4.0541 -> 4.0548 nats
per token; 63.2 MB with the 4,381 tokens the GPU check's data and the pools use).

    python benchmarks/pack_smollm2.py --out .devwork/smollm2-pack     # here, where the GGUF is
    unpack(Path(".devwork/smollm2-pack"), Path("/tmp/smollm2"))       # there: an `hf:` folder
"""

from __future__ import annotations

import argparse
import json
import lzma
import sys
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


def pack_gguf(gguf_path: Path, keep_tokens: set[int]) -> dict[str, np.ndarray]:
    """Every tensor of the GGUF, in transformers' names and row order, packed."""
    from gguf import GGUFReader
    from gguf.constants import GGMLQuantizationType as Quant

    from factrecall_bench.model_families import published_architecture

    arch = published_architecture("smollm2-135m") or {}
    heads = {"attn_q.weight": arch["num_attention_heads"], "attn_k.weight": arch["num_key_value_heads"]}
    packed: dict[str, np.ndarray] = {}
    for tensor in GGUFReader(str(gguf_path)).tensors:
        name, raw = hf_name(tensor.name), np.asarray(tensor.data)
        head_count = heads.get(tensor.name.split(".", 2)[-1])
        if head_count is not None:
            raw = unpermute_rows(raw, head_count)
        if tensor.tensor_type == Quant.Q4_1:
            packed.update(pack_q4_1(raw, name))
        elif tensor.tensor_type == Quant.Q8_0:
            packed.update(pack_q8_0_rows(raw, name, np.array(sorted(keep_tokens))))
        elif tensor.tensor_type == Quant.F32:
            packed[f"{name}.f32"] = np.ascontiguousarray(raw, dtype=np.float32)
        else:
            raise ValueError(f"{tensor.name}: unexpected type {tensor.tensor_type.name}")
    return packed


def unpacked_state_dict(packed: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    names = sorted({key.rsplit(".", 1)[0] for key in packed})
    state = {}
    for name in names:
        if f"{name}.f32" in packed:
            values = packed[f"{name}.f32"]
        elif f"{name}.q8_0" in packed:
            values = unpack_q8_0_rows(packed, name)
        else:
            values = unpack_q4_1(packed, name)
        state[name] = torch.from_numpy(np.ascontiguousarray(values))
    return state


def used_tokens(tokenizer, texts: list[str]) -> set[int]:
    """Every token id the texts use (each with and without a leading space), plus the specials."""
    ids = tokenizer([f" {t}" for t in texts] + texts, add_special_tokens=False)["input_ids"]
    specials = {tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS.values()}
    return {i for row in ids for i in row} | specials


def dataset_texts(spec) -> list[str]:
    """Biographies, prompts and answers of a generated dataset, and every pool value."""
    from factrecall_bench.data.dataset import generate_dataset
    from factrecall_bench.data.pools import load_pools

    dataset = generate_dataset(spec)
    pools = load_pools()
    values = [*pools.first_names, *pools.middle_names, *pools.last_names, *pools.birth_cities,
              *pools.universities, *pools.majors, *pools.companies, *pools.company_cities]
    return [*dataset["bio"]["text"], *(f"{p} {a}" for split in ("qa_train", "qa_test")
                                       for p, a in zip(dataset[split]["prompt"], dataset[split]["answer"])),
            *values]


def write_pack(packed: dict[str, np.ndarray], tokenizer_json: str, out: Path) -> None:
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    save_file(packed, str(out / "weights.safetensors"))
    (out / "tokenizer.json.xz").write_bytes(lzma.compress(tokenizer_json.encode("utf-8")))


def unpack(pack_dir: Path, out: Path) -> Path:
    """Rebuild a transformers folder (config, fp32 safetensors, tokenizer) from a pack."""
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from factrecall_bench.model_families import published_architecture

    values = published_architecture("smollm2-135m") or {}
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    model = AutoModelForCausalLM.from_config(config)
    state = unpacked_state_dict(load_file(str(pack_dir / "weights.safetensors")))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise RuntimeError(f"pack does not fit the architecture: {missing} {unexpected}")
    model.tie_weights()
    model.save_pretrained(str(out))
    backend = Tokenizer.from_str(lzma.decompress((pack_dir / "tokenizer.json.xz").read_bytes()).decode())
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=SPECIAL_TOKENS["bos"],
                                        eos_token=SPECIAL_TOKENS["eos"], pad_token=SPECIAL_TOKENS["pad"],
                                        unk_token=SPECIAL_TOKENS["unk"])
    tokenizer.save_pretrained(str(out))
    return out


def check_pack(pack_dir: Path, tokenizer, spec) -> dict[str, float]:
    """Mean token loss on a sample of biographies and answers: GGUF model vs unpacked pack."""
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from factrecall_bench.config import ModelSpec
    from factrecall_bench.models import build_model

    texts = dataset_texts(spec)[:48]
    reference = build_model(ModelSpec(name="smollm2-135m"), tokenizer, 0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = unpack(pack_dir, Path(scratch))
        packed_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        packed_tokenizer = AutoTokenizer.from_pretrained(folder)
    same_ids = all(packed_tokenizer(f" {t}", add_special_tokens=False)["input_ids"]
                   == tokenizer(f" {t}", add_special_tokens=False)["input_ids"] for t in texts)
    return {"same_token_ids": float(same_ids), "loss_gguf": _mean_loss(reference, tokenizer, texts),
            "loss_pack": _mean_loss(packed_model, tokenizer, texts)}


@torch.inference_mode()
def _mean_loss(model: torch.nn.Module, tokenizer, texts: list[str]) -> float:
    model.eval()
    losses = []
    for text in texts:
        ids = torch.tensor([[1, *tokenizer(f" {text}", add_special_tokens=False)["input_ids"], 2]])
        losses.append(float(model(input_ids=ids, labels=ids).loss))
    return sum(losses) / len(losses)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(".devwork/smollm2-pack"))
    parser.add_argument("--check", action="store_true", help="Compare losses with the GGUF model.")
    args = parser.parse_args()
    from factrecall_bench.config import ModelSpec
    from factrecall_bench.models import load_pretrained_tokenizer, smollm2_gguf_path

    sys.path.insert(0, str(Path(__file__).parent))
    from gpu_check import GPU_DATA

    tokenizer = load_pretrained_tokenizer(ModelSpec(name="smollm2-135m"))
    keep = used_tokens(tokenizer, dataset_texts(GPU_DATA))
    packed = pack_gguf(smollm2_gguf_path(), keep)
    write_pack(packed, tokenizer.backend_tokenizer.to_str(), args.out)
    size = sum(path.stat().st_size for path in args.out.iterdir())
    print(json.dumps({"out": str(args.out), "bytes": size, "kept_tokens": len(keep)}))
    if args.check:
        print(json.dumps(check_pack(args.out, tokenizer, GPU_DATA), indent=1))


if __name__ == "__main__":
    main()
