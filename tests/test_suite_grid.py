"""A suite's `[grid]` (issue 17): one variant per combination of values, named readably, checked
like the rest of the suite file, and the shipped sensitivity suite written as one."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from factrecall_bench.errors import UserError
from factrecall_bench.runfolder import run_config_dict
from factrecall_bench.suite import load_suite, parse_suite
from tests.conftest import run_cli

HEADER = 'name = "g"\nstrategies = ["mixed"]\n[model]\nn_layer = 1\n'

SENSITIVITY_BY_HAND = """
[[variants]]
name = "aug-lr2=1e-3"
train = {stage2_lr = 1e-3}
[[variants]]
name = "aug-lr2=3e-4"
train = {stage2_lr = 3e-4}
[[variants]]
name = "aug-lr2=1e-4"
train = {stage2_lr = 1e-4}
[[variants]]
name = "single-lr2=1e-3"
data = {bio_variants = 1, permute = false}
train = {stage2_lr = 1e-3}
[[variants]]
name = "single-lr2=3e-4"
data = {bio_variants = 1, permute = false}
train = {stage2_lr = 3e-4}
[[variants]]
name = "single-lr2=1e-4"
data = {bio_variants = 1, permute = false}
train = {stage2_lr = 1e-4}
"""
"""The six variants the sensitivity suite listed by hand before it had a grid."""


def _suite(text: str):
    return parse_suite(tomllib.loads(HEADER + text), "g.toml")


def _resolved(suite) -> list[dict]:
    return [run_config_dict(config) for config in suite.runs]


def test_a_grid_crosses_every_value_of_every_key_in_file_order():
    suite = _suite('[grid]\n"train.stage2_lr" = [1e-3, 3e-4]\n"data.permute" = [true, false]\n')
    assert [variant.name for variant in suite.variants] == [
        "stage2_lr=1e-3-permute=true", "stage2_lr=1e-3-permute=false",
        "stage2_lr=3e-4-permute=true", "stage2_lr=3e-4-permute=false"]
    configs = suite.runs
    assert {(c.train.stage2_lr, c.data.permute) for c in configs} == {
        (1e-3, True), (1e-3, False), (3e-4, True), (3e-4, False)}
    assert len({config.run_id for config in configs}) == 4


def test_explicit_variants_are_each_crossed_with_the_grid_and_labels_name_the_axes():
    suite = _suite('[[variants]]\nname = "a"\n[[variants]]\nname = "b"\ndata = {n_people = 20}\n'
                   '[grid]\n"train.batch_size" = [16, 32]\n"train.lr" = [0.5]\n'
                   '[grid.labels]\n"train.batch_size" = "bs"\n')
    assert [variant.name for variant in suite.variants] == [
        "a-bs=16-lr=0.5", "a-bs=32-lr=0.5", "b-bs=16-lr=0.5", "b-bs=32-lr=0.5"]
    assert {c.data.n_people for c in suite.runs if c.variant.startswith("b-")} == {20}


def test_the_sensitivity_grid_resolves_to_exactly_the_hand_written_runs():
    shipped_path = Path(load_suite("sensitivity").source)
    text = shipped_path.read_text("utf-8")
    head = text[: text.index("[[variants]]")]
    by_hand = parse_suite(tomllib.loads(head + SENSITIVITY_BY_HAND), "by hand")
    grid = load_suite("sensitivity")
    assert grid.grid, "the shipped sensitivity suite is expected to use [grid]"
    assert _resolved(grid) == _resolved(by_hand)  # same configs, run ids, order
    assert grid.suite_hash == by_hand.suite_hash


@pytest.mark.parametrize("grid, message", [
    ('"train.stage2_lr" = ["fast"]', "train.stage2_lr: expected float"),
    ('"train.no_such_key" = [1]', "unknown key"),
    ('"eval.batch_size" = [1]', "TABLE one of data, model, train"),
    ('stage2_lr = [1e-3]', "expected \"TABLE.KEY\""),
    ('"model.name" = ["tiny-neox"]', "models = "),
    ('"train.lr" = []', "non-empty list"),
    ('"train.lr" = 1e-3', "non-empty list"),
    ('"train.lr" = [1e-3, 0.001]', "listed twice"),
    ('"train.batch_size" = [0]', "batch_size and grad_accum must be > 0"),
    ('"data.n_people" = [10]\n[grid.labels]\n"train.lr" = "lr"', "does not cross: train.lr"),
    ('"train.lr" = [1e-3]\n[grid.labels]\n"train.lr" = "a/b"', "grid.labels"),
    ('', "grid crosses no key"),
])
def test_a_bad_grid_is_one_user_error(grid, message):
    with pytest.raises(UserError, match=message):
        _suite(f"[grid]\n{grid}\n")


def test_a_grid_key_a_variant_sets_too_or_a_repeated_name_is_refused():
    with pytest.raises(UserError, match="variant 'a' sets train.lr, which the grid crosses"):
        _suite('[[variants]]\nname = "a"\ntrain = {lr = 0.1}\n[grid]\n"train.lr" = [0.2]\n')
    with pytest.raises(UserError, match="two variants are named 'a'"):
        _suite('[[variants]]\nname = "a"\n[[variants]]\nname = "a"\n')


def test_set_on_a_key_the_grid_crosses_is_refused(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(HEADER + '[grid]\n"train.lr" = [0.1, 0.2]\n')
    assert len(load_suite(str(path), ["train.stage2_lr=0.5"]).runs) == 2
    with pytest.raises(UserError, match="grid sets train.lr itself"):
        load_suite(str(path), ["train.lr=0.3"])


def test_a_bad_grid_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(HEADER + '[grid]\n"train.stage2_lr" = ["fast"]\n')
    result = run_cli("run", "--suite", str(path), "--runs-dir", str(tmp_path / "runs"), timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "train.stage2_lr" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_suites_show_prints_the_sensitivity_grid(tmp_path):
    shown = run_cli("suites", "show", "sensitivity", timeout=120)
    assert shown.returncode == 0 and "[grid]" in shown.stdout
    copy = tmp_path / "sensitivity.toml"
    copy.write_text(shown.stdout)
    assert load_suite(str(copy)).suite_hash == load_suite("sensitivity").suite_hash
