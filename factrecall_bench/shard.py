"""`--shard I/N`: N machines (or the N tasks of a plain job array) split a suite's runs among
themselves with no coordinator: each expands the same suite, orders its runs by config hash and
takes every N-th one from the I-th. The runs folder (shared, or copied together afterwards) then
holds every run once, and `check` judges the suite when all are there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from factrecall_bench.config import RunConfig, config_hash
from factrecall_bench.errors import UserError

SHARD_PATTERN = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


@dataclass(frozen=True)
class Shard:
    index: int
    """Which share, from 1."""
    count: int
    """Into how many shares the suite's runs are split."""

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise UserError(f"--shard {self}: expected I/N with 1 <= I <= N, e.g. 1/{max(2, self.count)}")

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def select(self, configs: Sequence[RunConfig]) -> list[RunConfig]:
        """This shard's runs, in the suite's order. Ordered by config hash and dealt round robin,
        the shards differ in size by at most one run, whatever the hashes."""
        by_hash = sorted(configs, key=config_hash)
        mine = {config.run_id for config in by_hash[self.index - 1::self.count]}
        return [config for config in configs if config.run_id in mine]


def parse_shard(text: str) -> Shard:
    """`I/N` (e.g. `2/4`) as a Shard; anything else is a UserError."""
    matched = SHARD_PATTERN.fullmatch(text)
    if matched is None:
        raise UserError(f"--shard {text!r}: expected I/N, e.g. 1/4 (the first of four shares)")
    return Shard(int(matched.group(1)), int(matched.group(2)))
