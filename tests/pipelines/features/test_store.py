"""features.npz round trip and the `features` stage end to end on real encoded videos."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from core.backend import resolve_backend
from core.runfiles import read_rejected
from pipelines.data.records import VideoRecord, read_videos_csv, write_videos_csv
from pipelines.features.kernel import FeatureSpec, feature_groups, feature_names
from pipelines.features.store import (
    FeatureSet,
    clip_stride,
    extract_features,
    iter_feature_batches,
    load_features,
    save_features,
    with_splits,
)
from pipelines.video.codecs import codec_extension, write_video

SPEC = FeatureSpec(frames=12, size=32)
FPS = 24.0


def make_clip(kind: str, frames: int = 24) -> np.ndarray:
    """64x48 px: a static scene, or a bar moving up and down / left and right."""
    clip = np.full((frames, 48, 64, 3), 50, np.uint8)
    clip[:, 30:, :] = (60, 120, 60)
    for t in range(frames):
        offset = 0 if kind == "static" else int(round(8 * np.sin(2 * np.pi * 2 * t / frames)))
        if kind == "horizontal":
            clip[t, 14:34, 27 + offset : 37 + offset] = (230, 70, 40)
        else:
            clip[t, 19 + offset : 29 + offset, 22:42] = (230, 70, 40)
    return clip


def write_run(root: Path) -> Path:
    videos = [("Vertical", "static", "vp9"), ("Vertical", "vertical", "vp9"), ("Horizontal", "horizontal", "mpeg4")]
    records = []
    for index, (class_name, kind, codec) in enumerate(videos):
        path = root / "videos" / class_name / f"{class_name}_{index}{codec_extension(codec)}"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_video(path, make_clip(kind), FPS, codec)
        label = 0 if class_name == "Horizontal" else 1
        records.append(
            VideoRecord(
                f"{class_name}/{path.stem}", str(path), class_name, label, f"g{index}", "train", codec, 24, FPS, 64, 48
            )
        )
    broken = root / "videos" / "Vertical" / "broken.webm"
    broken.write_bytes(b"not a video" * 50)
    records.append(VideoRecord("Vertical/broken", str(broken), "Vertical", 1, "g9", "test", "vp9", 24, FPS, 64, 48))
    run_dir = root / "run"
    write_videos_csv(run_dir / "videos.csv", records)
    return run_dir


def test_npz_round_trip(tmp_path):
    names = feature_names(SPEC)
    features = FeatureSet(
        X=np.random.default_rng(0).random((3, len(names))).astype(np.float32),
        feature_names=np.array(names),
        feature_groups=np.array(feature_groups(SPEC)),
        video_ids=np.array(["a/1", "a/2", "b/1"]),
        labels=np.array([0, 0, 1], np.int64),
        splits=np.array(["train", "val", "test"]),
        groups=np.array(["g1", "g2", "g1"]),
        class_names=np.array(["a", "b"]),
        fingerprint="abc123",
        spec=SPEC,
    )
    path = tmp_path / "features.npz"
    save_features(path, features)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.npz"]  # no temporary file left
    loaded = load_features(path)
    for name in ("X", "feature_names", "feature_groups", "video_ids", "labels", "splits", "groups", "class_names"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(features, name))
    assert loaded.X.dtype == np.float32 and loaded.labels.dtype == np.int64
    assert loaded.fingerprint == "abc123"
    assert loaded.spec == SPEC and isinstance(loaded.spec, FeatureSpec)
    # A hand-made matrix (no kernel settings) round-trips with spec None.
    features.spec = None
    save_features(path, features)
    assert load_features(path).spec is None


def test_with_splits_reuses_the_matrix_under_an_outer_fold_s_splits():
    names = feature_names(SPEC)
    features = FeatureSet(
        X=np.arange(3 * len(names), dtype=np.float32).reshape(3, len(names)),
        feature_names=np.array(names),
        feature_groups=np.array(feature_groups(SPEC)),
        video_ids=np.array(["a/1", "a/2", "b/1"]),
        labels=np.array([0, 0, 1], np.int64),
        splits=np.array(["train", "val", "test"]),
        groups=np.array(["g1", "g2", "g1"]),
        class_names=np.array(["a", "b"]),
        fingerprint="run",
        spec=SPEC,
    )
    fold = with_splits(features, {"b/1": "train", "a/1": "test", "a/2": "train", "c/9": "val"}, "fold1")
    assert fold.splits.tolist() == ["test", "train", "train"] and fold.fingerprint == "fold1"
    assert fold.X is features.X and fold.spec == SPEC and fold.video_ids.tolist() == ["a/1", "a/2", "b/1"]
    assert features.splits.tolist() == ["train", "val", "test"] and features.fingerprint == "run"  # untouched
    with pytest.raises(ValueError, match="no split given for 1 video.*b/1"):
        with_splits(features, {"a/1": "test", "a/2": "train"}, "fold1")


def test_old_file_without_the_spec_names_the_file_and_the_fix(tmp_path):
    run_dir = write_run(tmp_path)
    backend = resolve_backend("cpu")
    extract_features(run_dir, backend, progress=False, spec=SPEC)
    npz = run_dir / "features.npz"
    with np.load(npz) as data:
        old = {name: data[name] for name in data.files if name != "spec"}
    with open(npz, "wb") as handle:
        np.savez(handle, **old)
    with pytest.raises(ValueError, match="older version") as error:
        load_features(npz)
    assert str(npz) in str(error.value) and f"cli.py features --run {run_dir}`" in str(error.value)
    # A plain rerun replaces the old file (no --force needed) and stores the spec.
    again = extract_features(run_dir, backend, progress=False, spec=SPEC)
    assert again.spec == SPEC and load_features(npz).spec == SPEC


def test_load_features_names_the_fix_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="cli.py features"):
        load_features(tmp_path / "features.npz")


def test_extract_features_end_to_end(tmp_path):
    run_dir = write_run(tmp_path)
    backend = resolve_backend("cpu")
    rejected = []
    features = extract_features(run_dir, backend, progress=False, spec=SPEC, rejected=rejected)

    # The broken file is rejected and excluded; the others keep videos.csv order.
    assert [item.video_id for item in rejected] == ["Vertical/broken"]
    assert list(features.video_ids) == [r.video_id for r in read_videos_csv(run_dir / "videos.csv")][:3]
    assert [row["stage"] for row in read_rejected(run_dir)] == ["features"]
    assert features.X.shape == (3, len(feature_names(SPEC))) and features.X.dtype == np.float32
    assert list(features.class_names) == ["Horizontal", "Vertical"]
    assert list(features.labels) == [1, 1, 0]
    assert features.spec == SPEC

    columns = {name: i for i, name in enumerate(features.feature_names)}
    motion = features.feature_groups == "motion"
    static, vertical, horizontal = features.X
    assert np.all(static[motion] == 0.0)  # encoding noise stays under the motion threshold
    assert vertical[motion].sum() > 0 and horizontal[motion].sum() > 0
    assert vertical[columns["temporal.flow_up.std"]] > 3 * horizontal[columns["temporal.flow_up.std"]]
    assert horizontal[columns["temporal.flow_horizontal.std"]] > 3 * vertical[columns["temporal.flow_horizontal.std"]]

    # Rerun: a no-op that loads the file; force or a changed index recomputes.
    npz = run_dir / "features.npz"
    stamp = npz.stat().st_mtime_ns
    rejected.clear()
    again = extract_features(run_dir, backend, progress=False, spec=SPEC, rejected=rejected)
    assert npz.stat().st_mtime_ns == stamp and again.fingerprint == features.fingerprint
    assert again.spec == SPEC and rejected == []  # nothing decoded, nothing rejected this time
    np.testing.assert_array_equal(again.X, features.X)
    # A video re-encoded in place (same videos.csv row, new file) makes the rerun recompute.
    vertical = Path(read_videos_csv(run_dir / "videos.csv")[1].path)
    write_video(vertical, make_clip("horizontal"), FPS, "vp9")
    reencoded = extract_features(run_dir, backend, progress=False, spec=SPEC)
    assert reencoded.fingerprint != features.fingerprint and npz.stat().st_mtime_ns != stamp
    assert not np.array_equal(reencoded.X[1], features.X[1])
    np.testing.assert_array_equal(reencoded.X[[0, 2]], features.X[[0, 2]])
    stamp = npz.stat().st_mtime_ns
    os.utime(npz, ns=(stamp - 10**9, stamp - 10**9))
    extract_features(run_dir, backend, progress=False, spec=SPEC, force=True)
    assert npz.stat().st_mtime_ns != stamp - 10**9
    records = read_videos_csv(run_dir / "videos.csv")
    write_videos_csv(run_dir / "videos.csv", records[1:3])
    fewer = extract_features(run_dir, backend, progress=False, spec=SPEC)
    assert fewer.fingerprint != features.fingerprint and len(fewer) == 2


def test_extract_features_without_an_index_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="cli.py prepare"):
        extract_features(tmp_path, resolve_backend("cpu"), progress=False)


def test_cli_features_and_bench_features(tmp_path):
    import json

    from click.testing import CliRunner

    from cli import main

    run_dir = write_run(tmp_path)
    runner = CliRunner()
    result = runner.invoke(main, ["--device", "cpu", "features", "--run", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "3 videos x" in result.output and (run_dir / "features.npz").exists()
    assert f"1 video(s) rejected this run (see {run_dir / 'rejected.csv'})" in result.output

    out = tmp_path / "bench.json"
    result = runner.invoke(
        main, ["--device", "cpu", "bench", "features", str(tmp_path / "videos"), "--videos", "3", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["n_videos"] >= 2 and report["kernel_ms_per_video"] > 0 and report["decode_videos_per_s"] > 0
    # The MPEG-4 video is decoded by PyAV (the VP9 ones by DALI): counted, with the probe's index.
    counts = report["decode_counts"]
    assert counts["clips_decoded"] == 1 and counts["sequential_fallbacks"] == 0 and counts["keyframe_scans"] == 0
    assert report["frames_decoded_per_clip"] > 0

    result = runner.invoke(main, ["features", "--run", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "cli.py prepare" in result.output


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_an_unreadable_features_file_is_set_aside_and_recomputed(tmp_path, capsys, damage):
    run_dir = write_run(tmp_path)
    backend = resolve_backend("cpu")
    first = extract_features(run_dir, backend, progress=False, spec=SPEC)
    npz = run_dir / "features.npz"
    data = npz.read_bytes()
    npz.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])  # as a kill -9 or a full disk leaves it
    with pytest.raises(ValueError, match=f"{npz}: cannot be read"):
        load_features(npz)
    again = extract_features(run_dir, backend, progress=False, spec=SPEC)
    err = capsys.readouterr().err
    assert f"{npz} cannot be read (" in err and "kept as features.npz.corrupt; recomputing the features" in err
    assert (run_dir / "features.npz.corrupt").read_bytes() == (b"" if damage == "empty" else data[: len(data) // 2])
    np.testing.assert_array_equal(again.X, first.X)
    np.testing.assert_array_equal(load_features(npz).X, first.X)


def test_a_scene_filmed_at_50_fps_gets_the_features_of_25_fps(tmp_path):
    """A bar swinging at 0.8 Hz, filmed at 25 and at 50 fps: the 50 fps clip steps twice the frames,
    so its samples are the same instants and its motion, frequency and appearance features match
    the 25 fps ones (stepping the same frames would halve the motion between samples)."""
    seconds = 3.84
    records = []
    for fps in (25.0, 50.0):
        frames = int(round(seconds * fps))
        clip = np.full((frames, 48, 64, 3), 50, np.uint8)
        clip[:, 30:, :] = (60, 120, 60)
        for t in range(frames):
            offset = int(round(12 * np.sin(2 * np.pi * 0.8 * t / fps)))
            clip[t, 14:34, 27 + offset : 37 + offset] = (230, 70, 40)
        path = tmp_path / f"swing{fps:.0f}.avi"
        write_video(path, clip, fps, "mpeg4")
        records.append(
            VideoRecord(f"c/{path.stem}", str(path), "c", 0, path.stem, "test", "mpeg4", frames, fps, 64, 48)
        )
    assert [clip_stride(record, SPEC) for record in records] == [4, 8]  # 160 ms, SPEC's max_stride at 25 fps
    batches = list(iter_feature_batches(records, resolve_backend("cpu"), SPEC, batch_size=1))
    rows = {batch.video_ids[0]: (batch.features[0], batch.sample_rate[0]) for batch in batches}
    (at25, rate25), (at50, rate50) = rows["c/swing25"], rows["c/swing50"]
    assert rate25 == rate50 == 6.25
    groups = np.array(feature_groups(SPEC))
    # Relative L1 distance of the group's columns: 0.15 (motion) and 0.19 (temporal) measured, the
    # instants differing by up to half a 50 fps frame; stepping 4 frames at 50 fps gave 0.37 and 0.62.
    for group, bound in (("motion", 0.2), ("temporal", 0.3)):
        picked = groups == group
        difference = np.abs(at50[picked] - at25[picked]).sum() / np.abs(at25[picked]).sum()
        assert difference < bound, (group, difference)


def test_clip_stride_is_a_span_of_time_in_whole_frames():
    spec = FeatureSpec()  # 32 frames, steps of at most 4 frames at 25 fps (160 ms)

    def stride(frames: int, fps: float) -> int:
        return clip_stride(VideoRecord("c/v", "v.avi", "c", 0, "g", "test", "mpeg4", frames, fps, 64, 48), spec)

    assert [stride(1000, 25.0), stride(2000, 50.0), stride(1000, 30000 / 1001), stride(1000, 10.0)] == [4, 8, 5, 2]
    assert stride(80, 30000 / 1001) == 2  # 67 frames at 25 fps: 80 ms, the nearest whole step is 2 frames
    assert stride(120, 30.0) == 3  # 100 frames at 25 fps step 3 (120 ms): 4 frames would not fit 120
    assert stride(1000, 0.0) == stride(1000, float("inf")) == 4  # unknown rate: its own frames
    assert stride(10, 25.0) == 1  # a short video
