"""The data use cases the CLI calls: generate a dataset and save it, describe a saved one."""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from pathlib import Path
from typing import Any

from factrecall_bench import distributed
from factrecall_bench.config import DataSpec
from factrecall_bench.errors import UserError


def generate_data(out: Path, people: int, seed: int, train_fraction: float, variants: int,
                  permute: bool, fullname: bool, templates: int, show_progress: bool
                  ) -> dict[str, Any]:
    from factrecall_bench.data.dataset import generate_dataset, save_dataset
    from factrecall_bench.data.generate import check_spec_fits
    from factrecall_bench.data.pools import load_pools

    if distributed.is_distributed():
        raise UserError("data generate runs in one process: run it without a launcher")
    spec = DataSpec(n_people=people, seed=seed, train_fraction=train_fraction,
                    bio_variants=variants, permute=permute, fullname=fullname,
                    templates_per_attribute=templates)
    check_spec_fits(spec, load_pools())
    _check_writable(out)
    with PeopleProgress(show_progress and people >= 20_000) as progress:
        dataset = generate_dataset(spec, progress)
    save_dataset(dataset, spec, out)
    return {"out": str(out), "spec": dataclasses.asdict(spec), "sha256": _digest(out),
            "counts": {split: len(rows) for split, rows in dataset.items()}}


def _check_writable(out: Path) -> None:
    """Before any work: `out` must be a place save_dataset may write (new, empty, or ours)."""
    from factrecall_bench.data.dataset import check_output_folder

    check_output_folder(out)
    # An existing folder is refilled in place; a new one is made in its nearest existing parent.
    target = out.resolve()
    while not target.exists():
        target = target.parent
    if not target.is_dir():
        raise UserError(f"output folder {out} would be inside {target}, which is a file")
    if not os.access(target, os.W_OK):
        raise UserError(f"output folder {out} is not writable")


def _digest(folder: Path) -> str:
    import json

    return json.loads((folder / "digest.json").read_text("utf-8"))["sha256"]


class PeopleProgress:
    """A rich progress bar over people generated (stderr), or nothing."""

    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __enter__(self) -> Any:
        if not self.enabled:
            return None
        from rich.console import Console
        from rich.progress import Progress

        self._progress = Progress(console=Console(stderr=True))
        self._progress.start()
        task = self._progress.add_task("people", total=None)
        return lambda done, total: self._progress.update(task, completed=done, total=total)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()


def describe_data(folder: Path, samples: int) -> dict[str, Any]:
    from factrecall_bench.data.dataset import load_saved_dataset
    from factrecall_bench.data.pools import ATTRIBUTES

    if not (folder / "dataset").is_dir():
        raise UserError(f"{folder} holds no dataset (expected {folder / 'dataset'})")
    dataset = load_saved_dataset(folder)
    people = dataset["people"]
    spread = {attribute: _spread(list(people[attribute])) for attribute in ATTRIBUTES}
    return {"folder": str(folder), "counts": {split: len(rows) for split, rows in dataset.items()},
            "samples": {split: [dataset[split][i] for i in range(min(samples, len(dataset[split])))]
                        for split in ("bio", "qa_train", "qa_test")},
            "attribute_spread": spread}


def _spread(values: list[str]) -> dict[str, Any]:
    counts = Counter(values)
    top_value, top_count = counts.most_common(1)[0]
    return {"distinct": len(counts), "most_common": top_value,
            "most_common_share": round(top_count / len(values), 4)}
