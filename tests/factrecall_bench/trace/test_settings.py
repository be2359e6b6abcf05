"""The trace's settings as a suite gives them (`[trace]`): the choices and their checks, the
definitions a run judges claims under, and which training scores a recorder must keep. Expected
values are written from the README's and the docstrings' words, not read from the module."""

from __future__ import annotations

import dataclasses
from functools import cache

import pytest

from factrecall_bench.config import RunConfig
from factrecall_bench.errors import UserError
from factrecall_bench.trace.settings import (
    DEFINITION_NAMES,
    TraceDefinition,
    TraceSettings,
    records_during_training,
    trace_settings,
)
from tests.conftest import TESTS

EVERY_DEFINITION = [
    "training/update/global", "training/update/per_matrix",
    "training/grad/global", "training/grad/per_matrix",
    "training/grad_x_weight/global", "training/grad_x_weight/per_matrix",
    "probe/grad/global", "probe/grad/per_matrix",
    "probe/grad_x_weight/global", "probe/grad_x_weight/per_matrix",
]
"""Training mode scores update, grad and grad x weight; probe mode grad and grad x weight; each
ranked globally or per matrix: the paper's reading (training/update) first."""


def test_every_definition_is_offered_once_the_papers_first():
    assert list(DEFINITION_NAMES) == EVERY_DEFINITION
    assert TraceSettings(definitions=["all"]).definitions == tuple(EVERY_DEFINITION)
    assert TraceSettings(definitions=["probe/grad/global", "all"]).definitions == tuple(
        EVERY_DEFINITION)


def test_the_defaults_are_the_documented_ones():
    settings = TraceSettings()
    assert settings.to_dict() == {
        "mode": "probe", "score": "grad_x_weight", "aggregate": "summed", "ranking": "global",
        "top_k": [0.001, 0.01, 0.05], "probe_examples": 256, "bio_loss": "values",
        "ablation_random_draws": 3, "heatmap": False, "seed": 0, "definitions": []}
    assert settings.main_definition.name == "probe/grad_x_weight/global"


@pytest.mark.parametrize("name, allowed", [
    ("mode", ["probe", "training"]),
    ("score", ["grad", "grad_x_weight"]),  # "update" needs mode "training": tested below
    ("aggregate", ["summed", "per_example"]),
    ("ranking", ["global", "per_matrix"]),
    ("bio_loss", ["values", "all"]),
])
def test_each_choice_takes_its_listed_values_and_names_them_when_refused(name, allowed):
    for value in allowed:
        assert getattr(TraceSettings(**{name: value}), name) == value
    listed = ", ".join(allowed + (["update"] if name == "score" else []))
    with pytest.raises(ValueError) as refused:
        TraceSettings(**{name: "other"})
    assert str(refused.value) == f"trace.{name} must be one of {listed}; got 'other'"


def test_update_scores_exist_in_training_mode_only():
    assert TraceSettings(mode="training", score="update").score == "update"
    with pytest.raises(ValueError) as refused:
        TraceSettings(mode="probe", score="update")
    assert str(refused.value) == ("trace.score 'update' (the summed signed lr x gradient of "
                                  "training) needs trace.mode = 'training'")


def test_top_k_is_a_tuple_of_distinct_fractions_in_zero_to_one():
    settings = TraceSettings(top_k=[1, 0.5])
    assert settings.top_k == (1.0, 0.5) and all(type(k) is float for k in settings.top_k)
    assert settings.to_dict()["top_k"] == [1.0, 0.5]
    for bad in ([], [0.0], [1.5], [-0.1], [0.1, 0.0]):
        with pytest.raises(ValueError) as refused:
            TraceSettings(top_k=bad)
        assert str(refused.value) == (f"trace.top_k must be fractions in (0, 1]; got "
                                      f"{tuple(float(k) for k in bad)!r}")
    with pytest.raises(ValueError) as refused:
        TraceSettings(top_k=[0.1, 0.1])
    assert str(refused.value) == "trace.top_k has a repeated fraction: (0.1, 0.1)"


def test_counts_at_their_edges():
    assert TraceSettings(probe_examples=1).probe_examples == 1
    with pytest.raises(ValueError) as refused:
        TraceSettings(probe_examples=0)
    assert str(refused.value) == "trace.probe_examples must be >= 1; got 0"
    assert TraceSettings(ablation_random_draws=0).ablation_random_draws == 0
    with pytest.raises(ValueError) as refused:
        TraceSettings(ablation_random_draws=-1)
    assert str(refused.value) == "trace.ablation_random_draws must be >= 0; got -1"


def test_definitions_are_a_list_of_distinct_valid_names():
    chosen = ["probe/grad/per_matrix", "training/update/global"]
    assert TraceSettings(definitions=chosen).definitions == tuple(chosen)
    assert TraceSettings(definitions=tuple(chosen)).to_dict()["definitions"] == chosen
    for bad in ("all", "probe/grad/global", None):
        with pytest.raises(ValueError) as refused:
            TraceSettings(definitions=bad)
        assert str(refused.value) == f"trace.definitions must be a list of names; got {bad!r}"
    with pytest.raises(ValueError) as refused:
        TraceSettings(definitions=["probe/grad/global", "probe/grad/global"])
    assert str(refused.value) == ("trace.definitions has a repeated name: "
                                  "['probe/grad/global', 'probe/grad/global']")
    with pytest.raises(ValueError, match="'probe/grad' is not mode/score/ranking"):
        TraceSettings(definitions=["probe/grad"])


@pytest.mark.parametrize("name, message", [
    ("probe/grad", "trace.definitions: 'probe/grad' is not mode/score/ranking "
                   "(e.g. training/update/global), or 'all'"),
    ("a/b/c/d", "trace.definitions: 'a/b/c/d' is not mode/score/ranking "
                "(e.g. training/update/global), or 'all'"),
    (3, "trace.definitions: 3 is not mode/score/ranking (e.g. training/update/global), or 'all'"),
    ("test/grad/global", "trace.definitions: 'test/grad/global': mode must be one of probe, "
                         "training"),
    ("probe/norm/global", "trace.definitions: 'probe/norm/global': score must be one of grad, "
                          "grad_x_weight, update"),
    ("probe/grad/local", "trace.definitions: 'probe/grad/local': ranking must be one of global, "
                         "per_matrix"),
    ("probe/update/global", "trace.definitions: 'probe/update/global': score 'update' (the "
                            "summed signed lr x gradient of training) exists in mode 'training' "
                            "only"),
])
def test_a_bad_definition_name_says_what_is_wrong(name, message):
    with pytest.raises(ValueError) as refused:
        TraceDefinition.parse(name)
    assert str(refused.value) == message


def test_a_definition_reads_back_from_its_name():
    for name in EVERY_DEFINITION:
        definition = TraceDefinition.parse(name)
        mode, score, ranking = name.split("/")
        assert (definition.mode, definition.score, definition.ranking) == (mode, score, ranking)
        assert definition.name == name


def test_the_main_definition_comes_first_and_is_not_repeated():
    settings = TraceSettings(mode="training", score="update", ranking="per_matrix",
                             definitions=["probe/grad/global", "training/update/per_matrix",
                                          "training/grad/global"])
    assert [d.name for d in settings.all_definitions()] == [
        "training/update/per_matrix", "probe/grad/global", "training/grad/global"]


@pytest.mark.parametrize("main, further, needed", [
    ({}, [], ()),  # probe mode scores after training: nothing to record
    ({}, ["probe/grad/per_matrix"], ()),
    ({"mode": "training", "score": "grad"}, [], ("grad",)),
    ({"mode": "training", "score": "update"}, ["training/grad_x_weight/global",
                                               "probe/grad/global"], ("grad_x_weight", "update")),
    ({}, ["training/update/global", "training/grad/per_matrix", "training/update/per_matrix"],
     ("grad", "update")),
    ({}, ["all"], ("grad", "grad_x_weight", "update")),
])
def test_a_recorder_keeps_the_training_scores_of_the_training_definitions(main, further, needed):
    settings = TraceSettings(**main, definitions=further)
    assert settings.training_scores_needed() == needed


@cache
def micro_config() -> RunConfig:
    from factrecall_bench.suite import load_suite

    (config,) = load_suite(str(TESTS / "data" / "suites" / "micro.toml")).runs
    return config


def run_config(trace: dict, seed: int = 7, bio_loss: str = "values") -> RunConfig:
    """The micro suite's run with this `[trace]` table, run seed and BIO loss."""
    config = micro_config()
    return dataclasses.replace(config, suite="s", seed=seed, trace=trace,
                               train=dataclasses.replace(config.train, bio_loss=bio_loss))


def test_a_suites_trace_table_gives_the_settings_with_the_runs_seed_and_bio_loss():
    # `enabled` and `[trace.analyses]` are the table's but not the trace's settings.
    table = {"enabled": True, "mode": "training", "score": "update", "top_k": [0.5],
             "analyses": {"at_end": ["knockout"]}}
    settings = trace_settings(run_config(table, seed=7, bio_loss="all"))
    assert (settings.mode, settings.score, settings.top_k) == ("training", "update", (0.5,))
    assert (settings.seed, settings.bio_loss) == (7, "all")
    chosen = trace_settings(run_config({"seed": 3, "bio_loss": "values"}, seed=7, bio_loss="all"))
    assert (chosen.seed, chosen.bio_loss) == (3, "values")  # the table's own values win


def test_a_bad_trace_table_is_one_user_error_naming_the_suite():
    with pytest.raises(UserError) as refused:
        trace_settings(run_config({"enabled": True, "mode": "later"}))
    assert str(refused.value) == ("suite s: trace: trace.mode must be one of probe, training; "
                                  "got 'later'")
    with pytest.raises(UserError, match=r"^suite s: trace: .*'colour'"):
        trace_settings(run_config({"colour": "red"}))


@pytest.mark.parametrize("table, records", [
    ({}, False),  # no trace
    ({"mode": "training", "score": "update"}, False),  # configured but not enabled
    ({"enabled": False, "mode": "training", "score": "update"}, False),
    ({"enabled": True}, False),  # probe mode: scored after training
    ({"enabled": True, "definitions": ["probe/grad/per_matrix"]}, False),
    ({"enabled": True, "mode": "training", "score": "grad"}, True),
    ({"enabled": True, "definitions": ["training/update/global"]}, True),  # a further one
])
def test_a_run_records_during_training_when_an_enabled_trace_has_a_training_definition(
        table, records):
    assert records_during_training(run_config(table)) is records


@pytest.mark.parametrize("table, launched, refused", [
    ({"enabled": True, "mode": "training", "score": "update"}, True, True),
    ({"enabled": True, "mode": "training", "score": "update"}, False, False),  # one process
    ({"enabled": True}, True, False),  # probe mode traces under a launcher
    ({"enabled": False, "mode": "training", "score": "update"}, True, False),  # no trace
])
def test_training_mode_is_refused_under_a_launcher_only(monkeypatch, table, launched, refused):
    from factrecall_bench import distributed
    from factrecall_bench.trace.settings import refuse_training_mode_under_a_launcher

    monkeypatch.setattr(distributed, "is_distributed", lambda: launched)
    if not refused:
        refuse_training_mode_under_a_launcher(run_config(table))
        return
    with pytest.raises(UserError) as error:
        refuse_training_mode_under_a_launcher(run_config(table))
    assert str(error.value) == (
        "suite s: trace mode 'training' runs in one process only (it takes a backward pass per "
        "task, which DDP and FSDP do not allow): use mode 'probe' (and only probe definitions) "
        "or launch without accelerate/torchrun")
