"""A suite's own trackers (issue 17): `log_with = [...]` in the suite file, used when `--log-with`
is not given (the command line wins), checked like the rest of the file."""

from __future__ import annotations

import tomllib

import pytest

from factrecall_bench.errors import UserError
from factrecall_bench.runner import RunOptions
from factrecall_bench.suite import load_suite, parse_suite
from factrecall_bench.tracking import check_trackers, requested_trackers
from tests.conftest import MICRO_SUITE

HEADER = 'name = "t"\nstrategies = ["mixed"]\n'


def _suite(text: str):
    return parse_suite(tomllib.loads(HEADER + text), "t.toml")


def test_a_suite_names_its_trackers_and_the_command_line_wins():
    suite = _suite('log_with = ["TensorBoard", "mlflow"]\n')
    assert suite.log_with == "tensorboard,mlflow"
    assert requested_trackers(suite.trackers(None)) == ["tensorboard", "mlflow"]
    assert suite.trackers("wandb") == "wandb"
    assert suite.trackers("") == ""  # --log-with "" turns the suite's trackers off


def test_no_log_with_means_no_trackers():
    suite = _suite("")
    assert suite.log_with is None and suite.trackers(None) is None
    assert _suite("log_with = []\n").trackers(None) == ""


def test_trackers_do_not_change_a_suites_runs(tmp_path):
    path = tmp_path / "micro.toml"
    path.write_text(MICRO_SUITE.read_text("utf-8").replace(
        "seeds = [0]", 'seeds = [0]\nlog_with = ["tensorboard"]'))
    with_trackers, plain = load_suite(str(path)), load_suite(str(MICRO_SUITE))
    assert with_trackers.log_with == "tensorboard"
    assert [c.run_id for c in with_trackers.runs] == [
        c.run_id for c in plain.runs]
    assert with_trackers.suite_hash == plain.suite_hash
    check_trackers(RunOptions(log_with=with_trackers.trackers(None)).log_with)  # installed here


def test_set_gives_a_suite_trackers():
    suite = load_suite(str(MICRO_SUITE), ['log_with=["tensorboard"]'])
    assert suite.trackers(None) == "tensorboard"


@pytest.mark.parametrize("value, message", [
    ('"tensorboard"', "log_with must be a list of tracker names"),
    ("[1]", "log_with must be a list of tracker names"),
    ('[""]', "log_with must be a list of tracker names"),
    ('["nope"]', "log_with: nope is not a tracker accelerate knows"),
])
def test_a_bad_log_with_is_one_user_error(value, message):
    with pytest.raises(UserError, match=message) as caught:
        _suite(f"log_with = {value}\n")
    assert "\n" not in str(caught.value)
