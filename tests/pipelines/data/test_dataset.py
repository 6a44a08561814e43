"""Scanning a UCF101-layout tree: groups, class selection, clear errors, official split lists."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.data.dataset import (
    DataRootNotFoundError,
    EmptyDataRootError,
    UnknownClassError,
    group_of,
    list_classes,
    misplaced_videos,
    scan_dataset,
)
from pipelines.data.splits import OfficialListsNotFoundError, load_official_split, official_key


def touch_tree(root: Path, names: dict[str, list[str]]) -> Path:
    for class_name, files in names.items():
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for name in files:
            (root / class_name / name).write_bytes(b"x")
    return root


def test_group_of_ucf_and_other_names() -> None:
    # A UCF101 group number is one unit across classes (the official lists hold out g01-g07 of all).
    assert group_of("ApplyEyeMakeup", "v_ApplyEyeMakeup_g08_c01") == "g08"
    assert group_of("ApplyEyeMakeup", "v_ApplyEyeMakeup_g8_c1") == "g08"
    assert group_of("HandstandPushups", "v_HandStandPushups_g01_c02") == "g01"
    assert group_of("Punch", "v_Punch_g02_c02 (1)") == group_of("Punch", "v_Punch_g02_c02-copy") == "g02"
    assert group_of("Punch", "v_Punch_g02_c02x") == "Punch/v_Punch_g02_c02x"
    # Other names: one group per file, qualified by the class so equal stems stay two groups.
    assert group_of("Punch", "my_clip") == "Punch/my_clip"


def test_scan_finds_videos_case_insensitively(tmp_path: Path) -> None:
    root = touch_tree(
        tmp_path / "data",
        {
            "Punch": [
                "v_Punch_g01_c01.avi",
                "v_Punch_g01_c02.AVI",
                "clip.MKV",
                "phone.MOV",
                "notes.txt",
                ".hidden.avi",
            ],
            "PullUps": ["v_PullUps_g02_c01.webm", "x.mp4", "x.avi"],
            "Empty": ["readme.txt"],
        },
    )
    files = scan_dataset(root)
    assert [f.video_id for f in files] == [
        "PullUps/v_PullUps_g02_c01",
        "PullUps/x.avi",
        "PullUps/x.mp4",
        "Punch/clip",
        "Punch/phone",
        "Punch/v_Punch_g01_c01",
        "Punch/v_Punch_g01_c02",
    ]
    assert [f.group for f in files] == ["g02", "PullUps/x", "PullUps/x", "Punch/clip", "Punch/phone", "g01", "g01"]
    assert all(f.path.is_absolute() for f in files)
    assert list_classes(root) == ["PullUps", "Punch"]  # "Empty" holds no video
    assert {f.class_name for f in scan_dataset(root, ["Punch"])} == {"Punch"}


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DataRootNotFoundError, match=r"does not exist.*demo-data"):
        scan_dataset(tmp_path / "missing")
    (tmp_path / "file.avi").write_bytes(b"x")
    with pytest.raises(DataRootNotFoundError, match="is a file"):
        scan_dataset(tmp_path / "file.avi")
    empty = tmp_path / "empty"
    (empty / "Punch").mkdir(parents=True)
    with pytest.raises(EmptyDataRootError, match=r"no videos in .*empty.*ClassName"):
        scan_dataset(empty)
    flat = touch_tree(tmp_path / "flat", {".": ["v_Punch_g01_c01.avi"]})
    with pytest.raises(EmptyDataRootError, match="holds videos directly"):
        scan_dataset(flat)
    root = touch_tree(tmp_path / "data", {"Punch": ["a.avi"], "PullUps": ["b.avi"]})
    with pytest.raises(UnknownClassError, match=r"'punch' \(did you mean Punch\?\).*known classes: PullUps, Punch"):
        scan_dataset(root, ["punch"])
    assert isinstance(UnknownClassError("x"), ValueError)
    assert isinstance(DataRootNotFoundError("x"), FileNotFoundError)


def write_lists(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "classInd.txt").write_text("1 PullUps\n2 Punch\n")
    (folder / "trainlist01.txt").write_text(
        "PullUps/v_PullUps_g02_c01.avi 1\nPunch/v_Punch_g02_c01.avi 2\r\nPunch/v_Punch_g03_c01.avi 2\n\n"
    )
    (folder / "testlist01.txt").write_text("PullUps/v_PullUps_g01_c01.avi\nPunch/v_Punch_g01_c01.avi\n")


def test_official_lists_beside_the_root(tmp_path: Path) -> None:
    root = touch_tree(tmp_path / "UCF-101", {"Punch": ["v_Punch_g01_c01.webm"], "PullUps": ["v_PullUps_g01_c01.webm"]})
    with pytest.raises(OfficialListsNotFoundError, match=r"trainlist01.txt.*looked in .*UCF-101.*ucfTrainTestlist"):
        load_official_split(root, 1)
    write_lists(tmp_path / "ucfTrainTestlist")
    official = load_official_split(root, 1)
    assert official.folder == (tmp_path / "ucfTrainTestlist").resolve()
    assert official.class_order == ("PullUps", "Punch")
    assert official.train == {"pullups/v_pullups_g02_c01", "punch/v_punch_g02_c01", "punch/v_punch_g03_c01"}
    # Case and extension do not matter (the demo writes .webm, the lists say .avi).
    assert official.split_of("Punch", "v_Punch_g01_c01.webm") == "test"
    assert official.split_of("Punch", "v_Punch_G03_c01.mp4") == "train"
    assert official.split_of("Punch", "v_Punch_g09_c01.avi") is None
    assert official_key("Punch\\v_Punch_g01_c01.avi") == "punch/v_punch_g01_c01"
    with pytest.raises(OfficialListsNotFoundError, match="official split 2"):
        load_official_split(root, 2)


def test_misplaced_videos_are_listed_with_the_reason(tmp_path: Path) -> None:
    root = touch_tree(tmp_path / "data", {"Punch": ["v_Punch_g01_c01.avi"], "PullUps": ["v_PullUps_g01_c01.avi"]})
    (root / "Punch" / "take2").mkdir()
    (root / "Punch" / "take2" / "a.mp4").write_bytes(b"x")
    (root / "Punch" / "take2" / "notes.txt").write_bytes(b"x")  # not a video: not listed
    (root / "Punch" / ".cache").mkdir()
    (root / "Punch" / ".cache" / "b.avi").write_bytes(b"x")  # hidden folder: not searched
    (root / "Dance" / "day1").mkdir(parents=True)  # no video directly inside: not a class
    (root / "Dance" / "day1" / "c.webm").write_bytes(b"x")
    (root / "PullUps" / "link.avi").symlink_to(root / "PullUps" / "missing.avi")
    (root / "loose.mkv").write_bytes(b"x")

    found = {str(item.path.relative_to(root)): item.reason for item in misplaced_videos(root)}
    assert set(found) == {"Punch/take2/a.mp4", "Dance/day1/c.webm", "PullUps/link.avi", "loose.mkv"}
    assert found["Punch/take2/a.mp4"].startswith("video in a nested folder (Punch/take2/a.mp4)")
    missing = root / "PullUps" / "missing.avi"
    assert found["PullUps/link.avi"].startswith(f"dangling symbolic link: its target {missing}")
    assert found["loose.mkv"].startswith("video outside a class folder")
    # With --classes only the chosen class folders are looked at.
    chosen = {str(item.path.relative_to(root)) for item in misplaced_videos(root, ["Punch"])}
    assert chosen == {"Punch/take2/a.mp4"}
    assert [f.video_id for f in scan_dataset(root)] == ["PullUps/v_PullUps_g01_c01", "Punch/v_Punch_g01_c01"]
