"""Tests written for the survivors of mutation testing of factrecall_bench/data/dataset.py
(docs/mutation.md, fourth round): the splits and their columns, the saved folder (readable with
plain `datasets.load_from_disk`, its spec.json and digest.json), which output folders are refused
(and that nothing of the user's is touched), refilling an earlier dataset folder in place, and the
cache: named by the data digest, generated once, regenerated when incomplete or tampered with."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import datasets
import pytest

from factrecall_bench.config import DataSpec, to_dict
from factrecall_bench.data import dataset as ds
from factrecall_bench.data.generate import build_corpus
from factrecall_bench.data.pools import ATTRIBUTES, load_pools
from factrecall_bench.errors import UserError
from factrecall_bench.identity import data_digest

SPEC = DataSpec(n_people=6, seed=2, bio_variants=2)
OTHER = DataSpec(n_people=6, seed=3, bio_variants=2)


# Function-scoped: mutmut runs, for a mutant, only the tests that reached the mutated function,
# and a module-scoped fixture reaches the generator in its first test only.
@pytest.fixture
def dataset() -> datasets.DatasetDict:
    return ds.generate_dataset(SPEC)


@pytest.fixture
def other_dataset() -> datasets.DatasetDict:
    return ds.generate_dataset(OTHER)


def _tree(folder: Path) -> dict[str, str]:
    """Every path under `folder` (hidden ones too) with a file's text: what must not change."""
    return {str(path.relative_to(folder)): path.read_text() if path.is_file() else "<dir>"
            for path in sorted(folder.rglob("*"))}


def _saved_digest(folder: Path) -> str:
    return json.loads((folder / "digest.json").read_text())["sha256"]


def _record_the_folder_written(monkeypatch) -> list[Path]:
    """Where the data is written before it is moved into place (seen by `content_digest`)."""
    written: list[Path] = []
    real = ds.content_digest

    def digest(saved_dataset: Path) -> str:
        written.append(saved_dataset.parent)
        return real(saved_dataset)

    monkeypatch.setattr(ds, "content_digest", digest)
    return written


# ------------------------------------------------------------------------- splits and columns


def test_every_split_holds_the_corpus_columns_with_their_features(dataset) -> None:
    corpus = build_corpus(SPEC, load_pools())
    assert list(dataset) == ["people", "bio", "qa_train", "qa_test"]
    assert dataset["bio"].to_dict() == corpus.bio
    assert dataset["qa_train"].to_dict() == corpus.qa_train
    assert dataset["qa_test"].to_dict() == corpus.qa_test
    assert dataset["bio"].features == ds.BIO_FEATURES
    assert dataset["qa_train"].features == ds.QA_FEATURES
    assert dataset["qa_test"].features == ds.QA_FEATURES
    assert dataset["people"].features == ds.PEOPLE_FEATURES


def test_people_rows_carry_id_name_gender_group_and_attributes(dataset) -> None:
    people = build_corpus(SPEC, load_pools()).people
    rows = dataset["people"].to_list()
    assert [row["person_id"] for row in rows] == list(range(SPEC.n_people))
    for row, name, gender, in_train in zip(rows, people.full_names, people.genders,
                                           people.in_train.tolist()):
        assert (row["full_name"], row["gender"]) == (name, gender)
        assert row["group"] == ("train" if in_train else "test")
    assert {row["group"] for row in rows} == {"train", "test"}
    for attribute in ATTRIBUTES:
        assert [row[attribute] for row in rows] == people.attributes[attribute]


def test_generation_reports_its_progress() -> None:
    calls: list[tuple[int, int]] = []
    ds.generate_dataset(DataSpec(n_people=3), lambda done, total: calls.append((done, total)))
    assert calls and calls[-1] == (3, 3)


# --------------------------------------------------------------------------- the saved folder


def test_a_new_folder_holds_the_dataset_its_spec_and_its_digest(tmp_path, dataset) -> None:
    out = tmp_path / "new" / "deeper" / "demo"  # missing parents are made
    ds.save_dataset(dataset, SPEC, out)
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "digest.json", "spec.json"]
    assert json.loads((out / "spec.json").read_text()) == to_dict(SPEC)
    assert _saved_digest(out) == ds.content_digest(out / "dataset")
    loaded = datasets.load_from_disk(str(out / "dataset"))  # no factrecall-bench needed to read it
    assert {split: loaded[split].to_dict() for split in loaded} == \
        {split: dataset[split].to_dict() for split in dataset}
    assert ds.load_saved_dataset(out)["qa_test"].to_dict() == dataset["qa_test"].to_dict()
    assert ds.is_dataset_folder(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["demo"]  # no temp folder left beside


def test_a_new_folder_is_written_beside_its_place_in_a_hidden_temp_folder(tmp_path, dataset,
                                                                           monkeypatch) -> None:
    written = _record_the_folder_written(monkeypatch)
    ds.save_dataset(dataset, SPEC, tmp_path / "demo")
    (temp,) = written
    assert temp.parent == tmp_path  # the same file system: the rename into place is atomic
    assert temp.name.startswith(".demo.")
    assert not temp.exists()


def test_a_folder_that_appears_meanwhile_with_user_files_is_not_replaced(tmp_path, dataset,
                                                                         monkeypatch) -> None:
    real = ds.content_digest

    def digest_while_a_user_makes_the_folder(saved_dataset: Path) -> str:
        (tmp_path / "demo").mkdir()
        (tmp_path / "demo" / "thesis.txt").write_text("keep\n")
        return real(saved_dataset)

    monkeypatch.setattr(ds, "content_digest", digest_while_a_user_makes_the_folder)
    with pytest.raises(UserError, match="not written by factrecall-bench"):
        ds.save_dataset(dataset, SPEC, tmp_path / "demo")
    assert _tree(tmp_path) == {"demo": "<dir>", "demo/thesis.txt": "keep\n"}


def test_a_dataset_folder_that_appears_meanwhile_is_replaced(tmp_path, dataset, other_dataset,
                                                             monkeypatch) -> None:
    real = ds.content_digest

    def digest_while_another_process_saves(saved_dataset: Path) -> str:
        monkeypatch.setattr(ds, "content_digest", real)
        ds.save_dataset(other_dataset, OTHER, tmp_path / "demo")
        return real(saved_dataset)

    monkeypatch.setattr(ds, "content_digest", digest_while_another_process_saves)
    ds.save_dataset(dataset, SPEC, tmp_path / "demo")
    assert json.loads((tmp_path / "demo" / "spec.json").read_text()) == to_dict(SPEC)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_a_failed_write_leaves_neither_the_folder_nor_a_temp_folder(tmp_path, dataset,
                                                                     monkeypatch) -> None:
    def broken_digest(_: Path) -> str:
        raise OSError("disk full")

    monkeypatch.setattr(ds, "content_digest", broken_digest)
    with pytest.raises(OSError, match="disk full"):
        ds.save_dataset(dataset, SPEC, tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


def test_an_unwritable_place_is_a_user_error_naming_it(tmp_path, dataset) -> None:
    (tmp_path / "notes.txt").write_text("keep\n")
    parent = tmp_path / "notes.txt"
    with pytest.raises(UserError) as caught:
        ds.save_dataset(dataset, SPEC, parent / "demo")  # its parent is a file
    assert str(caught.value) == f"cannot write to {parent}: File exists"
    assert _tree(tmp_path) == {"notes.txt": "keep\n"}


def test_the_content_digest_is_sha256_over_each_splits_arrow_files(tmp_path, dataset) -> None:
    dataset.save_to_disk(str(tmp_path / "saved"), num_shards={"people": 1, "bio": 3,
                                                              "qa_train": 2, "qa_test": 1})
    expected = hashlib.sha256()
    for split in ("people", "bio", "qa_train", "qa_test"):
        files = sorted((tmp_path / "saved" / split).glob("*.arrow"))
        assert files
        for arrow_file in files:
            expected.update(split.encode())
            expected.update(arrow_file.read_bytes())
    assert ds.content_digest(tmp_path / "saved") == expected.hexdigest()


def test_other_data_has_another_content_digest(tmp_path, dataset, other_dataset) -> None:
    dataset.save_to_disk(str(tmp_path / "a"))
    other_dataset.save_to_disk(str(tmp_path / "b"))
    assert ds.content_digest(tmp_path / "a") != ds.content_digest(tmp_path / "b")


# --------------------------------------------------------------------- which folders are refused


def test_a_dataset_folder_needs_both_marker_files(tmp_path) -> None:
    assert not ds.is_dataset_folder(tmp_path)
    (tmp_path / "spec.json").write_text("{}")
    assert not ds.is_dataset_folder(tmp_path)
    (tmp_path / "digest.json").mkdir()  # a folder of that name is not our file
    assert not ds.is_dataset_folder(tmp_path)
    (tmp_path / "digest.json").rmdir()
    (tmp_path / "digest.json").write_text("{}")
    assert ds.is_dataset_folder(tmp_path)
    (tmp_path / "spec.json").unlink()
    assert not ds.is_dataset_folder(tmp_path)


def test_new_empty_leftover_only_and_dataset_folders_are_accepted(tmp_path) -> None:
    ds.check_output_folder(tmp_path / "new")
    ds.check_output_folder(tmp_path)  # empty
    (tmp_path / f"{ds.INCOMING_PREFIX}abc").mkdir()  # a killed write's temp folder
    (tmp_path / f"{ds.INCOMING_PREFIX}def").mkdir()
    ds.check_output_folder(tmp_path)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "spec.json").write_text("{}")
    (ours / "digest.json").write_text("{}")
    (ours / "notes.txt").write_text("a user's file beside our data\n")
    ds.check_output_folder(ours)


def test_a_folder_with_user_files_is_refused_with_the_reason(tmp_path) -> None:
    (tmp_path / f"{ds.INCOMING_PREFIX}abc").mkdir()
    (tmp_path / "thesis.txt").write_text("keep\n")
    with pytest.raises(UserError) as caught:
        ds.check_output_folder(tmp_path)
    assert str(caught.value) == (
        f"output folder {tmp_path} is not empty and holds no dataset written by factrecall-bench "
        "(spec.json, digest.json): name a new or empty folder")


def test_a_file_and_a_broken_link_are_refused(tmp_path) -> None:
    (tmp_path / "notes.txt").write_text("keep\n")
    with pytest.raises(UserError) as caught:
        ds.check_output_folder(tmp_path / "notes.txt")
    assert str(caught.value) == \
        f"output folder {tmp_path / 'notes.txt'} is a file: name a new or empty folder"
    (tmp_path / "link").symlink_to(tmp_path / "gone")
    with pytest.raises(UserError) as caught:
        ds.check_output_folder(tmp_path / "link")
    assert str(caught.value) == \
        f"output folder {tmp_path / 'link'} is a broken link: name a new or empty folder"


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_folders_are_named_with_their_real_path(tmp_path, monkeypatch, name) -> None:
    here = tmp_path / "work"
    here.mkdir()
    (here / "thesis.txt").write_text("keep\n")
    (tmp_path / "thesis.txt").write_text("keep\n")
    monkeypatch.chdir(here)
    with pytest.raises(UserError) as caught:
        ds.check_output_folder(Path(name))
    shown = f"{Path(name)} ({Path(name).resolve()})"
    assert str(caught.value).startswith(f"output folder {shown} is not empty")


def test_a_refused_folder_is_left_as_it_was(tmp_path, dataset) -> None:
    demo = tmp_path / "demo"
    (demo / "code").mkdir(parents=True)
    (demo / "thesis.txt").write_text("keep\n")
    (demo / "spec.json").write_text("mine\n")  # one marker is not enough
    before = _tree(tmp_path)
    with pytest.raises(UserError, match="not empty"):
        ds.save_dataset(dataset, SPEC, demo)
    assert _tree(tmp_path) == before


# -------------------------------------------------------------------- refilling a folder in place


def test_an_empty_folder_is_filled_in_place(tmp_path, dataset) -> None:
    inode = os.stat(tmp_path).st_ino
    ds.save_dataset(dataset, SPEC, tmp_path)
    assert os.stat(tmp_path).st_ino == inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dataset", "digest.json", "spec.json"]
    assert _saved_digest(tmp_path) == ds.content_digest(tmp_path / "dataset")


def test_a_refill_is_written_in_a_temp_folder_a_later_write_clears(tmp_path, dataset,
                                                                    monkeypatch) -> None:
    written = _record_the_folder_written(monkeypatch)
    ds.save_dataset(dataset, SPEC, tmp_path)
    (temp,) = written
    assert temp.parent == tmp_path and temp.name.startswith(ds.INCOMING_PREFIX)
    assert not temp.exists()


def test_a_leftover_that_cannot_be_cleared_does_not_fail_the_write(tmp_path, dataset) -> None:
    """Clearing killed writes is best effort: a file of that name (not a folder) stays."""
    (tmp_path / f"{ds.INCOMING_PREFIX}note").write_text("a file, not a temp folder\n")
    ds.save_dataset(dataset, SPEC, tmp_path)
    assert ds.is_dataset_folder(tmp_path)
    assert _saved_digest(tmp_path) == ds.content_digest(tmp_path / "dataset")


def test_refilling_replaces_only_our_entries_and_clears_killed_writes(tmp_path, dataset,
                                                                      other_dataset) -> None:
    demo = tmp_path / "demo"
    ds.save_dataset(dataset, SPEC, demo)
    (demo / "notes.txt").write_text("mine\n")
    (demo / "tokenizer").mkdir()  # trained on the old data: stale once the data changes
    (demo / "tokenizer" / "tokenizer.json").write_text("{}")
    (demo / f"{ds.INCOMING_PREFIX}killed").mkdir()
    (demo / f"{ds.INCOMING_PREFIX}killed" / "half.arrow").write_text("half")
    ds.save_dataset(other_dataset, OTHER, demo)
    assert sorted(p.name for p in demo.iterdir()) == \
        ["dataset", "digest.json", "notes.txt", "spec.json"]
    assert (demo / "notes.txt").read_text() == "mine\n"
    assert json.loads((demo / "spec.json").read_text()) == to_dict(OTHER)
    assert _saved_digest(demo) == ds.content_digest(demo / "dataset")
    assert ds.load_saved_dataset(demo)["bio"].to_dict() == other_dataset["bio"].to_dict()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


# ----------------------------------------------------------------------------------- the cache


def test_the_cache_folder_is_named_by_the_data_digest(tmp_path) -> None:
    folder = ds.dataset_dir(tmp_path, SPEC)
    assert folder == tmp_path / f"biosdata-{data_digest(SPEC)[:16]}"
    assert ds.dataset_dir(tmp_path, OTHER) != folder


def _counting_generator(monkeypatch) -> list[DataSpec]:
    made: list[DataSpec] = []
    real = ds.generate_dataset

    def generate(spec, progress=None):
        made.append(spec)
        return real(spec, progress)

    monkeypatch.setattr(ds, "generate_dataset", generate)
    return made


def test_the_cache_is_generated_once_under_a_new_root(tmp_path, monkeypatch) -> None:
    made = _counting_generator(monkeypatch)
    root = tmp_path / "runs" / "data"  # missing parents are made
    calls: list[tuple[int, int]] = []
    folder = ds.ensure_dataset(SPEC, root, lambda done, total: calls.append((done, total)))
    assert folder == ds.dataset_dir(root, SPEC) and ds.is_dataset_folder(folder)
    assert calls and calls[-1] == (SPEC.n_people, SPEC.n_people)
    assert json.loads((folder / "spec.json").read_text()) == to_dict(SPEC)
    assert ds.ensure_dataset(SPEC, root) == folder
    assert made == [SPEC]
    assert sorted(p.name for p in root.iterdir()) == [folder.name, f"{folder.name}.lock"]


@pytest.mark.parametrize("damage", ["no data", "bad json", "no sha256", "other spec",
                                    "other digest", "digest not json"])
def test_an_incomplete_or_tampered_cache_is_generated_again(tmp_path, monkeypatch, damage) -> None:
    folder = ds.ensure_dataset(SPEC, tmp_path)
    spec_file, digest_file = folder / "spec.json", folder / "digest.json"
    if damage == "no data":
        shutil.rmtree(folder / "dataset")
    elif damage == "bad json":
        spec_file.write_text("{")
    elif damage == "no sha256":
        digest_file.write_text('{"sha": "x"}')
    elif damage == "other spec":
        spec_file.write_text(json.dumps(to_dict(OTHER)))
    elif damage == "other digest":
        digest_file.write_text(json.dumps({"sha256": "0" * 64}))
    else:
        digest_file.write_text("not json")
    made = _counting_generator(monkeypatch)
    assert ds.ensure_dataset(SPEC, tmp_path) == folder
    assert made == [SPEC]
    assert json.loads(spec_file.read_text()) == to_dict(SPEC)
    assert _saved_digest(folder) == ds.content_digest(folder / "dataset")


@pytest.mark.parametrize("removed", ["spec.json", "digest.json"])
def test_a_cache_folder_missing_its_markers_is_kept_and_the_message_says_what_to_do(
        tmp_path, monkeypatch, removed) -> None:
    """Marker files deleted by hand: the folder may hold anything now, so nothing is removed and
    nothing generated; the one line names the cache folder and how to get a fresh one."""
    folder = ds.ensure_dataset(SPEC, tmp_path)
    (folder / removed).unlink()
    before = sorted(p.name for p in folder.iterdir())
    made = _counting_generator(monkeypatch)
    with pytest.raises(UserError, match=r"the data cache .*biosdata-.* holds files but not a "
                                        r"dataset .*: delete that folder and it is generated"):
        ds.ensure_dataset(SPEC, tmp_path)
    assert made == [] and sorted(p.name for p in folder.iterdir()) == before
