"""The loader benchmark runs end to end on a few tiny videos and writes its JSON."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.backend import resolve_backend
from core.runfiles import read_json
from pipelines.video.codecs import write_video
from workflow.bench.loader import bench_loader, scan_videos


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
    result = bench_loader(data, resolve_backend("cpu"), frames=4, size=16, mode="train", batch_size=2, out=out)
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
    assert saved["cache_size_bytes"] > 0 and saved["spec"]["layout"] == "BTCHW"
    assert "reference" in result.table()
