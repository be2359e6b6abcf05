"""Experiment trackers (TensorBoard, Weights & Biases, MLflow, ...) through accelerate's own.

The run's event log stays the contract: a tracker is one more listener of it, so its curves are
the `step` events' numbers and its evaluations the `eval` and `run_end` events' metrics, sent by
the main process only. Any tracker accelerate knows (`accelerate.tracking.LOGGER_TYPE_TO_CLASS`)
goes through the same code; local ones write under the run's folder (`tracking/`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # accelerate imports torch: a refused command should not wait for it
    from accelerate import Accelerator

from factrecall_bench.errors import UserError
from factrecall_bench.events import EventLog

TRACKING_DIR = "tracking"
"""Inside the run's folder: where local trackers (TensorBoard, Aim, ...) write."""

INSTALL_HINTS = {"tensorboard": "pip install 'factrecall-bench[tensorboard]'",
                 "comet_ml": "pip install comet-ml"}

RUN_NAME_KWARGS = {"wandb": "name", "trackio": "name", "mlflow": "run_name",
                   "swanlab": "experiment_name", "clearml": "task_name"}
"""The keyword each tracker takes for a run's name: the project is the suite, the run its id."""

STEP_KEYS = ("loss", "loss_bio", "loss_qa", "lr", "tokens_per_s")


def requested_trackers(log_with: str | None) -> list[str]:
    """The tracker names in `log_with` ("tensorboard", "wandb,mlflow"); none for None or ""."""
    return [name.strip().lower() for name in (log_with or "").split(",") if name.strip()]


def check_trackers(log_with: str | None) -> None:
    """One clear line (UserError) for a tracker accelerate does not know or that is not
    installed, before any run starts."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers

    available = {str(tracker) for tracker in get_available_trackers()}
    for name in requested_trackers(log_with):
        if name not in LOGGER_TYPE_TO_CLASS:
            known = ", ".join(sorted(LOGGER_TYPE_TO_CLASS))
            raise UserError(f"--log-with {name}: not a tracker accelerate knows (known: {known})")
        if name not in available:
            hint = INSTALL_HINTS.get(name, f"pip install {name}")
            raise UserError(f"--log-with {name}: the {name} package is not installed ({hint})")


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """The nested run config as one level of `section.key` values of the types every tracker
    takes (lists and None as JSON text)."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{name}."))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, sort_keys=True, default=str)
    return flat


def tracker_values(record: dict[str, Any]) -> tuple[dict[str, float], int] | None:
    """What an event sends to the trackers, and at which step (None: nothing).

    `step` -> train/loss, train/loss_bio, train/loss_qa, train/lr, train/tokens_per_s;
    `eval` -> eval/<metric> (phase ends and the final evaluation); `run_end` -> final/<metric>.
    """
    kind = record.get("event")
    if kind == "step":
        values = {f"train/{key}": record[key] for key in STEP_KEYS if key in record}
    elif kind == "eval":
        values = {f"eval/{name}": value for name, value in record["metrics"].items()}
    elif kind == "run_end":
        values = {f"final/{name}": value for name, value in record["metrics"].items()}
    else:
        return None
    numbers = {name: float(value) for name, value in values.items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    return numbers, int(record["step"])


@dataclass
class TrackerListener:
    """An event-log listener that forwards what `tracker_values` picks to the trackers."""

    accelerator: Accelerator

    def __call__(self, record: dict[str, Any]) -> None:
        picked = tracker_values(record)
        if picked is None or not picked[0]:
            return
        values, step = picked
        self.accelerator.log(values, step=step)


def tracker_init_kwargs(names: list[str], run_id: str) -> dict[str, dict[str, str]]:
    return {name: {RUN_NAME_KWARGS[name]: run_id} for name in names if name in RUN_NAME_KWARGS}


@contextlib.contextmanager
def tracking(accelerator: Accelerator, events: EventLog, project: str, run_id: str,
             config: dict[str, Any]) -> Iterator[None]:
    """Start the accelerator's trackers (if it has any) with the run's flat config, feed them the
    run's events, and finish them on the way out, also when the run fails.

    Not `accelerator.end_training()`: besides finishing the trackers it destroys the process
    group, which a multi-process launch keeps for the suite's next run.
    """
    if not accelerator.log_with:
        yield
        return
    names = [str(tracker) for tracker in accelerator.log_with]
    accelerator.init_trackers(project, config=flat_config(config),
                              init_kwargs=tracker_init_kwargs(names, run_id))
    listener = TrackerListener(accelerator)
    events.listeners.append(listener)
    try:
        yield
    finally:
        events.listeners.remove(listener)
        for tracker in accelerator.trackers:
            with contextlib.suppress(Exception):  # a tracker's own trouble must not hide the run's
                tracker.finish()
        accelerator.trackers.clear()


def tracking_dir(run_folder: Path) -> Path:
    return run_folder / TRACKING_DIR
