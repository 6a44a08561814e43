"""A tiny generated dataset for the deep-model tests: real encoded videos and a videos.csv.

Each class is a square moving in its own direction over a noisy background in its own tint, so a
tiny CNN learns it within a few steps. Groups are disjoint between splits, like the real index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.data.records import VideoRecord, write_videos_csv
from pipelines.video.codecs import write_video
from workflow.profiles import PROFILES

CLASSES = ("Left", "Right", "Down")
SPLIT_GROUPS = {"train": (0, 1, 2, 3), "val": (4,), "test": (5, 6)}
DIRECTIONS = {"Left": (-1, 0), "Right": (1, 0), "Down": (0, 1)}
TINTS = {"Left": (200, 60, 60), "Right": (60, 200, 60), "Down": (60, 60, 200)}


def render(class_name: str, seed: int, frames: int = 12, width: int = 48, height: int = 36) -> np.ndarray:
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 60, size=(frames, height, width, 3), dtype=np.uint8)
    dx, dy = DIRECTIONS[class_name]
    x0, y0 = rng.integers(10, 20), rng.integers(8, 14)
    for t in range(frames):
        x, y = (x0 + 2 * dx * t) % (width - 8), (y0 + 2 * dy * t) % (height - 8)
        video[t, y : y + 8, x : x + 8] = TINTS[class_name]
    return video


def make_run(root: Path, clips_per_group: int = 1, codec: str = "mjpeg") -> Path:
    """Write videos under root/data and root/run/videos.csv; return the run directory."""
    records = []
    for label, class_name in enumerate(CLASSES):
        for split, groups in SPLIT_GROUPS.items():
            for group in groups:
                for clip in range(clips_per_group):
                    video_id = f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}"
                    path = root / "data" / f"{video_id}.avi"
                    frames = render(class_name, seed=label * 1000 + group * 10 + clip)
                    write_video(path, frames, fps=25.0, codec=codec)
                    records.append(
                        VideoRecord(
                            video_id=video_id,
                            path=str(path),
                            class_name=class_name,
                            label=label,
                            group=f"{class_name}_g{group:02d}",
                            split=split,
                            codec=codec,
                            frames=len(frames),
                            fps=25.0,
                            width=frames.shape[2],
                            height=frames.shape[1],
                        )
                    )
    run_dir = root / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_videos_csv(run_dir / "videos.csv", records)
    return run_dir


# Sizes below the tiny profile's 32 px: the deep tests train several times.
TEST_SIZE = {"cnn2d": 24, "cnn3d": 16}


def tiny_config(model: str, **overrides):
    """The ``tiny`` profile with ``overrides``."""

    return PROFILES["tiny"].deep_config(model, **overrides)


def records_and_loaders(run_dir: Path, config, backend):
    """The run's records and its train/val/test clip loaders for ``config`` (one process)."""
    from core.distributed import DistContext
    from models.deep.build import make_loaders
    from pipelines.data.records import read_videos_csv

    records = read_videos_csv(run_dir / "videos.csv")
    return records, make_loaders(records, config, backend, DistContext(), run_dir)
