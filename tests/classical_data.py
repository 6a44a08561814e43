"""A small real feature matrix for the classical-model tests: generated videos -> features.npz.

Demo clips (pipelines.demo, easy difficulty, 64x48, under a second) are indexed into a
videos.csv with whole groups per split, and the features stage (pipelines.features.store) turns
them into ``RUN_DIR/features.npz`` on the CPU with a reduced kernel spec.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipelines.data.records import VideoRecord, write_videos_csv

SPLIT_OF_GROUP = {1: "train", 2: "train", 3: "train", 4: "train", 5: "train", 6: "val", 7: "test", 8: "test"}
CLIPS_PER_GROUP = 2
FPS = 25.0


def small_spec():  # type: ignore[no-untyped-def]
    from pipelines.features.kernel import FeatureSpec

    return FeatureSpec(frames=8, size=32, grid=2)


def make_feature_run(root: Path) -> Path:
    """Generate the videos, write videos.csv and features.npz under ``root``; return the run dir."""
    from core.backend import resolve_backend
    from pipelines.demo import DemoConfig, clip_path, generate_demo_dataset
    from pipelines.features.store import extract_features
    from pipelines.video.codecs import read_frames

    config = DemoConfig(
        groups=len(SPLIT_OF_GROUP),
        clips_per_group=CLIPS_PER_GROUP,
        size=(64, 48),
        fps=FPS,
        seconds=(0.8, 0.8),
        difficulty="easy",
        codec="mjpeg",
    )
    data = root / "data"
    generate_demo_dataset(data, config, progress=False, workers=1)
    records = []
    for label, class_name in enumerate(config.classes):
        for group, split in SPLIT_OF_GROUP.items():
            for clip in range(1, CLIPS_PER_GROUP + 1):
                path = clip_path(data, class_name, group, clip, config.codec)
                frames = read_frames(path)
                records.append(
                    VideoRecord(
                        video_id=f"{class_name}/{path.stem}",
                        path=str(path),
                        class_name=class_name,
                        label=label,
                        group=f"{class_name}_g{group:02d}",
                        split=split,
                        codec=config.codec,
                        frames=int(frames.shape[0]),
                        fps=FPS,
                        width=int(frames.shape[2]),
                        height=int(frames.shape[1]),
                    )
                )
    run_dir = root / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    write_videos_csv(run_dir / "videos.csv", records)
    extract_features(run_dir, resolve_backend("cpu"), progress=False, spec=small_spec())
    return run_dir


def synthetic_features(
    n_per_group: int = 4,
    groups_per_class: int = 8,
    n_classes: int = 3,
    n_features: int = 12,
    separation: float = 3.0,
    seed: int = 0,
):  # type: ignore[no-untyped-def]
    """An easy, well-separated FeatureSet (Gaussian blobs) with UCF-style per-class groups."""
    from pipelines.features.store import FeatureSet

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, separation, size=(n_classes, n_features))
    split_of = {
        g: "train" if g < groups_per_class - 3 else "val" if g == groups_per_class - 3 else "test"
        for g in range(groups_per_class)
    }
    rows, labels, groups, splits, ids = [], [], [], [], []
    for label in range(n_classes):
        for group in range(groups_per_class):
            offset = rng.normal(0, 0.3, n_features)  # a group shares an actor/scene: correlated rows
            for clip in range(n_per_group):
                rows.append(centres[label] + offset + rng.normal(0, 1.0, n_features))
                labels.append(label)
                groups.append(f"C{label}_g{group:02d}")
                splits.append(split_of[group])
                ids.append(f"C{label}/v_C{label}_g{group:02d}_c{clip:02d}")
    return FeatureSet(
        X=np.asarray(rows, dtype=np.float32),
        feature_names=np.array([f"f{i}" for i in range(n_features)]),
        feature_groups=np.array(["motion"] * n_features),
        video_ids=np.array(ids),
        labels=np.asarray(labels, dtype=np.int64),
        splits=np.array(splits),
        groups=np.array(groups),
        class_names=np.array([f"C{i}" for i in range(n_classes)]),
        fingerprint=f"synthetic-{seed}-{separation}",
    )


_RUNS: dict[str, Path] = {}


def shared_feature_run(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """One generated run per test session (its videos and features.npz are only read)."""
    if "run" not in _RUNS:
        _RUNS["run"] = make_feature_run(tmp_path_factory.mktemp("classical_videos"))
    return _RUNS["run"]
