"""The loader benchmark runs end to end on a few tiny videos and writes its JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.backend import resolve_backend
from core.runfiles import read_json
from pipelines.video.codecs import write_video
from workflow.bench.loader import LoaderTiming, bench_loader, median_pass, scan_videos
from workflow.bench.peers import check_peers


def test_bench_loader_writes_json_and_leaves_other_folders_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for name, codec in [("Jump/v_Jump_g01_c01", "vp9"), ("Run/v_Run_g01_c01", "mpeg4"), ("Run/v_Run_g02_c01", "h264")]:
        ext = {"vp9": ".webm", "mpeg4": ".avi", "h264": ".mp4"}[codec]
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(data / f"{name}{ext}", rng.integers(0, 255, (10, 24, 32, 3), dtype=np.uint8), 25, codec)
    records = scan_videos(data)
    assert [(r.class_name, r.label, r.codec, r.frames) for r in records] == [
        ("Jump", 0, "vp9", 10),
        ("Run", 1, "mpeg4", 10),
        ("Run", 1, "h264", 10),
    ]
    out = tmp_path / "bench"
    # A folder of the user's where the benchmark used to put (and first delete) its cache.
    (out / "loader-cache").mkdir(parents=True)
    (out / "loader-cache" / "notes.txt").write_text("mine")
    result = bench_loader(
        data, resolve_backend("cpu"), frames=4, size=16, mode="train", batch_size=2, out=out, repeat=2
    )
    assert (out / "loader-cache" / "notes.txt").read_text() == "mine"
    assert sorted(path.name for path in out.iterdir()) == ["loader-cache", "loader.json"]  # its own cache is gone
    saved = read_json(out / "loader.json")
    assert [(t["loader"], t["cache"]) for t in saved["timings"]] == [
        ("reference", "off"),
        ("project", "off"),
        ("project", "cold"),
        ("project", "warm"),
    ]
    assert all(t["clips"] == 3 and t["clips_per_s"] > 0 for t in saved["timings"])
    # Two rounds: every loader timed twice, the faster pass of two reported (the lower middle one).
    assert saved["repeat"] == 2
    assert all(len(t["pass_seconds"]) == 2 and t["seconds"] == min(t["pass_seconds"]) for t in saved["timings"])
    assert saved["cache_size_bytes"] > 0 and saved["spec"]["layout"] == "BTCHW"
    assert "reference" in result.table()
    project = saved["timings"][1]
    # The MPEG-4 and H.264 videos go through PyAV (the VP9 one through DALI): counted, none sequential.
    assert project["decode_counts"]["clips_decoded"] == 2 and project["decode_counts"]["sequential_fallbacks"] == 0
    assert project["frames_decoded_per_clip"] > 0


def test_bench_loader_times_the_peers_on_the_same_clips(tmp_path: Path) -> None:
    pytest.importorskip("torchcodec")
    pytest.importorskip("decord")
    data = tmp_path / "data"
    rng = np.random.default_rng(1)
    for name in ("Jump/v_Jump_g01_c01", "Run/v_Run_g01_c01"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        write_video(data / f"{name}.mp4", rng.integers(0, 255, (12, 24, 32, 3), dtype=np.uint8), 25, "h264")
    result = bench_loader(
        data,
        resolve_backend("cpu"),
        frames=4,
        cache=False,
        batch_size=2,
        out=tmp_path,
        peers=["torchcodec", "decord"],
        repeat=1,
    )
    assert [t.loader for t in result.timings] == ["reference", "project", "torchcodec", "decord"]
    assert all(t.clips == 2 for t in result.timings)
    assert result.vs_fastest_peer is not None and result.vs_fastest_peer > 0
    assert len(result.vs_fastest_peer_per_round) == 1
    assert read_json(tmp_path / "loader.json")["peers"] == ["torchcodec", "decord"]


def test_an_unknown_peer_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown peer 'pyav'; choose from torchcodec, decord"):
        check_peers(["pyav"])


def test_the_median_pass_is_reported_with_every_pass() -> None:
    passes = [
        LoaderTiming("project", "off", 10, 160, seconds, 10 / seconds, 160 / seconds, 100 * seconds, cpu)
        for seconds, cpu in [(0.9, 9.0), (0.5, 5.0), (0.7, 7.0)]
    ]
    median = median_pass(passes)
    assert (median.seconds, median.cpu_ms_per_clip) == (0.7, 7.0)  # one pass's numbers, not a mix
    assert median.pass_seconds == [0.9, 0.5, 0.7]  # in round order
