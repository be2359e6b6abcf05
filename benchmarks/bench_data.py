"""Data generation and saving of the multi5 + permute corpus at N = 200, 1k, 5k and 100k people,
timed separately; 100k against a 30 s target, and saving against one plain `json.dumps` of the
same rows. Writes benchmarks/results/data.json.

    python benchmarks/bench_data.py [--smoke] [--sizes 200,1000,5000,100000]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from factrecall_bench.config import DataSpec  # noqa: E402
from factrecall_bench.data.dataset import SPLITS, corpus_to_dataset, save_dataset  # noqa: E402
from factrecall_bench.data.generate import build_corpus  # noqa: E402
from factrecall_bench.data.pools import load_pools  # noqa: E402

TARGET_PEOPLE, TARGET_S = 100_000, 30.0


def time_size(n_people: int, workdir: Path) -> dict[str, Any]:
    """Corpus, dataset, save and the json.dumps alternative of one size, in seconds."""
    spec = DataSpec(n_people=n_people, bio_variants=5, permute=True)
    pools_s, pools = common.seconds(load_pools)
    corpus_s, corpus = common.seconds(lambda: build_corpus(spec, pools))
    to_dataset_s, dataset = common.seconds(lambda: corpus_to_dataset(corpus))
    out_dir = workdir / f"n{n_people}"
    save_s, _ = common.seconds(lambda: save_dataset(dataset, spec, out_dir))
    saved_bytes = sum(path.stat().st_size for path in out_dir.rglob("*") if path.is_file())
    shutil.rmtree(out_dir)
    rows = {split: dataset[split].to_list() for split in SPLITS}
    dumps_s, text = common.seconds(lambda: json.dumps(rows))
    return {
        "n_people": n_people, "rows": {split: len(dataset[split]) for split in SPLITS},
        "seconds": {"load_pools": pools_s, "build_corpus": corpus_s, "to_dataset": to_dataset_s,
                    "generate": pools_s + corpus_s + to_dataset_s, "save": save_s,
                    "generate_and_save": pools_s + corpus_s + to_dataset_s + save_s,
                    "json_dumps": dumps_s},
        "save_over_json_dumps": save_s / dumps_s,
        "bytes": {"saved": saved_bytes, "json": len(text)},
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = common.parse_args(__doc__.splitlines()[0], argv, add_options)
    sizes = [20, 40] if args.smoke else [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        table = [time_size(n_people, Path(workdir)) for n_people in sizes]
    at_target = next((row for row in table if row["n_people"] == TARGET_PEOPLE), None)
    total = at_target["seconds"]["generate_and_save"] if at_target else None
    result = {
        "settings": {"spec": "DataSpec(n_people=N, bio_variants=5, permute=True)", "sizes": sizes,
                     "smoke": args.smoke},
        "alternative": "json.dumps of the same rows (list of dicts per split), in memory only",
        "target": {"n_people": TARGET_PEOPLE, "generate_and_save_s_at_most": TARGET_S,
                   "measured_s": total, "met": None if total is None else total <= TARGET_S},
        "table": table,
    }
    path = common.write_result("data", result, args.out_dir)
    print(summary(table, result["target"], path))
    return result


def summary(table: list[dict[str, Any]], target: dict[str, Any], path: Path) -> str:
    lines = ["data: N  generate_s  save_s  json_dumps_s"]
    for row in table:
        s = row["seconds"]
        lines.append(f"  {row['n_people']:>7}  {s['generate']:8.2f}  {s['save']:6.2f}  "
                     f"{s['json_dumps']:8.2f}")
    measured = target["measured_s"]
    verdict = ("not measured" if measured is None
               else f"{'met' if target['met'] else 'NOT met'} ({measured:.1f} s)")
    lines.append(f"  target: {TARGET_PEOPLE} people generated + saved in {TARGET_S:.0f} s: {verdict}"
                 f"\n  -> {path}")
    return "\n".join(lines)


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="200,1000,5000,100000", help="people, comma-separated")


if __name__ == "__main__":
    main()
