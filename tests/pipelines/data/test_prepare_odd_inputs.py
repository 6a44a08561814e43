"""`prepare` on the odd inputs of issue 14: each odd file is rejected with its reason (or split
correctly), never skipped silently and never leaking between splits."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from cli import main
from core.runfiles import read_rejected
from pipelines.data.keyframes import load_keyframe_indexes
from pipelines.data.preflight import MIN_FRAMES, probe_video
from pipelines.data.prepare import SQUARE_PIXELS_COMMAND
from pipelines.data.records import read_videos_csv
from pipelines.video.codecs import write_video
from tests.edited_videos import remux
from tests.pipelines.data.test_preflight import anamorphic_video, rotated_video
from tests.pipelines.video.test_decode import moving_frames, write_program_stream

CLASSES = ("PullUps", "Punch", "PushUps")


def ucf_tree(root: Path, groups: int, seed: int = 0) -> Path:
    """One 8-frame 32x24 MJPEG clip per class and group, each with its own random pixels."""
    rng = np.random.default_rng(seed)
    for class_name in CLASSES:
        for group in range(1, groups + 1):
            frames = rng.integers(0, 256, (MIN_FRAMES, 24, 32, 3), dtype=np.uint8)
            write_video(root / class_name / f"v_{class_name}_g{group:02d}_c01.avi", frames, fps=25, codec="mjpeg")
    return root


def prepare(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(main, ["--device", "cpu", "prepare", *args], catch_exceptions=False)


def rejected_reasons(run: Path, root: Path) -> dict[str, str]:
    """rejected.csv rows of `prepare`: path relative to ``root`` -> reason."""
    return {
        str(Path(row["path"]).relative_to(root)): row["reason"]
        for row in read_rejected(run)
        if row["stage"] == "prepare"
    }


def test_byte_identical_copies_are_rejected_and_never_cross_splits(tmp_path: Path) -> None:
    root = ucf_tree(tmp_path / "data", groups=4)
    kept = root / "Punch" / "v_Punch_g01_c01.avi"  # the first in scan order whose name gives its group
    copy = root / "Punch" / "a copy.avi"  # first in scan order, but a group of its own: it would leak g01
    shutil.copyfile(kept, root / "Punch" / "v_Punch_g04_c02.avi")  # another group: would leak across splits
    shutil.copyfile(kept, copy)
    shutil.copyfile(root / "PushUps" / "v_PushUps_g02_c01.avi", root / "PullUps" / "mislabelled.avi")
    run = tmp_path / "run"
    result = prepare(str(root), "--run", str(run))
    assert result.exit_code == 0, result.output
    assert (
        "duplicate: kept Punch/v_Punch_g01_c01.avi, rejected Punch/a copy.avi, Punch/v_Punch_g04_c02.avi"
        in result.output
    )
    assert (
        "duplicate with conflicting labels: rejected PullUps/mislabelled.avi, PushUps/v_PushUps_g02_c01.avi"
        in result.output
    )
    assert "4 rejected (4 byte-identical duplicate(s))" in result.output

    records = read_videos_csv(run / "videos.csv")
    contents = [Path(r.path).read_bytes() for r in records]
    assert len(set(contents)) == len(records), "a byte-identical pair is still in the index"
    assert {r.video_id: r.group for r in records}["Punch/v_Punch_g01_c01"] == "g01"
    reasons = rejected_reasons(run, root)
    assert set(reasons) == {
        "Punch/v_Punch_g04_c02.avi",
        "Punch/a copy.avi",
        "PullUps/mislabelled.avi",
        "PushUps/v_PushUps_g02_c01.avi",
    }
    assert reasons["Punch/a copy.avi"].startswith(f"duplicate: byte-identical to {kept} (kept)")
    assert reasons["PullUps/mislabelled.avi"].startswith("duplicate with conflicting labels: byte-identical to")
    meta = json.loads((run / "run.json").read_text())
    assert meta["duplicates"] == [
        {
            "kept": "",
            "rejected": [str(root / "PullUps" / "mislabelled.avi"), str(root / "PushUps" / "v_PushUps_g02_c01.avi")],
        },
        {"kept": str(kept), "rejected": [str(copy), str(root / "Punch" / "v_Punch_g04_c02.avi")]},
    ]
    again = prepare(str(root), "--run", str(run))
    assert "up to date" in again.output and "duplicate: kept Punch/v_Punch_g01_c01.avi" in again.output


def test_odd_files_are_each_rejected_with_the_reason_and_the_fix(tmp_path: Path) -> None:
    root = ucf_tree(tmp_path / "data", groups=3)
    rng = np.random.default_rng(5)
    write_video(root / "Punch" / "one_frame.avi", rng.integers(0, 256, (1, 24, 32, 3), dtype=np.uint8), 25, "mjpeg")
    rotated_video(root / "PullUps" / "phone.mp4", 90)
    write_video(
        root / "PushUps" / "takes" / "nested.avi",
        rng.integers(0, 256, (MIN_FRAMES, 24, 32, 3), dtype=np.uint8),
        25,
        "mjpeg",
    )
    (root / "Punch" / "gone.avi").symlink_to(root / "Punch" / "deleted.avi")
    write_video(root / "loose.avi", rng.integers(0, 256, (MIN_FRAMES, 24, 32, 3), dtype=np.uint8), 25, "mjpeg")
    run = tmp_path / "run"
    result = prepare(str(root), "--run", str(run))
    assert result.exit_code == 0, result.output
    assert "9 videos in 3 classes" in result.output and "5 rejected" in result.output

    reasons = rejected_reasons(run, root)
    assert set(reasons) == {
        "Punch/one_frame.avi",
        "PullUps/phone.mp4",
        "PushUps/takes/nested.avi",
        "Punch/gone.avi",
        "loose.avi",
    }
    assert reasons["Punch/one_frame.avi"].startswith(f"too few frames: 1 frame(s), at least {MIN_FRAMES}")
    assert reasons["PullUps/phone.mp4"].startswith(
        "rotation metadata: the file asks players to rotate its frames by 90 degrees"
    )
    assert f"ffmpeg -i {root / 'PullUps' / 'phone.mp4'} -c:v libx264" in reasons["PullUps/phone.mp4"]
    assert reasons["PushUps/takes/nested.avi"].startswith("video in a nested folder (PushUps/takes/nested.avi)")
    assert f"move it into {root / 'PushUps'}/" in reasons["PushUps/takes/nested.avi"]
    assert reasons["Punch/gone.avi"] == (
        f"dangling symbolic link: its target {root / 'Punch' / 'deleted.avi'} does not exist; fix or remove the link"
    )
    assert reasons["loose.avi"].startswith("video outside a class folder")

    # Fixing a skipped file is a change of the inputs: prepare runs again instead of "up to date".
    (root / "Punch" / "gone.avi").unlink()
    again = prepare(str(root), "--run", str(run))
    assert "up to date" not in again.output and "4 rejected" in again.output


def test_videos_with_non_square_pixels_are_named_with_the_fix(tmp_path: Path) -> None:
    """Kept (their frames are used as stored), but named in a warning, in run.json and again when the
    run is up to date; the suggested ffmpeg command writes a square-pixel copy."""
    root = ucf_tree(tmp_path / "data", groups=3)
    dvd = anamorphic_video(root / "Punch" / "v_Punch_g01_c02.mp4")
    run = tmp_path / "run"
    for attempt in ("first", "up to date"):
        result = prepare(str(root), "--run", str(run))
        assert result.exit_code == 0, result.output
        assert "10 videos in 3 classes" in result.output, attempt
        warning = next(line for line in result.output.splitlines() if "non-square pixels" in line)
        assert "WARNING 1 video(s) have non-square pixels: Punch/v_Punch_g01_c02.mp4 (1.19:1)" in warning
        assert "players scale the width by up to 1.19x" in warning and SQUARE_PIXELS_COMMAND in warning
    assert json.loads((run / "run.json").read_text())["non_square_pixels"] == {str(dvd): pytest.approx(32 / 27)}
    if shutil.which("ffmpeg"):
        square = tmp_path / "square.mp4"
        command = shlex.split(SQUARE_PIXELS_COMMAND.replace("IN", str(dvd)).replace("OUT.mp4", str(square)))
        subprocess.run(command, check=True, capture_output=True)
        probe = probe_video(square)
        assert probe.ok and probe.pixel_aspect == 1.0 and (probe.width, probe.height) == (74, 48)


def test_videos_in_every_common_container_are_read(tmp_path: Path) -> None:
    """A DVD's MPEG-2 program stream (.vob), a camcorder's transport stream (.mts), Flash video and
    Windows Media: each is found, passes pre-flight and is indexed for seeking, none left out unsaid."""
    root = ucf_tree(tmp_path / "data", groups=4)
    frames = moving_frames(24)
    write_program_stream(root / "Punch" / "v_Punch_g05_c01.vob", frames, {"g": "8", "bf": "2"})
    h264 = tmp_path / "h264.mp4"
    write_video(h264, frames, 25, "h264", options={"g": "8"})
    remux(h264, root / "PullUps" / "v_PullUps_g05_c01.mts", "mpegts")
    remux(h264, root / "PushUps" / "v_PushUps_g05_c01.flv", "flv")
    with av.open(str(root / "PushUps" / "v_PushUps_g05_c02.wmv"), "w", format="asf") as container:
        stream = container.add_stream("wmv2", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    run = tmp_path / "run"
    result = prepare(str(root), "--run", str(run))
    assert result.exit_code == 0, result.output
    assert "16 videos in 3 classes" in result.output
    assert rejected_reasons(run, root) == {}
    codecs = {Path(row.path).suffix: row.codec for row in read_videos_csv(run / "videos.csv")}
    assert codecs == {".avi": "mjpeg", ".vob": "mpeg2video", ".mts": "h264", ".flv": "h264", ".wmv": "wmv2"}
    indexes = load_keyframe_indexes(run / "keyframes.npz")
    assert all(index.keyframes.size > 1 for path, (_, index) in indexes.items() if not path.endswith(".avi"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_demo_plus_files_with_other_names_splits_with_every_seed(tmp_path: Path, seed: int) -> None:
    # Issue 14: 6 UCF groups shared by the classes plus 8 files with other names (one group each)
    # failed with "whole-group split leaves a class out of a split" for seeds 0-2.
    root = ucf_tree(tmp_path / "data", groups=6)
    rng = np.random.default_rng(9)
    for k in range(8):
        frames = rng.integers(0, 256, (MIN_FRAMES, 24, 32, 3), dtype=np.uint8)
        write_video(root / "PullUps" / f"my_clip_{k}.avi", frames, fps=25, codec="mjpeg")
    run = tmp_path / "run"
    result = prepare(str(root), "--run", str(run), "--seed", str(seed))
    assert result.exit_code == 0, result.output
    records = read_videos_csv(run / "videos.csv")
    assert {(r.class_name, r.split) for r in records} == {(c, s) for c in CLASSES for s in ("train", "val", "test")}
    split_of_group: dict[str, set[str]] = {}
    for r in records:
        split_of_group.setdefault(r.group, set()).add(r.split)
    assert all(len(s) == 1 for s in split_of_group.values())


def test_no_possible_split_names_the_classes_and_what_to_change(tmp_path: Path) -> None:
    # Every class has 3 groups, but the shared group numbers cannot give each split every class:
    # PullUps is in g01, g02, g03; Punch in g01, g02, g04; PushUps in g01, g03, g04.
    rng = np.random.default_rng(3)
    root = tmp_path / "data"
    for class_name, groups in (("PullUps", (1, 2, 3)), ("Punch", (1, 2, 4)), ("PushUps", (1, 3, 4))):
        for group in groups:
            frames = rng.integers(0, 256, (MIN_FRAMES, 24, 32, 3), dtype=np.uint8)
            write_video(root / class_name / f"v_{class_name}_g{group:02d}_c01.avi", frames, fps=25, codec="mjpeg")
    result = CliRunner().invoke(main, ["--device", "cpu", "prepare", str(root), "--run", str(tmp_path / "run")])
    assert result.exit_code == 1
    (line,) = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert "no whole-group split puts every class in train/val/test" in line
    assert "Punch is in 3 groups (g01, g02, g04)" in line and "another --seed does not help" in line
    assert "--classes" in line
