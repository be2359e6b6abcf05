"""Strategies as data: resolution, matched compute, mixing, and errors."""

from __future__ import annotations

import math
import tomllib

import numpy as np
import pytest

from factrecall_bench.batching import example_counts, plan_run, split_micro_batches
from factrecall_bench.config import TrainSpec
from factrecall_bench.errors import UserError
from factrecall_bench.strategies import (
    STRATEGIES,
    custom_strategy_phases,
    resolve_phase,
    resolve_strategy,
    resolve_value,
)
from factrecall_bench.suite import load_suite, parse_suite
from tests.conftest import run_cli

SIZES = {"bio": 1000, "qa_train": 600}


def total_examples(name: str, train: TrainSpec) -> int:
    return sum(sum(example_counts(phase, SIZES).values())
               for phase in resolve_strategy(name, train))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_spends_the_reference_budget(name):
    train = TrainSpec(bio_epochs=4, qa_epochs=2)
    assert total_examples(name, train) == 4 * 1000 + 2 * 600


def test_two_stage_is_bio_then_qa_at_stage2_lr():
    phases = resolve_strategy("two-stage", TrainSpec(lr=1e-3, stage2_lr=1e-4))
    assert [p.name for p in phases] == ["bio", "qa"]
    assert phases[0].epochs == {"bio": 16.0} and phases[1].epochs == {"qa_train": 16.0}
    assert (phases[0].lr, phases[1].lr) == (1e-3, 1e-4)


def test_mixed_qa_share_sets_the_stream():
    natural = resolve_strategy("mixed", TrainSpec(bio_epochs=1, qa_epochs=1))[0]
    assert example_counts(natural, SIZES) == {"bio": 1000, "qa_train": 600}
    shared = resolve_strategy("mixed", TrainSpec(bio_epochs=1, qa_epochs=1, qa_share=0.8))[0]
    assert example_counts(shared, SIZES) == {"bio": 320, "qa_train": 1280}


def test_replay_keeps_a_share_of_bio_in_stage_two():
    phases = resolve_strategy("two-stage-replay", TrainSpec(qa_epochs=1, replay_share=0.25))
    assert example_counts(phases[1], SIZES) == {"qa_train": 450, "bio": 150}


def test_bio_only_never_sees_qa():
    phase = resolve_strategy("bio-only", TrainSpec(bio_epochs=1, qa_epochs=1))[0]
    assert example_counts(phase, SIZES) == {"bio": 1600}


def test_suite_defined_order_needs_no_code():
    custom = {"qa-last": [{"name": "qa", "epochs": {"qa_train": "0.5*qa_epochs"}, "lr": 2e-4}]}
    phases = resolve_strategy("qa-last", TrainSpec(qa_epochs=8), custom)
    assert phases[0].epochs == {"qa_train": 4.0} and phases[0].lr == 2e-4


@pytest.mark.parametrize("custom, message", [
    ({"x": [{"epochs": {"people": 1}}]}, "unknown source"),
    ({"x": [{"epochs": {"bio": "no_such_setting"}}]}, "train setting"),
    ({"x": [{"epochs": {"bio": 1}, "mix": {"bio": -1}}]}, "shares must be"),
    ({"x": []}, "no phases"),
])
def test_bad_strategies_are_user_errors(custom, message):
    with pytest.raises(UserError, match=message):
        resolve_strategy("x", TrainSpec(), custom)


def test_unknown_strategy():
    with pytest.raises(UserError, match="unknown strategy"):
        resolve_strategy("three-stage", TrainSpec())


def _steps(name: str, sizes: dict[str, int], train: TrainSpec) -> int:
    return sum(len(plan.batches)
               for plan in plan_run(resolve_strategy(name, train), sizes, train.batch_size, 0))


def test_each_phase_ends_with_its_partial_batch():
    """The same examples, but a step more per phase that does not fill whole batches: two-stage
    takes ceil(1000 / 32) + ceil(600 / 32) = 32 + 19 steps, mixed ceil(1600 / 32) = 50."""
    train = TrainSpec(bio_epochs=1, qa_epochs=1, batch_size=32)
    assert _steps("two-stage", SIZES, train) == 51
    assert _steps("mixed", SIZES, train) == 50


def test_the_cpu_suite_phases_fill_whole_batches():
    """200 people x 5 biographies and 100 P_train people x 6 questions, 16 + 16 epochs, batch
    32: 16,000 / 32 = 500 and 9,600 / 32 = 300 steps, 800 for both strategies (the README's)."""
    config = next(c for c in load_suite("cpu").runs if c.strategy == "two-stage")
    sizes = {"bio": 200 * 5, "qa_train": 100 * 6}
    assert (config.data.n_people, config.data.bio_variants, config.data.train_fraction) == (
        200, 5, 0.5)
    assert _steps("two-stage", sizes, config.train) == _steps("mixed", sizes, config.train) == 800


def test_bio_variants_of_a_person_do_not_cluster():
    phases = resolve_strategy("two-stage", TrainSpec(bio_epochs=1, qa_epochs=1))
    plan = plan_run(phases, {"bio": 500, "qa_train": 300}, batch_size=25, seed=0)
    order = [index for batch in plan[0].batches for _, index in batch]
    assert sorted(order) == list(range(500))
    person = np.array(order) // 5  # rows are person-major, 5 variants each
    assert np.mean(person[1:] == person[:-1]) < 0.05


def test_plan_is_a_function_of_the_seed():
    phases = resolve_strategy("mixed", TrainSpec(bio_epochs=2, qa_epochs=2))
    first = plan_run(phases, SIZES, 32, seed=4)[0].batches
    assert first == plan_run(phases, SIZES, 32, seed=4)[0].batches
    assert first != plan_run(phases, SIZES, 32, seed=5)[0].batches


def test_micro_batches_keep_sources_apart_and_cover_the_batch():
    batch = [("bio", 1), ("qa_train", 2), ("bio", 3), ("qa_train", 4), ("bio", 5)]
    micro = split_micro_batches(batch, grad_accum=1)
    assert sorted(item for mb in micro for item in mb) == sorted(batch)
    assert all(len({source for source, _ in mb}) == 1 for mb in micro)


@pytest.mark.parametrize(("value", "expected"), [
    (3e-4, 3e-4), (8, 8.0), ("stage2_lr", 2e-3), ("qa_epochs", 6.0),
    ("0.1*stage2_lr", 2e-4), (" 0.5 * qa_epochs ", 3.0), ("2e-1*lr", 1e-4)])
def test_the_documented_value_forms(value, expected):
    train = TrainSpec(lr=5e-4, stage2_lr=2e-3, qa_epochs=6)
    assert resolve_value(value, train, "here") == pytest.approx(expected)


@pytest.mark.parametrize(("value", "message"), [
    ("mixed_precision", "expected a number"),  # a setting, but not a number
    ("packing", "expected a number"), ("stage_2_lr", "expected a number"),
    ("lr*0.1", "expected a number"), ("1..0*lr", "bad factor"), (True, "expected a number"),
    ("-0.1*lr", "must be finite and >= 0"), (-1, "must be finite and >= 0"),
    ("1e999*lr", "must be finite"), ({"lr": 1}, "expected a number")])
def test_a_bad_value_is_one_user_error(value, message):
    with pytest.raises(UserError, match=message) as caught:
        resolve_value(value, TrainSpec(), "here")
    assert "\n" not in str(caught.value)


LOW2_PHASES = """
  {name = "bio", epochs = {bio = "bio_epochs"}},
  {name = "qa", epochs = {qa_train = "qa_epochs"}, lr = "0.1*stage2_lr"},
"""
SPELLINGS = {
    "table with phases": f"[custom_strategies.low2]\nphases = [{LOW2_PHASES}]\n",
    "array of phase tables": (
        '[[custom_strategies.low2.phases]]\nname = "bio"\nepochs = {bio = "bio_epochs"}\n'
        '[[custom_strategies.low2.phases]]\nname = "qa"\nepochs = {qa_train = "qa_epochs"}\n'
        'lr = "0.1*stage2_lr"\n'),
    "compact (suites/gpu.toml)": f"[custom_strategies]\nlow2 = [{LOW2_PHASES}]\n",
}
SUITE_HEAD = 'name = "s"\nstrategies = ["low2"]\n[train]\nlr = 1e-3\nstage2_lr = 3e-3\nqa_epochs = 4\n'


def _suite(text: str):
    return parse_suite(tomllib.loads(SUITE_HEAD + text), "s.toml")


@pytest.mark.parametrize("spelling", sorted(SPELLINGS))
def test_every_spelling_of_a_custom_strategy_gives_the_same_runs(spelling):
    (config,) = _suite(SPELLINGS[spelling]).runs
    bio, qa = config.phases
    assert (bio.name, bio.epochs, bio.lr) == ("bio", {"bio": 16.0}, 1e-3)  # defaults: lr = "lr"
    assert (qa.name, qa.epochs, qa.mix) == ("qa", {"qa_train": 4.0}, {})
    assert qa.lr == pytest.approx(3e-4)
    (compact,) = _suite(SPELLINGS["compact (suites/gpu.toml)"]).runs
    assert config.run_id == compact.run_id


@pytest.mark.parametrize(("text", "message"), [
    ('[custom_strategies.low2]\nphase = []\n', "expected only phases"),
    ('[custom_strategies.low2]\nphases = []\n', "non-empty list of tables"),
    ('[custom_strategies]\nlow2 = ["bio"]\n', "non-empty list of tables"),
    ('[custom_strategies]\nlow2 = 3\n', "non-empty list of tables"),
    ('[custom_strategies.low2]\nphases = [{epochs = {bio = 1}, lr = "lr2"}]\n', "lr2"),
    ('[custom_strategies.low2]\nphases = [{epochs = {bio = 1}, rate = 1}]\n', "unknown key"),
    ('[custom_strategies.low2]\nphases = [{lr = 1}]\n', "needs epochs"),
    ('[custom_strategies.low2]\nphases = [{epochs = {}}]\n', "needs epochs"),
    ('[custom_strategies.low2]\nphases = [{epochs = 16}]\n', "needs epochs"),
    ('[custom_strategies.low2]\nphases = [{epochs = {qa_test = 1}}]\n', "unknown source"),
    ('[custom_strategies.mixed]\nphases = [{epochs = {bio = 1}}]\n', "shipped strategy"),
    ('[custom_strategies."../low2"]\nphases = [{epochs = {bio = 1}}]\n', "strategy name"),
])
def test_a_bad_custom_strategy_is_one_user_error(text, message):
    with pytest.raises(UserError, match=message) as caught:
        _suite(text)
    assert "\n" not in str(caught.value)


def test_a_strategies_table_says_where_a_new_strategy_goes():
    raw = tomllib.loads('name = "s"\n[strategies.low2]\nphases = [{epochs = {bio = 1}}]\n')
    with pytest.raises(UserError, match=r"\[custom_strategies.my-recipe\]"):
        parse_suite(raw, "s.toml")


def test_a_bad_custom_strategy_exits_2_with_one_line(tmp_path):
    suite = tmp_path / "low2.toml"
    suite.write_text(SUITE_HEAD + SPELLINGS["table with phases"].replace("0.1*stage2_lr",
                                                                         "0.1*stage_2_lr"))
    completed = run_cli("run", "--suite", str(suite), "--runs-dir", str(tmp_path / "runs"))
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines() == [
        completed.stderr.strip()]  # one line
    assert "strategy low2 phase 1" in completed.stderr and "'0.1*stage_2_lr'" in completed.stderr


# --- mutation-killing tests ----------------------------------------------------------------------
# Found by mutation testing (docs/mutation.md); kept with the module's other tests.
# What a phase and a strategy resolve to, and the messages users get for a bad strategy table.


TRAIN = TrainSpec(lr=1e-3, stage2_lr=1e-4, qa_share=0.25)


@pytest.mark.parametrize(("phase", "words"), [
    ({"epochs": {"bio": True}}, "strategy s phase 0: expected a number (3e-4), a train setting"),
    ({"epochs": {"bio": [1]}}, "strategy s phase 0: expected a number (3e-4), a train setting"),
    ({"epochs": {"bio": "1.2.3*bio_epochs"}}, "strategy s phase 0: bad factor in '1.2.3*bio_epochs'"),
    ({"epochs": {"bio": 1}, "mix": "half"}, "strategy s phase 0: mix must be a table of shares"),
    ({"epochs": {"bio": 1}, "mix": {"bio": "nope"}}, "strategy s phase 0: expected a number"),
    ({"epochs": {"bio": 1}, "lrr": 1}, "strategy s phase 0: unknown key(s) lrr"),
    ({"name": "x"}, "strategy s phase 0: a phase needs epochs"),
    ({"epochs": {"ood": 1}}, "strategy s phase 0: unknown source 'ood' (known: bio, qa_train)"),
    ({"epochs": {"bio": 1}, "lr": "nope"}, "strategy s phase 0: expected a number"),
    ({"epochs": {"bio": 1, "qa_train": 1}, "mix": {"bio": -0.5, "qa_train": 1.5}},
     "strategy s phase 0: -0.5 gives -0.5; epochs, learning rates and shares must be finite"),
    ({"epochs": {"bio": 1}, "mix": {"bio": 0.0}}, "mix shares must be >= 0 and not all zero"),
])
def test_bad_phases_are_named_with_their_place(phase, words):
    with pytest.raises(UserError) as caught:
        resolve_strategy("s", TRAIN, {"s": [phase]})
    assert words in str(caught.value)


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(UserError, match=r"known: bio-only, mixed, pit, two-stage, two-stage-replay\)"):
        resolve_strategy("nope", TRAIN)


def test_a_phase_defaults_to_the_base_lr_and_a_generic_name_and_takes_named_shares():
    phase = resolve_phase({"epochs": {"bio": 1, "qa_train": 1}, "mix": {"bio": 1, "qa_train": 0.0}},
                          TRAIN, "w")
    assert (phase.name, phase.lr) == ("phase", 1e-3)
    assert phase.mix == {"bio": 1.0, "qa_train": 0.0}
    named = resolve_phase({"epochs": {"bio": 1, "qa_train": 1}, "mix": {"qa_train": "qa_share"}},
                          TRAIN, "w")
    assert named.mix == {"qa_train": 0.25}


def test_no_replay_share_trains_the_qa_phase_on_qa_only():
    phases = resolve_strategy("two-stage-replay", TrainSpec(replay_share=0.0, qa_epochs=1))
    assert example_counts(phases[1], {"bio": 1000, "qa_train": 600}) == {"qa_train": 600}


def test_resolve_value_scales_a_setting():
    assert resolve_value("0.5*qa_epochs", TrainSpec(qa_epochs=4), "w") == 2.0
    assert math.isclose(resolve_value(3, TRAIN, "w"), 3.0)


# --- the exact messages of a bad phase or custom strategy (one line a user reads and acts on) ---
EXAMPLE = '{name = "qa", epochs = {qa_train = "qa_epochs"}, lr = "0.1*stage2_lr"}'


def message_of(call) -> str:
    with pytest.raises(UserError) as caught:
        call()
    return str(caught.value)


@pytest.mark.parametrize(("spec", "expected"), [
    ("qa", f"w: a phase is a table like {EXAMPLE}, got 'qa'"),
    ({"epochs": {"bio": 1}, "zeta": 1, "alpha": 2},
     f"w: unknown key(s) alpha, zeta (a phase has name, epochs, mix, lr, e.g. {EXAMPLE})"),
    ({"name": "p"}, 'w: a phase needs epochs, a table of passes per source, e.g. epochs = '
                    '{bio = "bio_epochs", qa_train = 2} (sources: bio, qa_train)'),
    ({"epochs": {"bio": "-2*lr"}},
     "w: '-2*lr' gives -0.002; epochs, learning rates and shares must be finite and >= 0"),
])
def test_a_bad_phase_is_one_line_naming_what_is_wrong(spec, expected):
    assert message_of(lambda: resolve_phase(spec, TrainSpec(lr=1e-3), "w")) == expected


def test_an_unknown_setting_lists_the_numeric_train_settings_in_order():
    message = message_of(lambda: resolve_value("0.5*packing", TrainSpec(), "w"))
    assert message.startswith("w: expected a number (3e-4), a train setting (\"stage2_lr\") or "
                              "FACTOR*SETTING (\"0.1*stage2_lr\"), got '0.5*packing' (settings: "
                              "bio_epochs, qa_epochs, qa_share, replay_share, lr, stage2_lr, ")
    assert message.endswith(", pack_width)")


@pytest.mark.parametrize(("table", "expected"), [
    ({"my run": [{"epochs": {"bio": 1}}]},
     "suite s: custom strategy 'my run': a strategy name is letters, digits and _.+- (it names run "
     "folders)"),
    ({"mine": {"phases": [{"epochs": {"bio": 1}}], "lr": 1, "extra": 2}},
     "suite s: custom strategy 'mine': expected only phases = [...], got key(s) extra, lr, phases"),
    ({"mine": {}},
     "suite s: custom strategy 'mine': expected only phases = [...], got key(s) none"),
])
def test_a_bad_custom_strategy_names_itself_and_what_is_wrong(table, expected):
    assert message_of(lambda: custom_strategy_phases(table, "suite s")) == expected
