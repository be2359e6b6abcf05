"""`factrecall-bench analyze RUN`: the mechanism analyses on a finished run, from its final
checkpoint, the weights before fact training and its data (loaded as `trace RUN` loads them),
written to the run folder's analyses.json.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from factrecall_bench.analyses.grafting import (
    GraftingProblem,
    grafting_analysis,
    top_delta_mask,
    trainable_names,
)
from factrecall_bench.analyses.mask_learning import learn_mask
from factrecall_bench.analyses.reads import (
    ReadItem,
    bio_character_groups,
    qa_character_groups,
    reads_analysis,
    token_groups,
)
from factrecall_bench.analyses.representation import (
    person_of,
    representation_analysis,
)
from factrecall_bench.analyses.settings import (  # noqa: F401  (re-exported: analyze's names)
    ANALYSES,
    SETTINGS_CLASSES,
    GraftingSettings,
    ReadsSettings,
    RepresentationSettings,
    settings_for,
)
from factrecall_bench.batching import collate
from factrecall_bench.checkpoints import Checkpoint, latest_checkpoint
from factrecall_bench.config import RunConfig
from factrecall_bench.data.dataset import ensure_dataset, load_saved_dataset
from factrecall_bench.data.examples import QAItem
from factrecall_bench.data.facts import FactData, load_fact_data
from factrecall_bench.data.pools import ATTRIBUTES, QA_FORMS
from factrecall_bench.errors import UserError
from factrecall_bench.evaluate import qa_scores
from factrecall_bench.models import build_model
from factrecall_bench.runfolder import ANALYSES_SCHEMA_VERSION, RunFolder


@dataclass
class LoadedRun:
    """A finished run, ready to analyse: the model holds the trained weights."""

    folder: Path
    config: RunConfig
    result: dict[str, Any]
    data: FactData
    model: nn.Module
    initial_state: dict[str, Tensor]
    checkpoint: Checkpoint


def parse_what(text: str) -> tuple[str, ...]:
    """"grafting,reads" -> ("grafting", "reads"); an unknown or empty name is a UserError."""
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in ANALYSES]
    if unknown or not names:
        raise UserError(f"unknown analysis {', '.join(unknown) or repr(text)} "
                        f"(known: {', '.join(ANALYSES)})")
    return names


def parse_overrides(pairs: Sequence[str]) -> dict[str, dict[str, Any]]:
    """["grafting.share=0.8", ...] -> {"grafting": {"share": 0.8}}; values are JSON where they
    parse as JSON (numbers, true, lists), else strings."""
    overrides: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        analysis, dot, field = key.strip().partition(".")
        if not sep or not dot or analysis not in ANALYSES:
            raise UserError(f"--set {pair!r}: expected ANALYSIS.SETTING=VALUE with ANALYSIS one of "
                            f"{', '.join(ANALYSES)}")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        overrides.setdefault(analysis, {})[field] = value
    return overrides


def load_run(run_folder: Path) -> LoadedRun:
    """The run's config, result, data, trained model and initial weights, as retrace loads them."""
    if not run_folder.is_dir():
        raise UserError(f"{run_folder}: no such run folder")
    result = RunFolder(run_folder).read_result()
    if result is None:
        raise UserError(f"{run_folder} holds no finished run (no valid {RunFolder.RESULT})")
    config = RunFolder(run_folder).read_run_config()
    checkpoint = latest_checkpoint(RunFolder(run_folder).trained_checkpoints())
    if checkpoint is None:
        raise UserError(f"{run_folder} has no valid checkpoint to analyse")
    data = load_fact_data(config.data, config.model, config.eval,
                          run_folder.parent.parent / "data",
                          values_only_bio_loss=config.train.bio_loss == "values")
    model = build_model(config.model, data.tokenizer, config.seed)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    checkpoint.load_model(model)
    model.eval()
    return LoadedRun(run_folder, config, dict(result), data, model, initial_state, checkpoint)


def shared_sets_of(run: LoadedRun, names: list[str]) -> dict[str, Any]:
    """The trace's shared sets (BIO top-k & QA top-k) recomputed from the checkpoint with the run's
    trace settings, as flat masks over `names`, per top-k fraction; none when the run has no trace."""
    from factrecall_bench.trace.hook import probe_batches, trace_settings
    from factrecall_bench.trace.scores import TrainingTraceRecorder, probe_scores
    from factrecall_bench.trace.selection import intersect, top_k_masks

    if not run.result.get("trace"):
        return {"source": "none: the run has no trace", "masks": {}, "counts": {}}
    settings = trace_settings(dataclasses.replace(run.config, trace=dict(run.config.trace)))
    if settings.mode == "training":
        recorder = TrainingTraceRecorder(run.model, settings)
        run.checkpoint.load_recorder(recorder)
        scores = recorder.scores()
    else:
        scores = probe_scores(run.model, probe_batches(run.data, settings), settings)
    run.model.zero_grad(set_to_none=True)
    masks, counts = {}, {}
    stored = run.result["trace"].get("per_k", {})
    for fraction in settings.top_k:
        key = f"{fraction:g}"
        shared = intersect(top_k_masks(scores["bio"], fraction, settings.ranking),
                           top_k_masks(scores["qa"], fraction, settings.ranking))
        masks[key] = torch.cat([shared[name].flatten().cpu() for name in names])
        counts[key] = {"recomputed": int(masks[key].sum()),
                       "stored": stored.get(key, {}).get("shared", {}).get("count")}
    return {"source": f"recomputed from the checkpoint (trace mode {settings.mode})",
            "masks": masks, "counts": counts}


def recall_evaluator(data: FactData, max_questions: int, batch_size: int):
    """ID and OOD exact match on the first max_questions of each set (0: all)."""
    id_questions = data.id_questions[:max_questions or None]
    ood_questions = data.ood_questions[:max_questions or None]

    def evaluate(model: nn.Module) -> dict[str, float]:
        return {"id_exact_match": _exact_match(model, id_questions, data.pad_id, batch_size),
                "ood_exact_match": _exact_match(model, ood_questions, data.pad_id, batch_size)}
    return evaluate


def _exact_match(model: nn.Module, questions: list[QAItem], pad_id: int, batch_size: int
                 ) -> float:
    return float(np.mean(qa_scores(model, questions, pad_id, batch_size).exact_match)) \
        if questions else 0.0


def mask_training_batches(data: FactData, settings: GraftingSettings
                          ) -> tuple[list[dict[str, Tensor]], bool]:
    """Seeded BIO and QA training examples for the learned mask, half each, the QA ones drawn
    from questions outside the evaluated ID set where there are any; and whether they were."""
    evaluated = len(data.id_questions[:settings.max_questions or None])
    qa = data.examples["qa_train"]
    held_out = len(qa) > evaluated
    qa_pool = qa[evaluated:] if held_out else qa
    rng = np.random.default_rng([settings.seed, 4])
    n_qa = min(len(qa_pool), settings.mask_examples // 2)
    n_bio = min(len(data.examples["bio"]), settings.mask_examples - n_qa)
    picked = [qa_pool[i] for i in rng.choice(len(qa_pool), n_qa, replace=False)] + \
        [data.examples["bio"][i] for i in rng.choice(len(data.examples["bio"]), n_bio,
                                                      replace=False)]
    order = rng.permutation(len(picked))
    picked = [picked[i] for i in order]
    size = settings.mask_batch_size
    batches = [collate(picked[i:i + size], data.pad_id) for i in range(0, len(picked), size)]
    return [{k: b[k] for k in ("input_ids", "attention_mask", "labels")} for b in batches], held_out


def run_grafting(run: LoadedRun, settings: GraftingSettings) -> dict[str, Any]:
    names = trainable_names(run.model)
    shared = shared_sets_of(run, names)
    finetuned = {name: p.detach().clone() for name, p in run.model.named_parameters()}
    problem = GraftingProblem(run.model, run.initial_state, finetuned,
                              recall_evaluator(run.data, settings.max_questions,
                                               run.config.eval.batch_size), names)
    batches, held_out = mask_training_batches(run.data, settings)
    delta = torch.cat([(finetuned[n] - run.initial_state[n]).flatten().float() for n in names])
    makers = {"top_delta": lambda k: top_delta_mask(delta, k),
              "learned": lambda k: learn_mask(run.model, run.initial_state, delta, names,
                                              batches, k, settings)}
    result = grafting_analysis(problem, {m: makers[m] for m in settings.methods},
                               shared["masks"], settings)
    return {**result, "mask_examples_held_out": held_out,
            "shared": {"source": shared["source"], "counts": shared["counts"]}}


def run_representation(run: LoadedRun, settings: RepresentationSettings) -> dict[str, Any]:
    groups = {"p_train": (run.data.bio_train_people, run.data.id_questions),
              "p_test": (run.data.bio_test_people, run.data.ood_questions)}
    return representation_analysis(run.model, groups, run.data.pad_id, settings)


def _prefix_length(run: LoadedRun) -> int:
    return 0 if run.data.tokenizer.bos_token_id is None else 1


def _tokens_with_offsets(run: LoadedRun, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoded = run.data.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(encoded["input_ids"]), [tuple(o) for o in encoded["offset_mapping"]]


def bio_read_items(run: LoadedRun, settings: ReadsSettings) -> list[ReadItem]:
    """Every value of every person's first biography, with its context's token groups."""
    dataset = load_saved_dataset(ensure_dataset(run.config.data,
                                                run.folder.parent.parent / "data"))
    names = dataset["people"][:]["full_name"]
    rows = dataset["bio"][:]
    shift = _prefix_length(run)
    items = []
    for index, bio in enumerate(run.data.bio_all):
        if rows["variant"][index] != 0:
            continue
        text, name = rows["text"][index], names[bio.person_id]
        ids, offsets = _tokens_with_offsets(run, f" {text}")
        if ids != bio.input_ids[shift:-1]:
            raise ValueError(f"biography {index} does not tokenize as in training")
        # offsets are into " " + text: shift the character spans by the leading space
        ends = rows["value_ends"][index]
        for attribute, start, end in zip(ATTRIBUTES, rows["value_starts"][index], ends,
                                         strict=True):
            subject, relation = bio_character_groups(text, name, (start, end), ends,
                                                     settings.subject_pronouns)
            target_index = bio.value_token_spans[attribute][0]
            groups = token_groups(offsets, target_index, _moved(subject), _moved(relation), shift)
            items.append(ReadItem(bio.input_ids[:target_index], bio.input_ids[target_index],
                                  groups))
    return items


def _moved(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    return [(start + 1, end + 1) for start, end in spans]


def qa_read_items(run: LoadedRun, questions: list[QAItem]) -> list[ReadItem]:
    """Each question's prompt, the answer's first token and the prompt's token groups."""
    dataset = load_saved_dataset(ensure_dataset(run.config.data,
                                                run.folder.parent.parent / "data"))
    names = dataset["people"][:]["full_name"]
    shift = _prefix_length(run)
    items = []
    for question in questions:
        name = names[person_of(question)]
        prompt = f"{QA_FORMS[question.attribute].format(name=name)} Answer:"  # as generated
        ids, offsets = _tokens_with_offsets(run, prompt)
        if ids != question.prompt_ids[shift:]:
            raise ValueError(f"question {question.question_id} does not tokenize as in training")
        subject, relation = qa_character_groups(prompt, name)
        groups = token_groups(offsets, len(question.prompt_ids), subject, relation, shift)
        items.append(ReadItem(question.prompt_ids, question.answer_ids[0], groups))
    return items


def run_reads(run: LoadedRun, settings: ReadsSettings) -> dict[str, Any]:
    items = {"bio": bio_read_items(run, settings),
             "qa_id": qa_read_items(run, run.data.id_questions),
             "qa_ood": qa_read_items(run, run.data.ood_questions)}
    return reads_analysis(run.model, items, run.data.pad_id, settings)


RUNNERS: dict[str, Callable[[LoadedRun, Any], dict[str, Any]]] = {
    "grafting": run_grafting, "representation": run_representation, "reads": run_reads}


def analyze_run(run_folder: Path, what: Sequence[str],
                overrides: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Run the named analyses on a finished run; their results, settings and timings are written
    to the run folder's analyses.json (merged with analyses already there) and returned."""
    from factrecall_bench import distributed

    if distributed.is_distributed():
        raise UserError("analyze runs in one process: run it without accelerate launch")
    overrides = overrides or {}
    seed_of = _run_seed(run_folder)
    settings = {name: settings_for(name, overrides.get(name, {}), seed_of) for name in what}
    run = load_run(run_folder)
    torch.manual_seed(run.config.seed)
    document = _existing(run_folder)
    for name in what:
        started = time.perf_counter()
        document["analyses"][name] = RUNNERS[name](run, settings[name])
        document["timings"][name] = round(time.perf_counter() - started, 3)
    document["run_id"] = run.result.get("run_id")
    RunFolder(run_folder).write_analyses(document)
    return document


def _run_seed(run_folder: Path) -> int:
    config = RunFolder(run_folder).read_config() or {}
    seed = config.get("seed", 0)
    return seed if isinstance(seed, int) else 0


def _existing(run_folder: Path) -> dict[str, Any]:
    """analyses.json as it is (other analyses kept), or a fresh document."""
    old = RunFolder(run_folder).read_analyses()
    if old is None:
        return {"schema_version": ANALYSES_SCHEMA_VERSION, "analyses": {}, "timings": {}}
    return old


def analyze_command(run_folder: Path, what: str, overrides: Sequence[str], as_json: bool
                    ) -> None:
    """The `analyze` command: run, write analyses.json, print the document or a summary."""
    names = parse_what(what)
    document = analyze_run(run_folder, names, parse_overrides(overrides))
    if as_json:
        print(json.dumps(document, indent=2, sort_keys=True))
        return
    for line in summary_lines(document, names):
        print(line)
    print(f"wrote {RunFolder(run_folder).analyses}")


def summary_lines(document: Mapping[str, Any], what: Sequence[str]) -> list[str]:
    """A few readable lines per analysis run."""
    lines: list[str] = []
    analyses = document["analyses"]
    if "grafting" in what:
        lines += _grafting_lines(analyses["grafting"])
    if "representation" in what:
        for group, entry in analyses["representation"]["groups"].items():
            if entry.get("n_pairs"):
                lines.append(f"representation {group}: last-layer cosine {entry['cosine'][-1]:.3f}"
                             f" (mismatched {entry['cosine_mismatched'][-1]:.3f}), CKA "
                             f"{entry['cka'][-1]:.3f} over {entry['n_people']} people")
    if "reads" in what:
        for name, entry in analyses["reads"]["formats"].items():
            share = entry["share"]
            shown = ", ".join(f"{g} {share[g]:.2f}" for g in share if share[g] is not None)
            lines.append(f"reads {name}: {shown or 'nothing scored'} "
                         f"({entry['n_scored']} of {entry['n_items']} values)")
    return lines


def _grafting_lines(result: Mapping[str, Any]) -> list[str]:
    lines = [f"grafting: fine-tuned {_metrics(result['finetuned'])}; before training "
             f"{_metrics(result['pre'])}"]
    for method, entry in result["methods"].items():
        if entry["k"] is None:
            lines.append(f"grafting {method}: no size met the target")
            continue
        random = [d["metrics"] for d in entry["random"]]
        shown = (f"; random sets of that size {_metrics(_mean_metrics(random))}" if random else "")
        lines.append(f"grafting {method}: {entry['k']} parameters ({entry['fraction']:.3%}) give "
                     f"{_metrics(entry['metrics'])}{shown}")
        for key, stats in entry["overlap_with_shared"].items():
            lines.append(f"  shared@{key}: {stats['count']} in the set "
                         f"({stats['enrichment']:.1f}x chance)")
    return lines


def _metrics(metrics: Mapping[str, float]) -> str:
    return ", ".join(f"{name.removesuffix('_exact_match')} EM {value:.3f}"
                     for name, value in metrics.items())


def _mean_metrics(records: Sequence[Mapping[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([r[key] for r in records])) for key in records[0]}
