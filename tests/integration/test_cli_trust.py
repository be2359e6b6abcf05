"""What a new user meets at the command line (issue 15): bad input found before any work, output
where users look, exit codes CI can trust, a clean checkout that runs clean."""

from __future__ import annotations

import errno
import json
import re
import sys

import pytest

from factrecall_bench import cli, exit_codes
from factrecall_bench.cli_exit import exit_code_of
from factrecall_bench.errors import UserError
from factrecall_bench.progress import PlainLines, RunProgress
from factrecall_bench.suite import load_suite, shipped_suites
from factrecall_bench.verdicts.baselines import read_baseline
from tests.conftest import ROOT, TINY_SUITE, run_cli

REPO = ROOT


# --- bad input is found before any work (item 5) ---------------------------------------------


@pytest.mark.parametrize("content", ["", '{"schema_version": 1, "suite": "tiny"'])
def test_a_broken_baseline_stops_run_before_training(content, tmp_path):
    baselines = tmp_path / "baselines"
    baselines.mkdir()
    (baselines / "tiny.json").write_text(content)
    runs = tmp_path / "runs"
    result = run_cli("run", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                     "--baselines-dir", str(baselines), timeout=60)
    assert result.returncode == 2, result.stderr
    assert "tiny.json" in result.stderr and "Traceback" not in result.stderr
    assert not (runs / "tiny").exists(), "a run started before the baseline was checked"


def test_check_judges_what_exists_and_trains_nothing(tmp_path):
    runs = tmp_path / "runs"
    result = run_cli("check", "--suite", str(TINY_SUITE), "--runs-dir", str(runs), timeout=60)
    assert result.returncode == 2
    assert "no finished run" in result.stderr and "run --suite" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (runs / "tiny").exists()


@pytest.mark.parametrize("jobs", ["0", "-1"])
def test_jobs_below_one_is_refused(jobs, tmp_path):
    result = run_cli("run", "--suite", str(TINY_SUITE), "--jobs", jobs, "--runs-dir",
                     str(tmp_path / "runs"), timeout=60)
    assert result.returncode == 2 and "--jobs" in result.stderr
    assert not (tmp_path / "runs" / "tiny").exists()


def test_junit_path_at_a_folder_is_refused_before_any_run(tmp_path):
    result = run_cli("run", "--suite", str(TINY_SUITE), "--junit-xml", str(tmp_path),
                     "--runs-dir", str(tmp_path / "runs"), timeout=60)
    assert result.returncode == 2 and "--junit-xml" in result.stderr
    assert not (tmp_path / "runs" / "tiny").exists()


@pytest.mark.parametrize(("flag", "value"), [("--people", "0"), ("--train-fraction", "1.5"),
                                             ("--variants", "0"), ("--templates", "999")])
def test_data_errors_name_the_flag_the_user_typed(flag, value, tmp_path):
    args = ["--people", "10"] if flag != "--people" else []
    result = run_cli("data", "generate", "--out", str(tmp_path / "d"), *args, flag, value,
                     timeout=60)
    assert result.returncode == 2 and flag in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# --- exit codes CI can trust (item 8) --------------------------------------------------------


def _exit_code_when_a_command_raises(error: BaseException, monkeypatch) -> tuple[int, str]:
    def boom(**_: object) -> None:
        raise error

    monkeypatch.setattr(cli, "app", boom)
    monkeypatch.setattr(sys, "argv", ["factrecall-bench"])
    messages: list[str] = []
    monkeypatch.setattr(sys.stderr, "write", messages.append)
    return exit_code_of(cli.app, debug=False), "".join(messages)


def test_an_unexpected_error_is_internal_not_a_user_error(monkeypatch):
    code, message = _exit_code_when_a_command_raises(ValueError("bad shape"), monkeypatch)
    assert code == exit_codes.INTERNAL == 5
    assert "--debug" in message and "bad shape" in message


def test_an_unexpected_os_error_is_internal(monkeypatch):
    code, _ = _exit_code_when_a_command_raises(OSError(errno.EBADF, "Bad file descriptor"),
                                               monkeypatch)
    assert code == exit_codes.INTERNAL


@pytest.mark.parametrize("error", [UserError("no such suite"),
                                   OSError(errno.ENOSPC, "No space left on device", "/x")])
def test_input_and_environment_errors_are_one_line_exit_2(error, monkeypatch):
    code, message = _exit_code_when_a_command_raises(error, monkeypatch)
    assert code == exit_codes.USAGE and len(message.strip().splitlines()) == 1


def test_debug_shows_the_traceback(monkeypatch):
    monkeypatch.setattr(cli, "app", lambda **_: (_ for _ in ()).throw(RuntimeError("x")))
    with pytest.raises(RuntimeError):
        exit_code_of(cli.app, debug=True)


def test_precedence_of_combined_codes():
    assert exit_codes.combined([3, 1, 0]) == 1
    assert exit_codes.combined([3, 4]) == 4
    assert exit_codes.combined([1, 4]) == 1
    assert exit_codes.combined([0, 3]) == 3
    assert exit_codes.combined([]) == 0


# --- a clean checkout runs clean (item 7) ----------------------------------------------------


@pytest.mark.parametrize("baseline", sorted((REPO / "baselines").glob("*.json")),
                         ids=lambda path: path.stem)
def test_every_shipped_baseline_matches_its_shipped_suite(baseline):
    stored = read_baseline(baseline)
    assert stored["suite"] in shipped_suites()
    suite = load_suite(stored["suite"])
    assert stored["suite_hash"] == suite.suite_hash, (
        f"{baseline.name} was stored for another version of suite {suite.name}: rerun "
        f"`factrecall-bench baseline update --suite {suite.name}`")


def test_editing_a_claim_keeps_the_baseline_valid(tmp_path):
    text = TINY_SUITE.read_text()
    edited = tmp_path / "tiny.toml"
    edited.write_text(text.replace('why = "smoke test of the claim machinery"',
                                   'why = "another reason"'))
    assert load_suite(str(edited)).suite_hash == load_suite(str(TINY_SUITE)).suite_hash
    edited.write_text(text.replace("lr = 3e-3\n", "lr = 2e-3\n", 1))
    assert load_suite(str(edited)).suite_hash != load_suite(str(TINY_SUITE)).suite_hash


# --- progress without a terminal (item 6) ----------------------------------------------------


def test_plain_progress_prints_milestones_at_once_and_steps_at_an_interval(capsys):
    lines = PlainLines(interval=3600)
    run = RunProgress(done=0, total=10, status="training")
    lines.show("r", run)
    run.done, run.status = 5, "bio loss 1.000"
    lines.show("r", run)  # within the interval: not shown
    run.done, run.status = 10, "done"
    lines.show("r", run)
    shown = capsys.readouterr().err.splitlines()
    assert shown == ["r: 0/10 steps, training", "r: 10/10 steps, done"]


# --- the whole walk, as a user does it (items 6, 7, 10) --------------------------------------


@pytest.mark.slow
def test_run_then_check_piped_to_a_file(tmp_path):
    runs, baselines = tmp_path / "runs", tmp_path / "baselines"
    made = run_cli("baseline", "update", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                   "--baselines-dir", str(baselines))
    assert made.returncode == 0, made.stderr
    # Without a terminal, progress arrives as plain lines while it runs, never as bars.
    assert re.search(r"^\S+: \d+/\d+ steps, ", made.stderr, re.M) and "\x1b[" not in made.stderr
    assert made.stdout.startswith("wrote ")
    checked = run_cli("check", "--suite", str(TINY_SUITE), "--runs-dir", str(runs),
                      "--baselines-dir", str(baselines))
    assert checked.returncode in (0, 3), checked.stderr
    # The verdict table and where things were written are on stdout, which a user pipes.
    assert "suite tiny" in checked.stdout and "mixed beats two-stage OOD" in checked.stdout
    assert "report: " in checked.stdout and "verdicts: " in checked.stdout
    # A clean checkout runs clean: no warning of any kind on the way.
    assert "warning" not in checked.stderr.lower() and "changed since" not in checked.stderr
    document = json.loads((runs / "tiny" / "verdicts.json").read_text())
    assert {run["status"] for run in document["runs"]} == {"finished"}
    assert all(run["reused"] for run in document["runs"])


# --- CLI conventions (issue 17) --------------------------------------------------------------


def test_version_and_debug_are_in_the_help():
    from factrecall_bench import __version__

    version = run_cli("--version", timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"factrecall-bench {__version__}"
    shown = run_cli("--help", timeout=60).stdout
    assert "--debug" in shown and "--version" in shown


@pytest.mark.parametrize("command", [["run"], ["check"], ["export"], ["data", "generate"]])
def test_help_has_no_bool_metavars(command):
    shown = run_cli(*command, "--help", timeout=60)
    assert shown.returncode == 0 and "--help" in shown.stdout and "<bool>" not in shown.stdout


def test_usage_errors_are_plain_text_without_boxes(tmp_path):
    result = run_cli("run", "--jobs", "zero", timeout=60)
    assert result.returncode == 2 and "--jobs" in result.stderr
    assert "╭" not in result.stderr and "Traceback" not in result.stderr


def test_suite_names_complete_in_the_shell():
    completed = run_cli(timeout=60, env={"_FACTRECALL_BENCH_COMPLETE": "complete_bash",
                                         "COMP_WORDS": "factrecall-bench check --suite c",
                                         "COMP_CWORD": "3"})
    assert completed.stdout.split() == ["cpu"]


# --- overrides and shipped suites to copy (issue 17) -----------------------------------------


def test_set_overrides_reach_the_runs_and_are_validated_like_the_file():

    suite = load_suite("cpu", ["train.stage2_lr=3e-4", "seeds=[0, 1]", "data.permute=false"])
    configs = suite.runs
    assert {config.seed for config in configs} == {0, 1}
    assert {config.phases[-1].lr for config in configs if config.strategy == "two-stage"} == {3e-4}
    assert all(not config.data.permute for config in configs)
    assert suite.suite_hash != load_suite("cpu").suite_hash  # other runs, other baseline
    with pytest.raises(UserError, match="train.lr: expected float"):
        load_suite("cpu", ["train.lr=fast"])
    with pytest.raises(UserError, match="unknown key"):
        load_suite("cpu", ["train.no_such_key=1"])
    with pytest.raises(UserError, match="expected TABLE.KEY=VALUE"):
        load_suite("cpu", ["stage2_lr"])


def test_set_refuses_a_key_a_variant_would_shadow():
    with pytest.raises(UserError, match="variant .* sets train.stage2_lr itself"):
        load_suite("sensitivity", ["train.stage2_lr=1e-4"])


def test_a_variation_is_named_after_its_overrides_or_its_name():
    varied = load_suite("cpu", ["train.stage2_lr=3e-4"])
    assert (varied.name, varied.report_name) == ("cpu", "cpu+train.stage2_lr=3e-4")
    assert load_suite("cpu").report_name == "cpu"  # the suite's own report keeps its name
    assert load_suite("cpu", ["seeds=[0, 1]"]).report_name == "cpu+seeds=_0_1_"
    assert load_suite("cpu", ["train.lr=1e-3"], "my-lr").report_name == "my-lr"
    long_name = load_suite("cpu", ["train.stage2_lr=3e-4"] * 6).report_name
    assert len(long_name) == 64 and long_name.startswith("cpu+train.stage2_lr=3e-4+")


@pytest.mark.parametrize(("overrides", "name", "message"), [
    ([], "mine", "--name 'mine' names a variation: give it with --set"),
    (["train.lr=1e-3"], "cpu", "--name 'cpu' is a suite's own folder"),
    (["train.lr=1e-3"], "paper", "--name 'paper' is a suite's own folder"),
    (["train.lr=1e-3"], "data", "--name 'data' is a suite's own folder"),
    (["train.lr=1e-3"], "../up", "--name '../up': must be 1 to 64 letters"),
])
def test_a_variation_name_that_could_overwrite_a_report_is_refused(overrides, name, message):
    with pytest.raises(UserError, match=re.escape(message)):
        load_suite("cpu", overrides, name)


def test_set_on_the_command_line_is_one_line_exit_2(tmp_path):
    result = run_cli("run", "--suite", str(TINY_SUITE), "--set", "train.lr=fast",
                     "--runs-dir", str(tmp_path / "runs"), timeout=60)
    assert result.returncode == 2 and "train.lr" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs" / "tiny").exists()


def test_suites_show_prints_a_suite_that_loads_as_the_shipped_one(tmp_path):
    shown = run_cli("suites", "show", "cpu", timeout=60)
    assert shown.returncode == 0
    copy = tmp_path / "cpu.toml"
    copy.write_text(shown.stdout)
    assert load_suite(str(copy)).suite_hash == load_suite("cpu").suite_hash
    assert run_cli("suites", "show", "nope", timeout=60).returncode == 2


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_tui_on_a_wrong_runs_path_is_one_line_not_an_empty_app(kind, tmp_path, monkeypatch, capsys):
    """Without --suite nothing would ever fill a mistyped folder: refuse it before the app opens."""
    target = tmp_path / "runz"
    if kind == "file":
        target.write_text("not a folder")
    opened = []
    monkeypatch.setattr("factrecall_bench.tui.app.run_app", lambda *a, **k: opened.append(a))
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", "tui", str(target)])
    assert exit_code_of(cli.app, debug=False) == exit_codes.USAGE
    error = capsys.readouterr().err.strip()
    what = "does not exist" if kind == "missing" else "is not a folder"
    assert error == (f"error: runs folder {target} {what}: name the folder `run --runs-dir` "
                     "wrote, or start a suite with `tui --suite S`")
    assert opened == []
    target.parent.joinpath("runs").mkdir()
    monkeypatch.setattr(sys, "argv", ["factrecall-bench", "tui", str(tmp_path / "runs")])
    assert exit_code_of(cli.app, debug=False) == exit_codes.OK and len(opened) == 1
