"""Tests written for the survivors of mutation testing of factrecall_bench/trace/ablation.py
(docs/mutation.md, fifth round): ablation resets exactly the selected elements to the reference
(of any dtype), evaluates, restores the weights and the train/eval mode; the seeded random draws
and the BIO-only control are the sets their docstrings define; drops, means and sample sds equal a
recomputation; a missing parameter is named.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping

import pytest
import torch
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from factrecall_bench import metrics
from factrecall_bench.metrics import Metric
from factrecall_bench.trace.ablation import ablate, bio_only_masks, own_rows_of, random_masks


class TwoMatrices(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.a = nn.Parameter(torch.rand(4, 5, generator=generator))
        self.b = nn.Parameter(torch.rand(6, generator=generator))


def reference_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """float64 reference values, all different from the model's."""
    return {name: (p.detach().double() + 10.0 + torch.arange(p.numel()).view(p.shape))
            for name, p in model.named_parameters()}


def masks_of(a_indices: list[int], b_indices: list[int]) -> dict[str, torch.Tensor]:
    a, b = torch.zeros(20, dtype=torch.bool), torch.zeros(6, dtype=torch.bool)
    a[a_indices], b[b_indices] = True, True
    return {"a": a.view(4, 5), "b": b}


class Recorder:
    """evaluate: per call, the masks of the changed elements (checked to hold the reference
    value); metrics: how many changed, and their summed change."""

    def __init__(self, model: nn.Module, reference: Mapping[str, torch.Tensor]) -> None:
        self.original = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.reference = reference
        self.calls: list[dict[str, torch.Tensor]] = []

    def change(self, changed: Mapping[str, torch.Tensor]) -> float:
        return sum(float((self.reference[n].float() - self.original[n])[m].sum())
                   for n, m in changed.items())

    def __call__(self, model: nn.Module) -> dict[str, float]:
        changed = {}
        for name, p in model.named_parameters():
            changed[name] = p.detach() != self.original[name]
            assert torch.equal(p.detach()[changed[name]],
                               self.reference[name].float()[changed[name]])
        self.calls.append(changed)
        return {"n": int(sum(int(m.sum()) for m in changed.values())),
                "change": self.change(changed)}


def reference_random_masks(like: Mapping[str, torch.Tensor], count: int,
                           seed: int) -> dict[str, torch.Tensor]:
    """count distinct flat positions over the tensors in order: the first distinct values of one
    seeded stream of uniform integers, walked one by one; above half of the elements, every
    element but such a draw of the rest."""
    n = sum(mask.numel() for mask in like.values())
    k = min(count, n)
    left_out = k > n // 2
    want = n - k if left_out else k
    stream = torch.randint(n, (4 * want + 64,), generator=torch.Generator().manual_seed(seed))
    picked = list(dict.fromkeys(stream.tolist()))[:want]
    assert len(picked) == want
    flat = torch.zeros(n, dtype=torch.bool)
    flat[picked] = True
    if left_out:
        flat = ~flat
    out, start = {}, 0
    for name, mask in like.items():
        out[name] = flat[start:start + mask.numel()].view(mask.shape)
        start += mask.numel()
    return out


def same_masks(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


# ---------------------------------------------------------------- random draws and control


@pytest.mark.parametrize(("count", "seed"),
                         [(1, 0), (7, 3), (14, 4), (26, 1), (40, 0), (2 ** 15, 2), (2 ** 15 + 1, 2)])
def test_random_masks_are_the_seeded_uniform_draw(count: int, seed: int) -> None:
    like = masks_of([0], [0]) if count < 100 else {"w": torch.zeros(2 ** 16, dtype=torch.bool)}
    drawn = random_masks(like, count, seed)
    assert same_masks(drawn, reference_random_masks(like, count, seed))
    n = sum(m.numel() for m in like.values())
    assert sum(int(m.sum()) for m in drawn.values()) == min(count, n)


def test_random_masks_at_a_size_where_float32_noise_ties_draw_distinct_uniform_positions() -> None:
    """2**24 elements: float32 uniform noise takes at most 2**24 values, and a draw of this size
    holds about 10.6 M distinct ones, so a top-count of noise would meet ties at its threshold and
    break them by position. The draw must be the tie-free reference, with exactly count elements,
    spread over both tensors."""
    like = {"a": torch.zeros(2 ** 11, 2 ** 12, dtype=torch.bool),
            "b": torch.zeros(2 ** 23, dtype=torch.bool)}
    drawn = random_masks(like, 3000, seed=11)
    assert same_masks(drawn, reference_random_masks(like, 3000, 11))
    assert int(drawn["a"].sum()) + int(drawn["b"].sum()) == 3000
    assert 1300 < int(drawn["b"].sum()) < 1700


def test_random_masks_of_nothing_draw_nothing() -> None:
    like = {"a": torch.zeros(0, 3, dtype=torch.bool), "b": torch.zeros(0, dtype=torch.bool)}
    drawn = random_masks(like, 2, seed=0)
    assert list(drawn) == ["a", "b"]
    assert drawn["a"].shape == (0, 3) and drawn["b"].shape == (0,)
    assert random_masks({}, 2, seed=0) == {}


def test_random_masks_choose_every_position_equally_often_over_seeds() -> None:
    """Over 3,000 seeds of 3 of 10 elements, each position is drawn about 900 times (sd 25)."""
    like = {"a": torch.zeros(4, dtype=torch.bool), "b": torch.zeros(2, 3, dtype=torch.bool)}
    counts = torch.zeros(10)
    for seed in range(3000):
        drawn = random_masks(like, 3, seed)
        counts += torch.cat([drawn["a"].flatten(), drawn["b"].flatten()]).float()
    assert counts.sum() == 9000
    assert bool(((counts - 900).abs() < 125).all()), counts


def test_bio_only_control_is_the_top_bio_elements_outside_the_shared_set() -> None:
    scores = {"a": torch.linspace(0.05, 0.95, 20).view(4, 5), "b": torch.full((6,), 0.01)}
    shared = masks_of([19, 18, 0], [0])
    control = bio_only_masks(scores, shared)
    assert same_masks(control, masks_of([17, 16, 15, 14], []))


def test_bio_only_control_per_matrix_keeps_each_tensor_count() -> None:
    scores = {"a": torch.linspace(0.05, 0.95, 20).view(4, 5),
              "b": torch.tensor([0.1, 0.6, 0.5, 0.4, 0.3, 0.2], dtype=torch.float64)}
    shared = masks_of([19, 18, 0], [1])
    control = bio_only_masks(scores, shared, "per_matrix")
    assert same_masks(control, masks_of([17, 16, 15], [2]))


# ---------------------------------------------------------------- ablate


def test_ablate_resets_each_set_to_the_reference_and_reports_drops() -> None:
    model = TwoMatrices()
    reference = reference_of(model)
    evaluate = Recorder(model, reference)
    shared, control = masks_of([1, 2, 3], [4]), masks_of([7], [0, 1, 5])
    result = ablate(model, shared, reference, evaluate, n_random_draws=3, seed=5,
                    bio_only_masks=control)
    draws = [reference_random_masks(shared, 4, seed) for seed in (5, 6, 7)]
    assert len(evaluate.calls) == 6  # baseline, shared, three draws, control
    assert all(not m.any() for m in evaluate.calls[0].values())
    for seen, expected in zip(evaluate.calls[1:], [shared, *draws, control], strict=True):
        assert same_masks(seen, expected)
    changes = [evaluate.change(m) for m in draws]
    assert result["count"] == 4
    assert result["baseline"] == {"n": 0.0, "change": 0.0}
    assert result["shared"] == {"n": 4.0, "change": pytest.approx(evaluate.change(shared))}
    assert result["drop"] == {"n": -4.0, "change": pytest.approx(-evaluate.change(shared))}
    assert result["random_drop_draws"] == [{"n": -4.0, "change": pytest.approx(-c)}
                                           for c in changes]
    assert result["random_drop_mean"] == {"n": -4.0,
                                          "change": pytest.approx(-statistics.mean(changes))}
    assert result["random_drop_sd"] == {"n": 0.0,
                                        "change": pytest.approx(statistics.stdev(changes))}
    assert result["bio_only"]["change"] == pytest.approx(evaluate.change(control))
    assert result["bio_only_drop"] == {"n": -4.0,
                                       "change": pytest.approx(-evaluate.change(control))}
    assert all(isinstance(v, float) for v in result["shared"].values())
    for name, p in model.named_parameters():
        assert torch.equal(p.detach(), evaluate.original[name])


def test_ablate_defaults_three_draws_from_seed_zero_and_no_control() -> None:
    model = TwoMatrices()
    reference = reference_of(model)
    evaluate = Recorder(model, reference)
    shared = masks_of([0, 5], [])
    result = ablate(model, shared, reference, evaluate)
    for seen, seed in zip(evaluate.calls[2:], (0, 1, 2), strict=True):
        assert same_masks(seen, reference_random_masks(shared, 2, seed))
    assert len(evaluate.calls) == 5
    assert "bio_only" not in result and "bio_only_drop" not in result


@pytest.mark.parametrize("n_draws", [1, 2])
def test_sample_sd_of_one_and_two_draws(n_draws: int) -> None:
    model = TwoMatrices()
    reference = reference_of(model)
    evaluate = Recorder(model, reference)
    result = ablate(model, masks_of([3], []), reference, evaluate, n_random_draws=n_draws,
                    seed=2)
    changes = [-d["change"] for d in result["random_drop_draws"]]
    expected_sd = statistics.stdev(changes) if n_draws > 1 else 0.0
    assert result["random_drop_sd"]["change"] == pytest.approx(expected_sd)
    assert result["random_drop_mean"]["change"] == pytest.approx(-statistics.mean(changes))


def test_no_draws_give_empty_mean_and_sd() -> None:
    model = TwoMatrices()
    reference = reference_of(model)
    result = ablate(model, masks_of([3], []), reference, Recorder(model, reference),
                    n_random_draws=0)
    assert result["random_drop_draws"] == []
    assert result["random_drop_mean"] == {} and result["random_drop_sd"] == {}


def test_a_given_baseline_is_used_and_drops_cover_its_metrics_only() -> None:
    model = TwoMatrices()
    reference = reference_of(model)
    evaluate = Recorder(model, reference)
    result = ablate(model, masks_of([3], []), reference, evaluate, n_random_draws=0,
                    baseline={"n": 10, "missing": 1.0})
    assert len(evaluate.calls) == 1  # the shared set only
    assert result["baseline"] == {"n": 10, "missing": 1.0}
    assert result["drop"] == {"n": 9.0}


def test_a_drop_is_the_change_for_the_worse_of_each_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    # A registered lower-is-better metric drops when it rises; exact match (higher is better) and
    # an evaluator's own unregistered key drop when they fall.
    monkeypatch.setitem(metrics.METRICS, "held_out_loss",
                        Metric("held_out_loss", "ood", "loss", "held-out loss", "loss",
                               higher_is_better=False))
    model = TwoMatrices()
    reference = reference_of(model)

    def evaluate(_: nn.Module) -> dict[str, float]:
        return {"ood_exact_match": 0.25, "held_out_loss": 3.0, "own": 5.0}

    baseline = {"ood_exact_match": 0.75, "held_out_loss": 1.0, "own": 8.0}
    result = ablate(model, masks_of([3], []), reference, evaluate, n_random_draws=2,
                    baseline=baseline, bio_only_masks=masks_of([4], []))
    worse = {"ood_exact_match": 0.5, "held_out_loss": 2.0, "own": 3.0}
    assert result["drop"] == worse and result["bio_only_drop"] == worse
    assert result["random_drop_draws"] == [worse, worse]
    assert result["random_drop_mean"] == worse


@pytest.mark.parametrize("training", [True, False])
def test_ablate_restores_the_train_mode_evaluate_changed(training: bool) -> None:
    """Around each reset set (the baseline evaluation, when ablate makes it, is the caller's)."""
    model = TwoMatrices()
    model.train(training)
    reference = reference_of(model)

    def evaluate(m: nn.Module) -> dict[str, float]:
        m.train(not training)
        return {"x": 1.0}

    ablate(model, masks_of([1], [1]), reference, evaluate, n_random_draws=1,
           bio_only_masks=masks_of([2], []), baseline={"x": 1.0})
    assert model.training is training


def test_missing_parameters_or_reference_values_are_named() -> None:
    model = TwoMatrices()
    reference = {"a": reference_of(model)["a"]}
    masks = {"b": torch.zeros(6, dtype=torch.bool), "a": torch.zeros(4, 5, dtype=torch.bool),
             "c": torch.zeros(1, dtype=torch.bool), "d": torch.zeros(1, dtype=torch.bool),
             "e": torch.zeros(1, dtype=torch.bool)}
    reference |= {"c": torch.zeros(1), "d": torch.zeros(1), "e": torch.zeros(1)}
    with pytest.raises(ValueError) as error:
        ablate(model, masks, reference, lambda m: {"x": 1.0})
    assert str(error.value) == "ablation: no parameter or reference value for ['b', 'c', 'd']"


def test_own_rows_of_an_unsharded_model_is_the_reference_itself() -> None:
    model = TwoMatrices()
    reference = reference_of(model)
    reference["tied.weight"] = torch.zeros(3)  # a state_dict entry that is no scored parameter
    rows = own_rows_of(reference, model)
    assert rows.keys() == reference.keys()
    assert all(rows[name] is reference[name] for name in reference)


# ---------------------------------------------------------------- sharded (FSDP2) parameters
# One process: the `mesh` of conftest (gloo), parameters as DTensors sharded by rows. What
# changes with several processes (which rows each holds) needs test_fsdp.py.


def sharded(model: nn.Module, mesh: DeviceMesh) -> nn.Module:
    for name, p in list(model.named_parameters()):
        setattr(model, name, nn.Parameter(distribute_tensor(p.detach(), mesh, [Shard(0)])))
    return model


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This process's part of a DTensor (here, with one process, all of it)."""
    assert isinstance(tensor, DTensor)
    return tensor.to_local().detach()


def sharded_masks(masks: Mapping[str, torch.Tensor],
                  mesh: DeviceMesh) -> dict[str, torch.Tensor]:
    return {name: distribute_tensor(mask, mesh, [Shard(0)]) for name, mask in masks.items()}


def test_own_rows_of_a_sharded_model_are_dtensors_laid_out_like_it(mesh: DeviceMesh) -> None:
    model = sharded(TwoMatrices(), mesh)
    reference = reference_of(TwoMatrices())
    reference["tied.weight"] = torch.zeros(3)
    rows = own_rows_of(reference, model)
    assert rows["tied.weight"] is reference["tied.weight"]
    for name, p in model.named_parameters():
        row, param = rows[name], p
        assert isinstance(row, DTensor) and isinstance(param, DTensor)
        assert row.placements == param.placements and row.shape == param.shape
        assert torch.equal(local(row), reference[name])


@pytest.mark.parametrize("cut", [False, True])
def test_ablate_resets_and_restores_sharded_parameters(mesh: DeviceMesh, cut: bool) -> None:
    model = sharded(TwoMatrices(), mesh)
    plain = TwoMatrices()
    reference = reference_of(plain)
    original = {n: p.detach().clone() for n, p in plain.named_parameters()}
    shared = masks_of([1, 2, 3], [4])
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(m: nn.Module) -> dict[str, float]:
        changed = {}
        for name, p in m.named_parameters():
            values = local(p)
            changed[name] = values != original[name]
            assert torch.equal(values[changed[name]], reference[name].float()[changed[name]])
        seen.append(changed)
        return {"n": float(sum(int(c.sum()) for c in changed.values()))}

    given = own_rows_of(reference, model) if cut else reference
    result = ablate(model, sharded_masks(shared, mesh), given, evaluate, n_random_draws=1,
                    seed=3, baseline={"n": 0.0})
    assert result["count"] == 4 and result["drop"] == {"n": -4.0}
    assert same_masks(seen[0], shared)
    assert same_masks(seen[1], reference_random_masks(shared, 4, 3))
    for name, p in model.named_parameters():
        assert torch.equal(local(p), original[name])


def test_random_masks_of_sharded_masks_are_sharded_alike(mesh: DeviceMesh) -> None:
    like = sharded_masks(masks_of([0], [0]), mesh)
    drawn = random_masks(like, 9, seed=1)
    expected = reference_random_masks(masks_of([0], [0]), 9, 1)
    for name, mask in drawn.items():
        template = like[name]
        assert isinstance(mask, DTensor) and isinstance(template, DTensor)
        assert mask.placements == template.placements
        assert torch.equal(local(mask), expected[name])
