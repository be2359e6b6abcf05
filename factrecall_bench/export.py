"""Export a finished run's trained model and tokenizer as a Hugging Face folder (`save_pretrained`),
with `export.json` and a README.md saying which run, config, revision and metrics it came from.

The weights are the run's final checkpoint (the step its result was measured at), verified by its
checksums; the tokenizer is the one the run used (for tiny presets: trained on the run's data and
cached beside it). The folder is written whole in a temp folder and then moved into place, into a
new path or an empty folder only: nothing of the user's is ever replaced.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from factrecall_bench import __version__
from factrecall_bench.checkpoints import Checkpoint, verify
from factrecall_bench.config import RunConfig
from factrecall_bench.errors import UserError
from factrecall_bench.io import write_json_atomic, write_text_atomic
from factrecall_bench.models import no_transformers_progress_bars
from factrecall_bench.runfolder import (
    CHECKPOINT_META,
    CHECKPOINT_MODEL,
    ResultDocument,
    RunFolder,
    run_config_from_dict,
)

SCHEMA_VERSION = 1
MARKER = "export.json"
"""Written last: a folder holding it is a complete export."""
INCOMING_PREFIX = ".factrecall-export-"
"""The temp folder an export into an existing empty folder fills there (a killed export leaves it)."""
PROMPT_FORMAT = ("[bos] + tokenizer(prompt, add_special_tokens=False), e.g. prompt = \"What is the "
                 "birth city of NAME? Answer:\"; the answer is ' ' + value, then the end token")


@dataclass(frozen=True)
class FinishedRun:
    folder: Path
    result: ResultDocument
    config: RunConfig
    checkpoint: Checkpoint


def export_run(run_folder: Path, out: Path) -> dict[str, Any]:
    """Write the run's final model and tokenizer into `out` (a new or empty folder); returns what
    export.json holds. Refuses (UserError) anything but a finished run with a valid final
    checkpoint, and an `out` that is not new or empty, before any work."""
    run = finished_run(run_folder)
    check_export_folder(out)
    tokenizer = run_tokenizer(run.config, run_folder.parent.parent)
    model = trained_model(run, tokenizer)
    record = export_record(run)
    write_export(out, model, tokenizer, record)
    return record


def finished_run(run_folder: Path) -> FinishedRun:
    if not run_folder.is_dir():
        raise UserError(f"{run_folder} is not a run folder")
    result = RunFolder(run_folder).read_result()
    if result is None:
        raise UserError(f"{run_folder} holds no finished run (no valid {RunFolder.RESULT}): "
                        "export needs a run that finished")
    if not isinstance(result.get("config"), dict) or not isinstance(result.get("total_steps"), int):
        raise UserError(f"{run_folder}/{RunFolder.RESULT} lacks its config or total_steps")
    config = run_config_from_dict(result["config"])
    return FinishedRun(run_folder, result, config, final_checkpoint(run_folder, result))


def final_checkpoint(run_folder: Path, result: Mapping[str, Any]) -> Checkpoint:
    """The checkpoint of the step the result was measured at; never an earlier one."""
    step = result["total_steps"]
    path = RunFolder(run_folder).checkpoints / f"step-{step:08d}"
    if not path.is_dir():
        raise UserError(f"{run_folder}: the final checkpoint (step {step}) is missing")
    checkpoint = verify(path)
    if checkpoint is None or checkpoint.step != step:
        raise UserError(f"{run_folder}: the final checkpoint {path.name} fails its checksums "
                        "(corrupted): nothing to export")
    return checkpoint


def check_export_folder(out: Path) -> None:
    """`out` must be a new path or an empty folder (leftovers of a killed export aside)."""
    if out.is_symlink():
        raise UserError(f"--out {out} is a link: name a new or empty folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file: name a new or empty folder")
    if out.is_dir() and any(not e.name.startswith(INCOMING_PREFIX) for e in out.iterdir()):
        raise UserError(f"--out {out} is not empty: name a new or empty folder")


def run_tokenizer(config: RunConfig, runs_root: Path) -> PreTrainedTokenizerBase:
    """The tokenizer the run used: the dataset's own (cached beside it) or the pretrained one's."""
    from factrecall_bench.data.dataset import ensure_dataset, load_saved_dataset
    from factrecall_bench.data.tokenizer import ensure_tokenizer
    from factrecall_bench.models import load_pretrained_tokenizer

    if not config.model.from_scratch:
        return load_pretrained_tokenizer(config.model)
    folder = ensure_dataset(config.data, runs_root / "data")  # cached: the run made it
    return ensure_tokenizer(folder, load_saved_dataset(folder))


def trained_model(run: FinishedRun, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    from factrecall_bench.models import build_model

    model = build_model(run.config.model, tokenizer, run.config.seed)
    try:
        run.checkpoint.load_model(model)
    except (RuntimeError, ValueError, OSError) as error:  # shapes or keys that do not fit
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{run.checkpoint.path} does not fit the run's model: {first}") from error
    if run.config.model.gradient_checkpointing:
        model.gradient_checkpointing_disable()  # a training setting, not part of the model
    model.config.use_cache = True
    return model.eval()


def export_record(run: FinishedRun) -> dict[str, Any]:
    """export.json: where the model came from and what it scored."""
    from factrecall_bench.environment import git_revision

    result = run.result
    meta = json.loads((run.checkpoint.path / CHECKPOINT_META).read_text("utf-8"))
    return {
        "schema_version": SCHEMA_VERSION,
        **{key: result.get(key) for key in ("run_id", "suite", "variant", "strategy", "model",
                                            "seed", "config_hash")},
        "run_folder": str(run.folder.resolve()),
        "step": run.checkpoint.step,
        "checkpoint_sha256": meta["sha256"][CHECKPOINT_MODEL],
        "git_revision": (result.get("environment") or {}).get("git_revision", "unknown"),
        "exported_with": {"factrecall_bench": __version__, "git_revision": git_revision()},
        "metrics": result.get("metrics", {}),
        "prompt_format": PROMPT_FORMAT,
        "config": result["config"],
    }


def model_card(record: dict[str, Any]) -> str:
    rows = "\n".join(f"| {name} | {m['value']:.4f} | [{m['low']:.4f}, {m['high']:.4f}] | {m['n']} |"
                     for name, m in sorted(record["metrics"].items()))
    return f"""# {record['run_id']}

A model trained by factrecall-bench: suite `{record['suite']}`, strategy `{record['strategy']}`,
model `{record['model']}`, seed {record['seed']}; final step {record['step']}.
Config hash `{record['config_hash']}`, git revision `{record['git_revision']}`.
Everything about its origin is in `export.json`.

| metric | value | 95% Wilson interval | n |
|---|---|---|---|
{rows}

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained(FOLDER)
tokenizer = AutoTokenizer.from_pretrained(FOLDER)
```

Prompts as in training: {record['prompt_format']}. Greedy decoding.
"""


def write_export(out: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 record: dict[str, Any]) -> None:
    tmp = _temp_folder(out)
    try:
        with no_transformers_progress_bars():
            model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        write_text_atomic(tmp / "README.md", model_card(record))
        write_json_atomic(tmp / MARKER, record)
        _readable_by_all(tmp)
        _move_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _readable_by_all(tmp: Path) -> None:
    """mkdtemp makes 0700 and safetensors may write 0600: an export is meant to be shared."""
    umask = os.umask(0)
    os.umask(umask)
    for path in (tmp, *tmp.rglob("*")):
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def _temp_folder(out: Path) -> Path:
    """Inside `out` if it is an (empty) folder already, so `--out .` works; else beside it."""
    try:
        if out.is_dir():
            for leftover in out.glob(f"{INCOMING_PREFIX}*"):
                shutil.rmtree(leftover, ignore_errors=True)
            return Path(tempfile.mkdtemp(dir=out, prefix=INCOMING_PREFIX))
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.export-"))
    except OSError as error:
        raise UserError(f"cannot write to {out}: {error.strerror}") from error


def _move_into_place(tmp: Path, out: Path) -> None:
    """A new path: the whole folder renamed in. An existing empty folder: entry by entry, the marker
    last, none over anything that appeared there meanwhile."""
    if tmp.parent != out:
        try:
            os.replace(tmp, out)  # onto a folder someone filled meanwhile: ENOTEMPTY, nothing lost
        except OSError as error:
            if error.errno in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise UserError(f"--out {out} appeared while exporting: not replacing it") from error
            raise
        return
    names = sorted(entry.name for entry in tmp.iterdir() if entry.name != MARKER) + [MARKER]
    for name in names:
        if (out / name).exists() or (out / name).is_symlink():
            raise UserError(f"--out {out} got a {name} while exporting: not replacing it")
        os.replace(tmp / name, out / name)
