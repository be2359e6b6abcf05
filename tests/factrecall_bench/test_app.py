"""The library behind the CLI's commands (app.py): here, the line `run` starts with."""

from __future__ import annotations

from pathlib import Path

from factrecall_bench.app import what_will_run
from factrecall_bench.suite import load_suite
from tests.conftest import TINY_SUITE, tiny_config, write_finished_run

TINY = load_suite(str(TINY_SUITE))


def line(runs: Path, jobs: int = 2) -> str:
    return what_will_run(TINY, list(TINY.runs), runs, jobs)


def test_it_counts_the_runs_to_train_the_finished_and_the_reused(tmp_path):
    """No more side by side than runs to train, whatever the jobs."""
    write_finished_run(tmp_path, tiny_config("mixed"))
    write_finished_run(tmp_path, tiny_config("two-stage", suite_name="elsewhere"))
    assert len(TINY.runs) == 4  # 2 strategies x 2 seeds
    assert line(tmp_path, jobs=3) == (f"suite tiny: 2 of 4 runs to train (1 already finished, 1 reused "
                              f"from runs that trained the same thing), 2 side by side, in "
                              f"{tmp_path / 'tiny'}")


def test_with_nothing_done_every_run_trains_as_many_side_by_side_as_jobs(tmp_path):
    assert line(tmp_path, jobs=2) == f"suite tiny: 4 of 4 runs to train (0 already finished), " \
                                     f"2 side by side, in {tmp_path / 'tiny'}"


def test_a_suite_all_finished_has_nothing_to_do(tmp_path):
    for config in TINY.runs:
        write_finished_run(tmp_path, config)
    assert line(tmp_path) == f"suite tiny: all 4 runs already finished in {tmp_path / 'tiny'}; " \
                             "nothing to do"


def test_a_suite_all_reused_says_so_rather_than_finished_in_its_own_folder(tmp_path):
    write_finished_run(tmp_path, TINY.runs[0])
    for config in TINY.runs[1:]:
        write_finished_run(tmp_path, tiny_config(config.strategy, config.seed, "elsewhere"))
    assert line(tmp_path) == (f"suite tiny: no run to train: 1 already finished in "
                              f"{tmp_path / 'tiny'}, 3 reused from runs that trained the same "
                              f"thing; nothing to do")
