"""`prepare` end to end through the CLI on a small generated UCF101-layout tree."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from core.runfiles import append_rejected, read_rejected
from pipelines.data import prepare as prepare_module
from pipelines.data.keyframes import load_keyframe_indexes
from pipelines.data.preflight import MIN_FRAMES
from pipelines.data.prepare import changed_groups, prepare_run
from pipelines.data.records import read_videos_csv
from pipelines.video.codecs import write_video

CLASSES = ("PullUps", "Punch", "PushUps")
GROUPS = 4
CLIPS = 2


def make_tree(root: Path, groups: int = GROUPS) -> Path:
    rng = np.random.default_rng(0)
    for class_name in CLASSES:
        for group in range(1, groups + 1):
            for clip in range(1, CLIPS + 1):
                frames = rng.integers(0, 256, (MIN_FRAMES, 24, 32, 3), dtype=np.uint8)
                path = root / class_name / f"v_{class_name}_g{group:02d}_c{clip:02d}.avi"
                write_video(path, frames, fps=25, codec="mjpeg")
    (root / "Punch" / "v_Punch_g09_c01.avi").write_text("not a video\n")  # rejected by the pre-flight check
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("ucf") / "UCF-101")


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["--device", "cpu", "prepare", *args], catch_exceptions=False)


def test_prepare_end_to_end_and_noop_rerun(tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke(str(tree), "--run", str(run), "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "24 videos in 3 classes" in result.output and "1 rejected" in result.output

    records = read_videos_csv(run / "videos.csv")
    assert len(records) == len(CLASSES) * GROUPS * CLIPS
    assert {r.class_name: r.label for r in records} == {name: i for i, name in enumerate(sorted(CLASSES))}
    assert {(r.codec, r.frames, r.fps, r.width, r.height) for r in records} == {("mjpeg", MIN_FRAMES, 25.0, 32, 24)}
    split_of_group: dict[str, set[str]] = {}
    for r in records:
        split_of_group.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in split_of_group.values())
    assert {(r.class_name, r.split) for r in records} == {(c, s) for c in CLASSES for s in ("train", "val", "test")}

    rejected = read_rejected(run)
    assert [(Path(row["path"]).name, row["stage"]) for row in rejected] == [("v_Punch_g09_c01.avi", "prepare")]
    assert rejected[0]["reason"].startswith("not a video file")

    # Every usable video's keyframe index is stored with the run (the loaders seek with it).
    indexes = load_keyframe_indexes(run / "keyframes.npz")
    assert sorted(indexes) == sorted(r.path for r in records)
    assert all(index.frames == MIN_FRAMES for _, index in indexes.values())

    meta = json.loads((run / "run.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["split"] == "group" and meta["class_names"] == sorted(CLASSES)
    assert meta["versions"]["av"] and meta["input_fingerprint"]

    before = {name: (run / name).stat().st_mtime_ns for name in ("videos.csv", "rejected.csv", "run.json")}
    again = invoke(str(tree), "--run", str(run), "--seed", "3")
    assert again.exit_code == 0 and "up to date" in again.output
    assert {name: (run / name).stat().st_mtime_ns for name in before} == before

    # Another seed is another split: redone, same videos, and said.
    other = prepare_run(tree, run, seed=4, progress=False)
    assert not other.up_to_date and other.n_videos == len(records)
    assert [r.split for r in read_videos_csv(run / "videos.csv")] != [r.split for r in records]
    assert other.split_changed == changed_groups(records, read_videos_csv(run / "videos.csv"))
    assert other.split_changed[0] > 0 and other.split_changed[1] == GROUPS
    assert json.loads((run / "run.json").read_text())["split_changed"] == {
        "groups_moved": other.split_changed[0],
        "groups_before": GROUPS,
    }


def test_adding_videos_that_move_groups_to_other_splits_is_warned_about(tree: Path, tmp_path: Path) -> None:
    """One more group reshuffles the seeded split: the groups that changed split are counted in a
    warning (their results are redone), and a redo that moves none says nothing."""
    data = tmp_path / "UCF-101"
    shutil.copytree(tree, data)
    run = tmp_path / "run"
    assert invoke(str(data), "--run", str(run), "--seed", "2").exit_code == 0
    before = read_videos_csv(run / "videos.csv")
    rng = np.random.default_rng(1)
    for class_name in CLASSES:
        frames = rng.integers(0, 256, (MIN_FRAMES, 24, 32, 3), dtype=np.uint8)
        write_video(data / class_name / f"v_{class_name}_g05_c01.avi", frames, fps=25, codec="mjpeg")
    result = invoke(str(data), "--run", str(run), "--seed", "2")
    assert result.exit_code == 0, result.output
    moved, common = changed_groups(before, read_videos_csv(run / "videos.csv"))
    assert common == GROUPS and moved > 0
    assert f"WARNING the split changed: {moved} of the {GROUPS} groups this run had before" in result.output
    assert f"split changed for {moved} of {GROUPS} earlier groups" in result.output
    # Redone with the same split (as after an upgrade of prepare): nothing moved, nothing said.
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "input_fingerprint": "from an older prepare"}))
    again = invoke(str(data), "--run", str(run), "--seed", "2")
    assert again.exit_code == 0 and "up to date" not in again.output
    assert "split changed" not in again.output
    assert json.loads((run / "run.json").read_text())["split_changed"] == {"groups_moved": 0, "groups_before": 5}


def test_a_run_prepared_by_an_older_version_is_redone(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(prepare_module, "PREPARE_VERSION", prepare_module.PREPARE_VERSION - 1)
        prepare_run(tree, run, progress=False)
    assert json.loads((run / "run.json").read_text())["prepare_version"] == prepare_module.PREPARE_VERSION - 1
    summary = prepare_run(tree, run, progress=False)
    assert not summary.up_to_date
    assert json.loads((run / "run.json").read_text())["prepare_version"] == prepare_module.PREPARE_VERSION
    assert prepare_run(tree, run, progress=False).up_to_date


def test_rerun_keeps_rejections_of_later_stages(tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    prepare_run(tree, run, classes=["Punch", "PullUps"], progress=False)
    append_rejected(run, "/x/broken.avi", "decode failed", "features")
    summary = prepare_run(tree, run, classes=["Punch", "PullUps"], seed=1, progress=False)
    assert summary.class_names == ["PullUps", "Punch"] and summary.n_rejected == 1
    assert sorted(row["stage"] for row in read_rejected(run)) == ["features", "prepare"]


def test_official_split(tree: Path, tmp_path: Path) -> None:
    lists = tree.parent / "ucfTrainTestlist"
    lists.mkdir(exist_ok=True)
    order = ["Punch", "PushUps", "PullUps"]
    (lists / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(order, 1)))
    train = [
        f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi {order.index(c) + 1}" for c in CLASSES for g in (2, 3, 4) for k in (1, 2)
    ]
    test = [f"{c}/v_{c}_g01_c{k:02d}.avi" for c in CLASSES for k in (1, 2)]
    (lists / "trainlist01.txt").write_text("\n".join(train[:-1]) + "\n")  # one clip in neither list
    # g09_c01 is the tree's broken file; two entries name no file: one of a chosen class (a partial
    # download), one of a class not in the run.
    extra = ["Punch/v_Punch_g09_c01.avi", "Punch/v_Punch_g07_c01.avi", "Diving/v_Diving_g01_c01.avi"]
    (lists / "testlist01.txt").write_text("\n".join(test + extra) + "\n")
    run = tmp_path / "run"
    result = invoke(str(tree), "--run", str(run), "--split", "official:1")
    assert result.exit_code == 0, result.output
    assert "1 in neither official list" in result.output
    unlisted = [row for row in read_rejected(run) if "in none of trainlist01.txt, testlist01.txt" in row["reason"]]
    assert [Path(row["path"]).name for row in unlisted] == [train[-1].split()[0].split("/")[1]]
    missing = "official lists name 1 video(s) of these classes that are not in the data folder (punch/v_punch_g07_c01)"
    assert missing in result.output
    assert json.loads((run / "run.json").read_text())["listed_missing"] == ["punch/v_punch_g07_c01"]
    assert (
        "1 listed video(s) of these classes not found"
        in invoke(str(tree), "--run", str(run), "--split", "official:1").output
    )  # up to date: still said
    records = read_videos_csv(run / "videos.csv")
    assert len(records) == len(train) - 1 + len(test)
    assert {r.class_name: r.label for r in records} == {"Punch": 0, "PushUps": 1, "PullUps": 2}  # classInd order
    assert {r.group for r in records if r.split == "test"} == {"g01"}
    val_groups = {r.group for r in records if r.split == "val"}  # carved by group number, for every class
    val_pairs = {(r.class_name, r.group) for r in records if r.split == "val"}
    assert val_pairs == {(c, g) for c in CLASSES for g in val_groups}
    assert {r.split for r in records} == {"train", "val", "test"}

    bad = invoke(str(tree), "--run", str(run), "--split", "official:2")
    assert bad.exit_code == 1 and "looked in" in bad.output and "testlist02.txt" in bad.output
    shutil.rmtree(lists)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "foo"], "use 'group', 'official:N'"),
        (["--val", "1.5"], "--val"),
        (["--val", "0.5", "--test", "0.5"], "leave no training data"),
        (["--split", "official:1", "--test", "0.3"], "--test applies to --split group only"),
    ],
)
def test_bad_arguments_exit_2(tree: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke(str(tree), "--run", str(tmp_path / "run"), *args)
    assert result.exit_code == 2 and message in result.output
    assert sum(line.startswith("Error") for line in result.output.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_input_errors_before_any_work(tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cases = {
        (str(tmp_path / "nowhere"),): "does not exist",
        (str(tree), "--classes", "Punch,Dance"): "known classes: PullUps, Punch, PushUps",
    }
    for args, message in cases.items():
        result = invoke(*args, "--run", str(run))
        assert result.exit_code == 1 and message in result.output, result.output
        assert not run.exists()


def test_too_few_groups(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", groups=2)
    result = invoke(str(root), "--run", str(tmp_path / "run"))
    assert result.exit_code == 1 and "at least 3 groups" in result.output and "PullUps has 2" in result.output
    assert not (tmp_path / "run").exists()


def test_class_without_usable_video(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data", groups=3)
    for path in (root / "PushUps").iterdir():
        path.write_bytes(b"")
    result = invoke(str(root), "--run", str(tmp_path / "run"))
    assert result.exit_code == 1
    assert "no usable video in class(es) PushUps" in result.output and "empty file" in result.output
    with open(tmp_path / "run" / "rejected.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3 * CLIPS + 1
    assert not (tmp_path / "run" / "videos.csv").exists()


def test_prepare_with_outer_folds(tree: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    result = invoke(str(tree), "--run", str(run), "--folds", "3")
    assert result.exit_code == 0, result.output
    assert "3 outer folds" in result.output and "fold2" in result.output
    records = read_videos_csv(run / "videos.csv")
    assert len(records) == len(CLASSES) * GROUPS * CLIPS
    folds_of_group: dict[str, set[int | None]] = {}
    for r in records:
        folds_of_group.setdefault(r.group, set()).add(r.fold)
    assert all(len(found) == 1 for found in folds_of_group.values())  # no group in two folds' test sets
    assert {r.fold for r in records} == {0, 1, 2}
    for k in range(3):
        in_fold = [(r.class_name, r.group, r.fold_splits.split()[k]) for r in records]
        assert {g for _, g, s in in_fold if s == "test"} == {r.group for r in records if r.fold == k}
        assert {(c, s) for c, _, s in in_fold} == {(c, s) for c in CLASSES for s in ("train", "val", "test")}
    assert all(r.split == r.fold_splits.split()[0] for r in records)  # `split` is fold 0's
    meta = json.loads((run / "run.json").read_text())
    assert meta["folds"] == 3 and meta["config"]["folds"] == 3 and meta["config"]["test"] is None

    assert "up to date" in invoke(str(tree), "--run", str(run), "--folds", "3").output
    # Other folds redo the index: a new fold column, so whatever depends on it is redone.
    two = prepare_run(tree, run, folds=2, progress=False)
    assert not two.up_to_date and two.folds == 2
    assert {r.fold for r in read_videos_csv(run / "videos.csv")} == {0, 1}
    one = prepare_run(tree, run, progress=False)  # back to one split: no fold columns
    assert one.folds == 1 and "fold" not in (run / "videos.csv").read_text().splitlines()[0]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--folds", "3", "--test", "0.3"], 2, "--test applies to one split only"),
        (["--folds", "0"], 2, "--folds"),
        (["--folds", "5"], 1, "too few groups for --folds 5"),
        (["--split", "official:1", "--folds", "3"], 1, "use --split official:all"),
    ],
)
def test_bad_fold_arguments(tree: Path, tmp_path: Path, args: list[str], code: int, message: str) -> None:
    result = invoke(str(tree), "--run", str(tmp_path / "run"), *args)
    assert result.exit_code == code and message in result.output, result.output
    assert not (tmp_path / "run" / "videos.csv").exists()


def test_official_all_takes_the_three_test_lists_as_folds(tree: Path, tmp_path: Path) -> None:
    lists = tree.parent / "ucfTrainTestlist"
    lists.mkdir(exist_ok=True)
    order = ["Punch", "PushUps", "PullUps"]
    (lists / "classInd.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(order, 1)))
    test_groups = {1: (1,), 2: (2,), 3: (3, 4)}
    for number, groups in test_groups.items():
        names = [f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi" for c in CLASSES for g in range(1, 5) for k in (1, 2)]
        test = [name for name in names if int(name.split("_g")[1][:2]) in groups]
        train = [f"{name} 1" for name in names if name not in test]
        (lists / f"trainlist{number:02d}.txt").write_text("\n".join(train) + "\n")
        (lists / f"testlist{number:02d}.txt").write_text("\n".join(test) + "\n")
    run = tmp_path / "run"
    try:
        result = invoke(str(tree), "--run", str(run), "--split", "official:all")
        assert result.exit_code == 0, result.output
        records = read_videos_csv(run / "videos.csv")
        assert {(r.group, r.fold) for r in records} == {("g01", 0), ("g02", 1), ("g03", 2), ("g04", 2)}
        assert {r.class_name: r.label for r in records} == {"Punch": 0, "PushUps": 1, "PullUps": 2}  # classInd
        assert json.loads((run / "run.json").read_text())["config"]["split"] == "official:all"
        bad = invoke(str(tree), "--run", str(tmp_path / "other"), "--split", "official:all", "--folds", "5")
        assert bad.exit_code == 1 and "takes UCF101's 3 test lists as the outer folds; drop --folds 5" in bad.output
    finally:
        shutil.rmtree(lists)
