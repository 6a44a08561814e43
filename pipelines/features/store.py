"""The ``features`` stage: every video in ``videos.csv`` -> one row of ``RUN_DIR/features.npz``.

Clips come from the evaluation loader (layout ``BTHWC``, uint8, no normalisation) on the
backend's decode device; the kernel (:mod:`pipelines.features.kernel`) runs on ``backend.xp()``, so on a
GPU the frames go from DALI to CuPy by DLPack and only the feature rows come back to the host.

Each clip is ``spec.frames`` frames a fixed ``stride`` apart (:func:`feature_stride`: longer
videos get a longer step, up to ``spec.max_stride``), centred in the video; videos are grouped by
stride, one loader per group. Frequencies are in Hz (``fps / stride`` samples per second). The
clip spans at most ``(frames - 1) * max_stride + 1`` frames whatever the video's length, and the
loader seeks to it (:func:`pipelines.video.decode.decode_at`, with the run's keyframe index), so a
long video costs no more to featurise than a short one with the same keyframe spacing.

The file carries the :class:`FeatureSpec` it was computed with (JSON, ``FeatureSet.spec``) and a
fingerprint of ``videos.csv``, its video files (path, size, mtime), that spec and the kernel
version; a rerun with the same inputs loads it instead of recomputing (a file from before the
spec was stored is recomputed; so is a video re-encoded in place). Videos that fail to decode
are listed in ``rejected.csv`` (stage ``features``) and left out of the matrix.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from core.backend import Backend
from core.console import progress_bar
from core.runfiles import RunPaths, atomic_path, fingerprint
from pipelines.data.keyframes import KeyframeIndexes
from pipelines.data.records import VideoRecord, class_names, index_fingerprint, read_videos_csv
from pipelines.features.kernel import (
    KERNEL_VERSION,
    FeatureSpec,
    compute_features,
    feature_groups,
    feature_names,
    feature_stride,
)
from pipelines.video.clips import ClipSpec
from pipelines.video.loader import make_clip_loader

STAGE = "features"
BATCH_SIZE = 8
DEFAULT_FPS = 25.0  # only used when videos.csv has no usable frame rate for a video


@dataclass
class FeatureSet:
    """The feature matrix of a run with everything needed to train and explain models on it."""

    X: np.ndarray  # (N, F) float32
    feature_names: np.ndarray  # (F,) str
    feature_groups: np.ndarray  # (F,) str: motion | appearance | colour | temporal
    video_ids: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    splits: np.ndarray  # (N,) str: train | val | test
    groups: np.ndarray  # (N,) str
    class_names: np.ndarray  # (C,) str, indexed by label
    fingerprint: str
    # The kernel settings the matrix was computed with (stored in the file); None only for
    # matrices made by hand (synthetic data in tests), never for files of the `features` stage.
    spec: FeatureSpec | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def mask(self, split: str) -> np.ndarray:
        """Boolean row mask of one split."""
        return self.splits == split

    def summary(self) -> str:
        groups = ", ".join(
            f"{g} {int(n)}" for g, n in zip(*np.unique(self.feature_groups, return_counts=True), strict=True)
        )
        splits = ", ".join(f"{s} {int(n)}" for s, n in zip(*np.unique(self.splits, return_counts=True), strict=True))
        return f"{len(self)} videos x {self.X.shape[1]} features ({groups}); {splits}"


def save_features(path: str | os.PathLike[str], features: FeatureSet) -> None:
    """Write ``features`` to an ``.npz`` file atomically (never a half-written file)."""
    arrays: dict[str, Any] = {}
    for item in fields(FeatureSet):
        if item.name != "spec":
            value = getattr(features, item.name)
            arrays[item.name] = np.asarray(value) if item.name != "fingerprint" else np.array(value)
    arrays["spec"] = np.array(spec_to_json(features.spec))
    arrays["X"] = arrays["X"].astype(np.float32)
    arrays["labels"] = arrays["labels"].astype(np.int64)
    for name in ("feature_names", "feature_groups", "video_ids", "splits", "groups", "class_names"):
        arrays[name] = arrays[name].astype(str)
    with atomic_path(path) as tmp:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def spec_to_json(spec: FeatureSpec | None) -> str:
    """The JSON text stored in ``features.npz`` for ``spec`` ("" for a hand-made matrix)."""
    return "" if spec is None else json.dumps(spec.to_dict(), sort_keys=True)


def spec_from_json(text: str) -> FeatureSpec | None:
    """Inverse of :func:`spec_to_json`; raises ``ValueError`` on settings this version lacks."""
    if not text:
        return None
    try:
        return FeatureSpec(**json.loads(text))
    except (TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable feature settings {text!r}: {exc}") from exc


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read a file written by :func:`save_features`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run `python cli.py features --run {path.parent}` first")
    fix = f"rerun `python cli.py features --run {path.parent} --force`"
    with np.load(path, allow_pickle=False) as data:
        missing = {item.name for item in fields(FeatureSet)} - set(data.files)
        if missing == {"spec"}:
            raise ValueError(
                f"{path} was written by an older version without its feature settings (FeatureSpec); {fix}"
            )
        if missing:
            raise ValueError(f"{path}: missing arrays {sorted(missing)}; {fix}")
        values = {item.name: data[item.name] for item in fields(FeatureSet)}
    values["fingerprint"] = str(values["fingerprint"])
    try:
        values["spec"] = spec_from_json(str(values["spec"]))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}; {fix}") from exc
    return FeatureSet(**values)


def features_fingerprint(videos_csv: str | os.PathLike[str], spec: FeatureSpec) -> str:
    """What the matrix depends on: the index and its video files (:func:`~pipelines.data.records.index_fingerprint`;
    a re-encoded file with the same videos.csv row counts as changed), the kernel settings and its version."""
    return fingerprint(index_fingerprint(read_videos_csv(videos_csv)), spec.to_dict(), KERNEL_VERSION)


def feature_clip_spec(spec: FeatureSpec, stride: int) -> Any:
    """The evaluation clip the kernel reads: centred window, short side resized to ``spec.size``."""

    return ClipSpec(
        frames=spec.frames,
        size=spec.size,
        sampling="window",
        stride=stride,
        mode="eval",
        test_clips=1,
        layout="BTHWC",
        resize_short=spec.size,
    )


def to_numpy(array: Any) -> np.ndarray:
    """A host NumPy copy of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else np.asarray(array)


def sample_rate(record: VideoRecord, stride: int) -> float:
    """Sampled frames per second of the feature clip of ``record``."""
    fps = record.fps if record.fps and record.fps > 0 else DEFAULT_FPS
    return float(fps) / stride


@dataclass
class FeatureBatch:
    """Features of one loader batch, with the seconds the kernel took (synchronised on a GPU)."""

    video_ids: list[str]
    features: Any  # (B, F) array of backend.xp(), None when not computed
    clips: Any  # the batch's clips (B, T, H, W, 3) uint8, of backend.xp()
    sample_rate: list[float]  # sampled frames per second of each clip
    kernel_seconds: float


def iter_feature_batches(
    records: Sequence[VideoRecord],
    backend: Backend,
    spec: FeatureSpec,
    *,
    run_dir: str | os.PathLike[str] | None = None,
    batch_size: int = BATCH_SIZE,
    compute: bool = True,
    rejected: list[Any] | None = None,
    keyframes: KeyframeIndexes | None = None,
    decode_counts: list[dict[str, float]] | None = None,
) -> Iterator[FeatureBatch]:
    """Decode ``records`` with the evaluation loader (one loader per stride) and, with
    ``compute``, run the kernel on each batch. Rejected videos are appended to ``rejected``, each
    loader's :meth:`~pipelines.video.loader.ClipLoader.decode_counts` to ``decode_counts``.
    ``keyframes``: the videos' keyframe indexes (default: the run's ``keyframes.npz``)."""
    import time

    xp = backend.xp()
    if keyframes is None:
        keyframes = KeyframeIndexes(RunPaths(run_dir).keyframes_npz if run_dir is not None else None)
    by_stride: dict[int, list[VideoRecord]] = {}
    for record in records:
        by_stride.setdefault(feature_stride(record.frames, spec), []).append(record)
    for stride, group in sorted(by_stride.items()):
        rates = {record.video_id: sample_rate(record, stride) for record in group}
        loader = make_clip_loader(
            group,
            feature_clip_spec(spec, stride),
            backend,
            batch_size=batch_size,
            shuffle=False,
            run_dir=run_dir,
            stage=STAGE,
            keyframes=keyframes,
        )
        for batch in loader:
            batch_rates = [rates[v] for v in batch.video_ids]
            features = None
            seconds = 0.0
            if compute:
                start = time.perf_counter()
                features = compute_features(batch.clips, xp, spec, sample_rate=batch_rates)
                synchronize(xp)
                seconds = time.perf_counter() - start
            yield FeatureBatch(list(batch.video_ids), features, batch.clips, batch_rates, seconds)
        if rejected is not None:
            rejected.extend(loader.rejected)
        if decode_counts is not None:
            decode_counts.append(loader.decode_counts())


def synchronize(xp: Any) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.get_current_stream().synchronize()


def extract_features(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    *,
    progress: bool = True,
    force: bool = False,
    spec: FeatureSpec | None = None,
    batch_size: int = BATCH_SIZE,
    rejected: list[Any] | None = None,
) -> FeatureSet:
    """Compute (or load, when up to date) ``RUN_DIR/features.npz`` for every video of ``videos.csv``.

    Videos that failed to decode in this call (none when the file was up to date) are appended
    to ``rejected`` (:class:`pipelines.video.loader.RejectedVideo`), as well as to ``rejected.csv``.
    """
    spec = spec or FeatureSpec()
    paths = RunPaths(run_dir)
    if not paths.videos_csv.exists():
        raise FileNotFoundError(
            f"{paths.videos_csv} not found; run `python cli.py prepare DATA_ROOT --run {run_dir}` first"
        )
    records = read_videos_csv(paths.videos_csv)
    if not records:
        raise ValueError(f"{paths.videos_csv} lists no videos; rerun `python cli.py prepare` on a folder with videos")
    expected = features_fingerprint(paths.videos_csv, spec)
    if not force and paths.features_npz.exists():
        try:
            existing = load_features(paths.features_npz)
        except (ValueError, OSError):
            existing = None
        if existing is not None and existing.fingerprint == expected and existing.spec == spec:
            return existing

    rows: dict[str, np.ndarray] = {}
    skipped: list[Any] = []
    with progress_bar(total=len(records), desc="features", unit="video", enabled=progress) as bar:
        for batch in iter_feature_batches(
            records, backend, spec, run_dir=run_dir, batch_size=batch_size, rejected=skipped
        ):
            rows.update(zip(batch.video_ids, to_numpy(batch.features), strict=True))
            bar.update(len(batch.video_ids))
        bar.update(len(records) - bar.n)
    if rejected is not None:
        rejected.extend(skipped)
    kept = [record for record in records if record.video_id in rows]
    if not kept:
        raise ValueError(f"no video of {paths.videos_csv} could be decoded; see {paths.rejected_csv}")
    features = FeatureSet(
        X=np.stack([rows[record.video_id] for record in kept]).astype(np.float32),
        feature_names=np.array(feature_names(spec)),
        feature_groups=np.array(feature_groups(spec)),
        video_ids=np.array([record.video_id for record in kept]),
        labels=np.array([record.label for record in kept], dtype=np.int64),
        splits=np.array([record.split for record in kept]),
        groups=np.array([record.group for record in kept]),
        class_names=np.array(class_names(records)),
        fingerprint=expected,
        spec=spec,
    )
    save_features(paths.features_npz, features)
    return features
