"""The README's "Compare your own recipe": its suite loads into the runs it describes, its
command runs (on a shrunken copy of the suite), and its quoted error is the one a typo gives."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from factrecall_bench.errors import UserError
from factrecall_bench.identity import reuse_identity
from factrecall_bench.suite import load_suite
from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _section() -> str:
    text = README.read_text("utf-8")
    start = text.index("## Compare your own recipe")
    return text[start:text.index("\n## ", start + 1)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), re.S)


def _recipe() -> dict:
    (block,) = _blocks("toml")
    return tomllib.loads(block)


def _recipe_suite(folder: Path, text: str | None = None):
    """The README's low2.toml (or `text`), loaded as `--suite low2.toml` loads it (its `extends`
    resolved)."""
    path = folder / "low2.toml"
    path.write_text(_blocks("toml")[0] if text is None else text)
    return load_suite(str(path))


def test_the_recipe_suite_expands_into_the_runs_it_describes(tmp_path):
    configs = _recipe_suite(tmp_path).runs
    assert sorted({(c.strategy, c.seed) for c in configs}) == [
        (strategy, seed) for strategy in ("mixed", "two-stage", "two-stage-low2")
        for seed in (0, 1, 2)]
    low2 = next(c for c in configs if c.strategy == "two-stage-low2")
    assert [(p.name, p.epochs, p.mix) for p in low2.phases] == [
        ("bio", {"bio": 16.0}, {}), ("qa", {"qa_train": 16.0}, {})]
    assert low2.phases[0].lr == 1e-3 and low2.phases[1].lr == pytest.approx(1e-4)


def test_the_recipe_trains_the_cpu_suites_data_model_and_settings(tmp_path):
    """The README says so: the same data, model and [train] settings as `--suite cpu`, so its
    mixed and two-stage runs are the CPU suite's (reused, not retrained)."""
    cpu = {c.strategy: c for c in load_suite("cpu").runs if c.seed == 0}
    recipe = {c.strategy: c for c in _recipe_suite(tmp_path).runs if c.seed == 0}
    for strategy in ("mixed", "two-stage"):
        for part in ("data", "model", "train", "eval", "trace", "phases", "identity"):
            assert getattr(recipe[strategy], part) == getattr(cpu[strategy], part), part
        assert reuse_identity(recipe[strategy]) == reuse_identity(cpu[strategy])


def test_the_quoted_typo_error_is_the_one_given(tmp_path):
    typo = _blocks("toml")[0].replace('lr = "0.1*stage2_lr"', 'lr = "0.1*stage_2_lr"')
    assert tomllib.loads(typo)["custom_strategies"]["two-stage-low2"]["phases"][1]["lr"] == (
        "0.1*stage_2_lr")
    quoted = re.search(r"`error: (strategy .*?) \.\.\.`", " ".join(_section().split()))
    assert quoted is not None
    with pytest.raises(UserError) as caught:
        _recipe_suite(tmp_path, typo)
    assert str(caught.value).startswith(quoted.group(1))


SHRUNK = ("data.n_people=20", "data.bio_variants=2", "data.templates_per_attribute=2",
          "model.n_layer=1", "model.d_model=32", "model.n_head=2", "model.d_ff=64",
          "train.bio_epochs=1", "train.qa_epochs=1", "train.batch_size=8", "seeds=[0]")
"""The README's suite at a size that trains in seconds (its own size takes ~15 minutes)."""


@pytest.mark.slow
def test_the_recipe_command_runs_and_prints_its_verdict(tmp_path):
    (block,) = _blocks("bash")
    (command,) = [line for line in block.splitlines() if line.strip()]
    assert command == "factrecall-bench run --suite low2.toml"
    (tmp_path / "low2.toml").write_text(_blocks("toml")[0])
    overrides = [arg for item in SHRUNK for arg in ("--set", item)]
    completed = run_cli(*command.split()[1:], "--runs-dir", str(tmp_path / "runs"), *overrides,
                        cwd=tmp_path, env={"PYTHONPATH": str(ROOT)})  # this checkout's code
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "reported (" in completed.stdout and "recalls unseen people better" in completed.stdout
    # Shrunk by --set, it is a variation: its report sits in its own folder, which stdout names.
    (written,) = [line.split(": ", 1)[1] for line in completed.stdout.splitlines()
                  if line.startswith("report: ")]
    report = (tmp_path / written).read_text() if not Path(written).is_absolute() else \
        Path(written).read_text()
    assert "two-stage-low2 / tiny-llama" in report
