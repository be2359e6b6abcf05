"""CLI progress bars: fed incrementally from the event logs, robust to partial and rewritten logs."""

from __future__ import annotations

import json

from factrecall_bench.progress import EventProgress, RunProgress


def line(event: str, **fields) -> str:
    return json.dumps({"event": event, "run_id": "r", **fields}) + "\n"


def test_progress_reads_only_what_the_log_gained(tmp_path):
    path = tmp_path / "events.jsonl"
    progress = EventProgress({"r": path}, enabled=False)
    progress.refresh()  # no log yet
    assert progress.run("r").status == "waiting"
    step_3 = line("step", step=3, phase="bio", loss=2.5)
    path.write_text(line("run_start", total_steps=10) + step_3[:15])  # the writer is mid-line
    progress.refresh()
    assert (progress.run("r").done, progress.run("r").total) == (0, 10)
    with path.open("a") as handle:
        handle.write(step_3[15:] + "not json\n" + line("step", step=5, phase="qa", loss=1.25))
    progress.refresh()
    assert progress.run("r").done == 5 and progress.run("r").status == "qa loss 1.250"
    with path.open("a") as handle:
        handle.write(line("run_end"))
    progress.refresh()
    assert progress.run("r").done == 10 and progress.run("r").status == "done"


def test_a_rewritten_log_starts_the_count_again(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(line("run_start", total_steps=10) + line("step", step=8, phase="bio", loss=1.0))
    progress = EventProgress({"r": path}, enabled=False)
    progress.refresh()
    assert progress.run("r").done == 8
    path.write_text(line("run_start", total_steps=4))
    progress.refresh()
    assert (progress.run("r").done, progress.run("r").total) == (0, 4)


def test_incremental_and_whole_log_readings_agree(tmp_path):
    events = [{"event": "run_start", "total_steps": 6}, {"event": "step", "step": 2, "phase": "bio",
              "loss": 3.0}, {"event": "run_failed", "reason": "loss diverged at step 4: nan"}]
    path = tmp_path / "events.jsonl"
    progress = EventProgress({"r": path}, enabled=False)
    for event in events:
        with path.open("a") as handle:
            handle.write(json.dumps({**event, "run_id": "r"}) + "\n")
        progress.refresh()
    run, whole_log = progress.run("r"), RunProgress()
    for event in events:
        whole_log.apply(event)
    assert run == whole_log
    assert run.status.startswith("failed: loss diverged")


def test_a_rerun_shows_the_steps_a_run_had_but_not_the_failure_it_resumes_from(tmp_path, capsys):
    """Plain lines of a rerun after Ctrl-C: the interrupted run waits for its worker, and the
    next line is its new start, not "failed: interrupted ... rerun to resume"."""
    path = tmp_path / "events.jsonl"
    path.write_text(line("run_start", total_steps=800) + line("step", step=120, phase="bio", loss=0.5)
                    + line("run_failed", reason="interrupted (Ctrl-C or SIGTERM)"))
    progress = EventProgress({"r": path}, enabled=True, plain=True)
    progress.refresh()
    assert (progress.run("r").done, progress.run("r").status) == (120, "waiting")
    assert capsys.readouterr().err == ""
    with path.open("a") as handle:
        handle.write(line("run_start", total_steps=800))
    progress.refresh()
    assert capsys.readouterr().err == "r: 120/800 steps, training\n"


def test_a_failure_of_this_command_is_shown(tmp_path, capsys):
    path = tmp_path / "events.jsonl"
    progress = EventProgress({"r": path}, enabled=True, plain=True)
    path.write_text(line("run_start", total_steps=8) + line("run_failed", reason="loss diverged"))
    progress.refresh()
    assert capsys.readouterr().err == "r: 0/8 steps, failed: loss diverged\n"
