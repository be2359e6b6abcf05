"""The `factrecall-bench` command: a thin Typer layer over the library.

Errors a user can cause print one line and exit 2 (`--debug` shows the traceback); `--json`
prints one JSON document to stdout while progress and messages go to stderr.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from factrecall_bench import distributed, exit_codes
from factrecall_bench.cli_exit import exit_code_of
from factrecall_bench.errors import UserError
from factrecall_bench.resources import accelerate_config, check_writable_baselines_dir, default_baselines_dir

# Plain help and one-line usage errors (rich boxes and `<bool>` metavars help no one in a log).
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, add_completion=True,
                  rich_markup_mode=None,
                  help="A test-first benchmark of fact recall in language models.")
data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                       help="Generate and inspect the bioS-style fact data.")
baseline_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None,
                           help="Write and inspect stored baselines.")
app.add_typer(data_app, name="data")
app.add_typer(baseline_app, name="baseline")

stderr = Console(stderr=True)
DEFAULT_RUNS = Path("runs")
# The checkout's baselines/ when run from a checkout, else the copy shipped in the wheel.
DEFAULT_BASELINES = default_baselines_dir()

def complete_suite(incomplete: str) -> list[str]:
    from factrecall_bench.suite import shipped_suites

    return [name for name in sorted(shipped_suites()) if name.startswith(incomplete)]


def complete_strategy(incomplete: str) -> list[str]:
    from factrecall_bench.strategies import STRATEGIES

    return [name for name in sorted(STRATEGIES) if name.startswith(incomplete)]


def _print_version(value: bool) -> None:
    if value:
        from factrecall_bench import __version__

        print(f"factrecall-bench {__version__}")
        raise typer.Exit()


@app.callback()
def common_options(
    version: Annotated[bool, typer.Option(
        "--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
    debug: Annotated[bool, typer.Option(
        "--debug", help="Show the traceback behind an error (accepted anywhere on the line).")] = False,
) -> None:
    """A test-first benchmark of fact recall in language models."""


SuiteName = Annotated[str, typer.Option("--suite", help="Suite name or .toml path.",
                                        autocompletion=complete_suite)]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where run folders are kept.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", metavar="TABLE.KEY=VALUE",
    help="Override a suite setting, e.g. --set train.stage2_lr=3e-4 (repeatable): a variation, "
         "reported under its own name and compared only with a baseline of its own settings.")]
VariationName = Annotated[str | None, typer.Option(
    "--name", metavar="NAME",
    help="With --set: the variation's name, the folder of its report.md and verdicts.json "
         "(default: the suite's name and the overrides, e.g. cpu+train.stage2_lr=3e-4).")]
InconclusiveClaimsOk = Annotated[bool, typer.Option(
    "--inconclusive-claims-ok",
    help="Exit 0, not 3, when the only undecided verdicts are claims (CI gates on regressions).")]


def print_json(payload: Any) -> None:
    """app's JSON printer, imported when used: importing app brings torch, which `--help` and
    bad flags should not wait for."""
    from factrecall_bench.app import print_json as print_document

    print_document(payload)


DATA_GENERATE_FLAGS = {"n_people": "--people", "train_fraction": "--train-fraction",
                       "bio_variants": "--variants", "templates_per_attribute": "--templates"}
"""DataSpec fields as `data generate` spells them, so an error names the flag the user typed."""


@contextmanager
def errors_in_flag_terms(flags: dict[str, str]) -> Iterator[None]:
    try:
        yield
    except UserError as error:
        message = str(error)
        for field_name, flag in flags.items():
            message = re.sub(rf"\b{field_name}\b", flag, message)
        raise UserError(message) from error


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the dataset into.")],
    people: Annotated[int, typer.Option(help="Number of people.")] = 200,
    seed: Annotated[int, typer.Option(min=0, help="Seed of everything in the data.")] = 0,
    train_fraction: Annotated[float, typer.Option(help="Share of people in P_train.")] = 0.5,
    variants: Annotated[int, typer.Option(help="multiM: biographies per person.")] = 1,
    permute: Annotated[bool, typer.Option(help="Shuffle sentence order.")] = False,
    fullname: Annotated[bool, typer.Option(help="Full name instead of pronouns.")] = False,
    templates: Annotated[int, typer.Option(help="Templates per attribute (0 = all).")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """Generate a dataset and save it (loadable with datasets.load_from_disk(OUT/dataset))."""
    from factrecall_bench.data.commands import generate_data

    with errors_in_flag_terms(DATA_GENERATE_FLAGS):
        summary = generate_data(out, people, seed, train_fraction, variants, permute, fullname,
                                templates, show_progress=not as_json)
    if as_json:
        print_json(summary)
    else:
        stderr.print(f"wrote {summary['counts']} to {out} (sha256 {summary['sha256'][:12]})")


def render_data_description(description: dict[str, Any]) -> Table:
    table = Table(title=f"{description['folder']}: " + ", ".join(
        f"{split} {count}" for split, count in description["counts"].items()))
    for column in ("attribute", "distinct values", "most common", "its share"):
        table.add_column(column)
    for attribute, spread in description["attribute_spread"].items():
        table.add_row(attribute, str(spread["distinct"]), spread["most_common"],
                      f"{spread['most_common_share']:.1%}")
    for split, rows in description["samples"].items():
        for row in rows:
            text = row.get("text") or f"{row['prompt']} {row['answer']}"
            table.add_row(split, "", text[:100], "")
    return table


@data_app.command("show")
def data_show(
    folder: Annotated[Path, typer.Argument(help="A folder written by `data generate`.")],
    samples: Annotated[int, typer.Option(help="How many samples of each split.")] = 2,
    as_json: JsonFlag = False,
) -> None:
    """Counts, a few samples and the spread of each attribute's values."""
    from factrecall_bench.data.commands import describe_data

    description = describe_data(folder, samples)
    if as_json:
        print_json(description)
    else:
        Console().print(render_data_description(description))


@app.command("run")
def run(
    suite: Annotated[list[str] | None, typer.Option("--suite", help="Suite name or .toml path.",
                                                    autocompletion=complete_suite)] = None,
    run_all: Annotated[bool, typer.Option("--all", help="Every CI suite, then verdicts.")] = False,
    strategy: Annotated[str | None, typer.Option(help="One run: this strategy.",
                                                 autocompletion=complete_strategy)] = None,
    model: Annotated[str, typer.Option(help="One run: model preset or hf:<id>.")] = "tiny-llama",
    seed: Annotated[int, typer.Option(min=0, help="One run: the seed.")] = 0,
    jobs: Annotated[int | None, typer.Option(min=1, max=64,
                                             help="Runs side by side (default: the suite's).")] = None,
    runs_dir: RunsDir = DEFAULT_RUNS,
    baselines_dir: Annotated[Path, typer.Option(help="Where baselines are.")] = DEFAULT_BASELINES,
    check: Annotated[bool, typer.Option(help="Judge claims and baselines after the runs.")] = True,
    junit_xml: Annotated[Path | None, typer.Option(help="Also write a JUnit XML report.")] = None,
    inconclusive_claims_ok: InconclusiveClaimsOk = False,
    overrides: Overrides = None,
    variation_name: VariationName = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List the runs that would train and those reused; train nothing.")
    ] = False,
    log_with: Annotated[str | None, typer.Option(
        "--log-with", metavar="TRACKERS",
        help="Also send each run's curves and metrics to accelerate trackers, e.g. tensorboard "
             "or wandb,mlflow (events.jsonl stays the record).")] = None,
    log_samples: Annotated[bool, typer.Option(
        "--log-samples", help="Write each run's answer to every ID and OOD question "
                              "(samples.jsonl) and a breakdown of wrong answers.")] = False,
    as_json: JsonFlag = False,
    executor: Annotated[str | None, typer.Option(
        "--executor", metavar="slurm|local",
        help="Each run a submitit job: slurm (a job array; the runs folder must be shared) or "
             "local (submitit's local executor). Default: runs in worker processes here.")] = None,
    slurm_partition: Annotated[str | None, typer.Option(
        "--slurm-partition", help="With --executor slurm: the partition.")] = None,
    gpus_per_run: Annotated[int | None, typer.Option(
        "--gpus-per-run", help="With --executor: GPUs per job, one task each (DDP) "
                               "(default 1 on Slurm, 0 locally).")] = None,
    cpus_per_run: Annotated[int | None, typer.Option(
        "--cpus-per-run", min=1, help="With --executor: CPU cores per job.")] = None,
    time_min: Annotated[int | None, typer.Option(
        "--time", metavar="MINUTES",
        help="With --executor: time limit per job (default 240); longer runs are requeued "
             "and resume.")] = None,
    slurm_setting: Annotated[list[str] | None, typer.Option(
        "--slurm-setting", metavar="KEY=VALUE",
        help="With --executor slurm: another sbatch option, e.g. account=myproj "
             "(repeatable).")] = None,
    wait: Annotated[bool, typer.Option(
        help="With --executor: wait for the jobs and judge (--no-wait: exit after submitting; "
             "`check` judges later).")] = True,
    shard: Annotated[str | None, typer.Option(
        "--shard", metavar="I/N",
        help="Train only the I-th of N shares of each suite's runs (split by config hash), so N "
             "machines split a suite with no coordinator; judged once all are there.")] = None,
    lock_method: Annotated[str | None, typer.Option(
        "--lock-method", metavar="flock|owner-file",
        help="How a run is locked (default flock, or FACTRECALL_LOCK): owner-file where the "
             "runs folder's filesystem does not make flock cluster-wide (NFS with nolock).")] = None,
) -> None:
    """Train and evaluate: one run, one or more suites, or every CI suite (`--all`).

    Under `accelerate launch` or `torchrun`, several processes train each run together (DDP).
    With --executor, each run is a cluster job (submitit).
    """
    from factrecall_bench.app import RunRequest, run_command
    from factrecall_bench.cluster import settings_from_flags
    from factrecall_bench.config import RunOptions

    if lock_method is not None:
        from factrecall_bench.locks import use_lock_method

        use_lock_method(lock_method)  # inherited by the workers and the jobs
    cluster = settings_from_flags(executor, slurm_partition, gpus_per_run, cpus_per_run, time_min,
                                  slurm_setting or [], wait, jobs)
    from factrecall_bench.shard import parse_shard

    request = RunRequest(cluster=cluster, shard=parse_shard(shard) if shard else None,
        suites=suite or [], run_all=run_all, strategy=strategy, model=model, seed=seed,
        overrides=tuple(overrides or ()), variation_name=variation_name, dry_run=dry_run,
        jobs=jobs, runs_dir=runs_dir,
        baselines_dir=baselines_dir, check=check, junit_xml=junit_xml, as_json=as_json,
        inconclusive_claims_ok=inconclusive_claims_ok,
        options=RunOptions(log_with=log_with, log_samples=log_samples))
    raise typer.Exit(_until_interrupted(lambda: run_command(request)))


def _until_interrupted(command: Callable[[], int]) -> int:
    """A suite command's exit code; on Ctrl-C or SIGTERM (the same path: KeyboardInterrupt)
    every worker is stopped, what finished is kept, one line says so, and 130."""
    import signal
    import threading

    def terminated(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main one
        return command()
    previous = {signal.SIGINT: signal.getsignal(signal.SIGINT),
                signal.SIGTERM: signal.signal(signal.SIGTERM, terminated)}
    try:
        return command()
    except KeyboardInterrupt:
        for sig in previous:  # a second Ctrl-C cannot cut this short
            signal.signal(sig, lambda signum, frame: None)  # not SIG_IGN: see orchestrate._ignore
        stderr.print("interrupted: finished runs are kept; rerun to resume", markup=False)
        return exit_codes.INTERRUPTED
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@app.command("check")
def check(
    suite: SuiteName = "cpu",
    runs_dir: RunsDir = DEFAULT_RUNS,
    baselines_dir: Annotated[Path, typer.Option(help="Where baselines are.")] = DEFAULT_BASELINES,
    run_missing: Annotated[bool, typer.Option(
        "--run-missing", help="Train the runs that are not finished first (as `run` does).")] = False,
    inconclusive_claims_ok: InconclusiveClaimsOk = False,
    overrides: Overrides = None,
    variation_name: VariationName = None,
    as_json: JsonFlag = False,
) -> None:
    """Judge the suite's (or a --set variation's) finished runs: its claims and the baseline
    comparison (trains nothing unless --run-missing)."""
    from factrecall_bench.app import check_command

    raise typer.Exit(_until_interrupted(lambda: check_command(
        suite, runs_dir, baselines_dir, as_json, run_missing=run_missing,
        inconclusive_claims_ok=inconclusive_claims_ok, overrides=tuple(overrides or ()),
        variation_name=variation_name)))


@baseline_app.command("update")
def baseline_update(
    suite: SuiteName,
    runs_dir: RunsDir = DEFAULT_RUNS,
    baselines_dir: Annotated[Path, typer.Option(help="Where baselines are.")] = DEFAULT_BASELINES,
) -> None:
    """Run the suite (finished runs are reused) and store its results as the baseline."""
    check_writable_baselines_dir(baselines_dir)  # before the slow imports
    from factrecall_bench.app import baseline_update_command

    raise typer.Exit(_until_interrupted(
        lambda: baseline_update_command(suite, runs_dir, baselines_dir)))


@baseline_app.command("inspect")
def baseline_inspect(
    baseline: Annotated[str, typer.Argument(help="A baseline file (.json), or a suite name: "
                                                 "BASELINES_DIR/NAME.json.")],
    baselines_dir: Annotated[Path, typer.Option(help="Where baselines are.")] = DEFAULT_BASELINES,
    as_json: JsonFlag = False,
) -> None:
    """What a stored baseline holds: suite, hardware class, git revision, versions, and each
    run's strategy, model, seed and metrics (validated as `check` reads it)."""
    from factrecall_bench.baseline_inspect import inspection_text

    typer.echo(inspection_text(baseline, baselines_dir, as_json))


@app.command("trace")
def trace(
    run_folder: Annotated[Path, typer.Argument(help="A finished run's folder.")],
    as_json: JsonFlag = False,
) -> None:
    """Recompute the cross-task gradient trace of a finished run."""
    from factrecall_bench.app import trace_command

    summary = trace_command(run_folder)
    if as_json:
        print_json(summary)
        return
    from factrecall_bench.report import trace_text
    from factrecall_bench.runfolder import RunFolder

    folder = RunFolder(run_folder)
    print("\n".join(trace_text(summary)))
    print(f"written: {folder.trace}, and the trace in {folder.result}")


@app.command("analyze")
def analyze(
    run_folder: Annotated[Path, typer.Argument(help="A finished run's folder.")],
    what: Annotated[str, typer.Option(help="Comma-separated: grafting, representation, reads.")
                    ] = "grafting,representation,reads",
    settings: Annotated[list[str] | None, typer.Option("--set", help="ANALYSIS.SETTING=VALUE (a "
                        "JSON value), repeatable; docs/analyses.md lists them.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run the mechanism analyses on a finished run; results go to its analyses.json."""
    from factrecall_bench.analyses.run import analyze_command

    analyze_command(run_folder, what, settings or [], as_json)


@app.command("export")
def export(
    run_folder: Annotated[Path, typer.Argument(help="A finished run's folder.")],
    out: Annotated[Path, typer.Option("--out", help="A new or empty folder to write into.")],
    as_json: JsonFlag = False,
) -> None:
    """Write a finished run's trained model and tokenizer with save_pretrained (they load with
    AutoModelForCausalLM / AutoTokenizer.from_pretrained), with export.json and a README.md."""
    from factrecall_bench.export import export_run

    record = export_run(run_folder, out)
    if as_json:
        print_json(record)
    else:
        ood = record["metrics"].get("ood_exact_match", {}).get("value", float("nan"))
        stderr.print(f"wrote {out}: {record['run_id']} at step {record['step']} "
                     f"(OOD exact match {ood:.3f})", markup=False, highlight=False, soft_wrap=True)


@app.command("accelerate-config")
def accelerate_config_path(
    name: Annotated[str, typer.Argument(help="ddp or fsdp2.")],
) -> None:
    """Print the path of a shipped accelerate config, for `accelerate launch --config_file`."""
    print(accelerate_config(name))


@app.command("tui")
def tui(
    runs_dir: Annotated[Path, typer.Argument(help="Runs folder to watch.")] = DEFAULT_RUNS,
    suite: Annotated[str | None, typer.Option("--suite", help="Start this suite and watch it.")] = None,
) -> None:
    """Watch runs live in the terminal (closing it never stops a run)."""
    from factrecall_bench.tui.app import run_app

    command, suite_name = None, None
    if suite is None:
        check_runs_folder_to_watch(runs_dir)
    else:
        from factrecall_bench.suite import load_suite

        suite_name = load_suite(suite).name
        command = [sys.executable, "-m", "factrecall_bench", "run", "--suite", suite,
                   "--runs-dir", str(runs_dir)]
    run_app(runs_dir, suite=suite_name, launch_command=command, suite_source=suite)


def check_runs_folder_to_watch(runs_dir: Path) -> None:
    """Without --suite nothing will create the folder: a mistyped path would show an empty app."""
    if runs_dir.is_dir():
        return
    what = "is not a folder" if runs_dir.exists() else "does not exist"
    raise UserError(f"runs folder {runs_dir} {what}: name the folder `run --runs-dir` wrote, or "
                    "start a suite with `tui --suite S`")


@app.command("plan")
def plan(
    suite: SuiteName = "paper",
    gpus: Annotated[int, typer.Option(help="GPUs per run.")] = 1,
    gpu_memory: Annotated[float, typer.Option("--gpu-memory", help="GiB of memory per GPU.")] = 80.0,
    mfu: Annotated[float | None, typer.Option(
        help="Model FLOP utilization assumed for the time (default 0.35).")] = None,
    measured: Annotated[Path | None, typer.Option(
        "--measured", help="Take the MFU a benchmark measured (benchmarks/gpu_check.py --mfu-1b "
                           "writes it, e.g. benchmarks/results/gpu_check_mixed_mfu1b.json).")] = None,
    nodes: Annotated[int | None, typer.Option(
        help="Also plan the suite on this many nodes: GPU-hours and wall time.")] = None,
    gpus_per_node: Annotated[int, typer.Option("--gpus-per-node", help="GPUs per node.")] = 8,
    as_json: JsonFlag = False,
) -> None:
    """Parameters, memory per GPU (DDP / FSDP2, with and without checkpointing), time per run;
    with --nodes, the suite's GPU-hours and wall time on a cluster."""
    from factrecall_bench.plan import render_plan
    from factrecall_bench.plan_cluster import plan_on_cluster
    from factrecall_bench.suite import load_suite

    result, cluster_line = plan_on_cluster(load_suite(suite), gpus, gpu_memory, mfu, measured,
                                           nodes, gpus_per_node)
    if as_json:
        print_json(result)
        return
    Console().print(render_plan(result))
    if cluster_line:
        print(cluster_line)


suites_app = typer.Typer(rich_markup_mode=None, help="List the shipped suites, or show one.")
app.add_typer(suites_app, name="suites")


@suites_app.callback(invoke_without_command=True)
def suites(context: typer.Context, as_json: JsonFlag = False) -> None:
    """List the shipped suites (`suites show NAME` prints one, to copy and edit)."""
    if context.invoked_subcommand is not None:
        return
    from factrecall_bench.app import list_suites

    listing = list_suites()
    if as_json:
        print_json(listing)
    else:
        for entry in listing:
            ci = "ci " if entry["ci"] else "   "
            Console().print(f"{ci}{entry['name']:16s} {entry['runs']:3d} runs  {entry['description']}")


@suites_app.command("show")
def suites_show(
    name: Annotated[str, typer.Argument(help="A shipped suite's name.", autocompletion=complete_suite)],
) -> None:
    """Print a shipped suite's TOML, e.g. `factrecall-bench suites show cpu > my.toml`."""
    from factrecall_bench.suite import find_suite, shipped_suites

    if name not in shipped_suites():
        raise UserError(f"unknown suite {name!r} (shipped: {', '.join(sorted(shipped_suites()))})")
    sys.stdout.write(find_suite(name).read_text("utf-8"))


def main() -> None:
    """Entry point: every way out of a command ends in one documented exit code (exit_codes.py).

    Bad input (a usage error, a `UserError`, a full or read-only disk) is one line and exit 2; an
    unexpected exception is a bug: one line, exit 5, and `--debug` shows its traceback.
    """
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    code = exit_code_of(app, debug)
    if distributed.is_distributed():
        distributed.leave(code, command_completed=code in exit_codes.COMPLETED)
    sys.exit(code)
