"""The ``features`` stage: every video in ``videos.csv`` -> one row of ``RUN_DIR/features.npz``.

Clips come from the evaluation loader (layout ``BTHWC``, uint8, no normalisation) on the
backend's decode device; the kernel (:mod:`pipelines.features.kernel`) runs on ``backend.xp()``, so on a
GPU the frames go from DALI to CuPy by DLPack and only the feature rows come back to the host.

Under ``torchrun`` (:func:`extract_features` with a multi-process ``context``) each rank decodes
and featurises whole batches of the single-process batch order (batch ``b`` on rank
``b % world_size``, one GPU per rank), and every rank gets all rows; rank 0 writes the file,
identical to a single-process run.

Each clip is ``spec.frames`` frames a fixed ``stride`` apart (:func:`clip_stride`: longer
videos get a longer step, up to ``spec.max_stride``, both counted in frames at 25 fps and converted
to the nearest whole step of the video's frames, so a 50 fps video's clip spans the same time as a
25 fps one's), centred in the video; videos are grouped by stride, one loader per group.
Frequencies are in Hz (``fps / stride`` samples per second). The clip spans at most
``(frames - 1) * max_stride + 1`` frames at 25 fps whatever the video's length, and the
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
import pickle
import zipfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from core import distributed as dist_utils
from core.backend import Backend
from core.console import notice, progress_bar
from core.distributed import DistContext
from core.runfiles import (
    RunPaths,
    UnreadableFileError,
    append_rejected,
    atomic_path,
    fingerprint,
    problem_text,
    set_aside,
)
from pipelines.data.keyframes import KeyframeIndexes
from pipelines.data.records import VideoRecord, class_names, index_fingerprint, read_videos_csv
from pipelines.data.video_stream import FRAMES_DEFINITION
from pipelines.features.kernel import (
    KERNEL_VERSION,
    FeatureSpec,
    compute_features,
    feature_groups,
    feature_names,
    feature_stride,
)
from pipelines.video.clips import STRIDE_FPS, ClipSpec, known_rate
from pipelines.video.decode import SHRINK_FILTER
from pipelines.video.loader import make_clip_loader
from pipelines.video.routes import DecodeStats

STAGE = "features"
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


def with_splits(features: FeatureSet, splits: Mapping[str, str], fingerprint: str) -> FeatureSet:
    """The same matrix under other splits (``splits``: video id -> split) and ``fingerprint``.

    A feature row depends on its video and the kernel settings only, never on the split, so the
    matrix of a run serves every outer fold of it (``prepare --folds``) without recomputing.
    """
    missing = [str(video_id) for video_id in features.video_ids if str(video_id) not in splits]
    if missing:
        raise ValueError(f"no split given for {len(missing)} video(s) of the feature matrix, e.g. {missing[0]}")
    new_splits = np.array([splits[str(video_id)] for video_id in features.video_ids])
    return replace(features, splits=new_splits, fingerprint=fingerprint)


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


class OutdatedFeaturesError(ValueError):
    """features.npz is readable but was written by an older version (recomputed, not set aside)."""


def _read_arrays(path: Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz`` file; :class:`UnreadableFileError` when it is not a readable
    NumPy archive (empty, truncated, overwritten), OutdatedFeaturesError when arrays are missing."""
    fix = f"rerun `python cli.py features --run {path.parent}`"
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = set(names) - set(data.files)
            if missing == {"spec"}:
                raise OutdatedFeaturesError(
                    f"{path} was written by an older version without its feature settings (FeatureSpec); {fix}"
                )
            if missing:
                raise OutdatedFeaturesError(f"{path}: missing arrays {sorted(missing)}; {fix}")
            return {name: data[name] for name in names}
    except OutdatedFeaturesError:
        raise
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, pickle.UnpicklingError) as exc:
        raise UnreadableFileError(path, f"{type(exc).__name__}: {exc}", fix) from exc


def load_features(path: str | os.PathLike[str]) -> FeatureSet:
    """Read a file written by :func:`save_features` (a ValueError naming the file and the fix when
    it cannot be used: :class:`~core.runfiles.UnreadableFileError` or :class:`OutdatedFeaturesError`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found; run `python cli.py features --run {path.parent}` first")
    fix = f"rerun `python cli.py features --run {path.parent}`"
    values: dict[str, Any] = _read_arrays(path, [item.name for item in fields(FeatureSet)])
    values["fingerprint"] = str(values["fingerprint"])
    try:
        values["spec"] = spec_from_json(str(values["spec"]))
    except ValueError as exc:  # settings of another version of the kernel
        raise OutdatedFeaturesError(f"{path}: {exc}; {fix}") from exc
    return FeatureSet(**values)


def stored_spec(path: str | os.PathLike[str]) -> FeatureSpec | None:
    """The FeatureSpec stored in a features file; None when the file is missing, unreadable, from
    an older version or made by hand (whoever reads it next names the problem)."""
    try:
        return spec_from_json(str(_read_arrays(Path(path), ["spec"])["spec"]))
    except (ValueError, OSError):
        return None


def features_fingerprint(videos_csv: str | os.PathLike[str], spec: FeatureSpec) -> str:
    """What the matrix depends on: the index and its video files (:func:`~pipelines.data.records.index_fingerprint`;
    a re-encoded file with the same videos.csv row counts as changed), the kernel settings and its version, the
    frame rate strides are counted at (:func:`clip_stride`), and the filter that shrinks decoded frames and which
    packets are frames."""
    index_id = index_fingerprint(read_videos_csv(videos_csv))
    return fingerprint(index_id, spec.to_dict(), KERNEL_VERSION, STRIDE_FPS, SHRINK_FILTER, FRAMES_DEFINITION)


def _existing_features(path: Path) -> FeatureSet | None:
    """The features in ``path``, or None after setting an unreadable file aside (or, for a file of
    an older version, saying that it is recomputed)."""
    try:
        return load_features(path)
    except UnreadableFileError as exc:
        set_aside(path, exc, redo="recomputing the features")
    except OutdatedFeaturesError:
        notice(f"{path} was written by an older version: recomputing it")
    return None


def current_features(run_dir: str | os.PathLike[str]) -> tuple[FeatureSet | None, str]:
    """``RUN_DIR/features.npz`` when it was made from the run's current index and can be read;
    else None and why, with the command that redoes it (for readers that must not use stale rows)."""
    paths = RunPaths(run_dir)
    redo = f"`python cli.py features --run {run_dir}` redoes it"
    if not paths.features_npz.is_file():
        return None, f"{paths.features_npz.name} is missing"
    try:
        features = load_features(paths.features_npz)
    except (ValueError, OSError) as exc:
        return None, f"{paths.features_npz.name} cannot be used ({problem_text(exc, paths.features_npz)})"
    if features.spec is None or not paths.videos_csv.is_file():
        return None, f"{paths.features_npz.name} cannot be checked against an index (no settings or no videos.csv)"
    if features.fingerprint != features_fingerprint(paths.videos_csv, features.spec):
        return None, f"{paths.features_npz.name} was made from another index than videos.csv and its files; {redo}"
    return features, ""


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
        stride_fps=None,  # clip_stride gives it in the video's own frames: uniform steps
    )


def clip_stride(record: VideoRecord, spec: FeatureSpec) -> int:
    """The feature clip's step in ``record``'s frames: :func:`feature_stride` of the video's length in
    frames at :data:`~pipelines.video.clips.STRIDE_FPS` (so the step and ``max_stride`` are spans of
    time: 160 ms at most by default), scaled to the video's rate and rounded to a whole step, at most
    what fits the video. Steps stay uniform (the motion time series evenly sampled at a known rate):
    a 50 fps video steps 2x the frames of a 25 fps one, a 29.97 fps one 2 frames for 80 ms (67 ms)
    and 5 for 160 ms. A video of unknown rate counts its own frames."""
    if not known_rate(record.fps):
        return feature_stride(record.frames, spec)
    scale = record.fps / STRIDE_FPS
    step = int(feature_stride(int(record.frames / scale), spec) * scale + 0.5)
    return max(1, min(step, record.frames // spec.frames))


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
    batch_size: int | None = None,
    compute: bool = True,
    rejected: list[Any] | None = None,
    decode_stats: DecodeStats | None = None,
    shard: tuple[int, int] = (0, 1),
    keyframes: KeyframeIndexes | None = None,
    decode_counts: list[dict[str, float]] | None = None,
) -> Iterator[FeatureBatch]:
    """Decode ``records`` with the evaluation loader (one loader per stride) and, with
    ``compute``, run the kernel on each batch. Rejected videos are appended to ``rejected``, the
    decode routes added to ``decode_stats``, each loader's
    :meth:`~pipelines.video.loader.ClipLoader.decode_counts` appended to ``decode_counts``.
    ``batch_size``: default the backend's (:attr:`~core.backend.Backend.feature_batch_size`).
    ``shard``: (rank, world size); this rank takes every world-size-th batch of each stride group,
    so batches are the same as in one process. ``keyframes``: the videos' keyframe indexes
    (default: the run's ``keyframes.npz``)."""
    import time

    xp = backend.xp()
    batch_size = batch_size or backend.feature_batch_size
    rank, world_size = shard
    if keyframes is None:
        keyframes = KeyframeIndexes(RunPaths(run_dir).keyframes_npz if run_dir is not None else None)
    by_stride: dict[int, list[VideoRecord]] = {}
    for record in records:
        by_stride.setdefault(clip_stride(record, spec), []).append(record)
    for stride, group in sorted(by_stride.items()):
        chunks = [group[i : i + batch_size] for i in range(0, len(group), batch_size)]
        group = [record for chunk in chunks[rank::world_size] for record in chunk]
        if not group:
            continue
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
        if decode_stats is not None:
            decode_stats.add(loader.decode_stats)
        if decode_counts is not None:
            decode_counts.append(loader.decode_counts())


def synchronize(xp: Any) -> None:
    if xp.__name__ == "cupy":
        xp.cuda.get_current_stream().synchronize()


def up_to_date_features(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    *,
    default_spec: FeatureSpec | None = None,
    progress: bool = True,
    rejected: list[Any] | None = None,
) -> FeatureSet:
    """``RUN_DIR/features.npz`` brought up to date for a stage that trains on it: a file made from
    another index than the current ``videos.csv`` and video files (``prepare`` rerun, a video
    replaced) or one that cannot be read is recomputed with the settings stored in it (else
    ``default_spec``, default ``FeatureSpec()``): the features stage is cheap and deterministic,
    and models trained on stale features would score old data as new. A missing file is an error
    naming the stage to run."""
    paths = RunPaths(run_dir)
    if not paths.features_npz.exists():
        raise FileNotFoundError(f"{paths.features_npz} not found; run `python cli.py features --run {run_dir}` first")
    spec = stored_spec(paths.features_npz) or default_spec or FeatureSpec()
    return extract_features(run_dir, backend, progress=progress, spec=spec, rejected=rejected)


def extract_features(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    *,
    progress: bool = True,
    force: bool = False,
    spec: FeatureSpec | None = None,
    batch_size: int | None = None,
    rejected: list[Any] | None = None,
    decode_stats: DecodeStats | None = None,
    context: DistContext | None = None,
) -> FeatureSet:
    """Compute (or load, when up to date) ``RUN_DIR/features.npz`` for every video of ``videos.csv``.

    Videos that failed to decode in this call (none when the file was up to date) are appended
    to ``rejected`` (:class:`pipelines.video.loader.RejectedVideo`), as well as to ``rejected.csv``;
    the clips per decode route are added to ``decode_stats``. ``batch_size``: default the
    backend's. With a multi-process ``context`` (torchrun) the ranks share the work (see the
    module docstring); every rank must call this and gets the whole matrix; rank 0 writes.
    """
    spec = spec or FeatureSpec()
    context = context or DistContext()
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
        existing = _existing_features(paths.features_npz)
        if existing is not None and existing.fingerprint == expected and existing.spec == spec:
            return existing
        if existing is not None:
            made = "with other settings (FeatureSpec)" if existing.spec != spec else "from another index"
            notice(
                f"{paths.features_npz} was computed {made} than this run's (videos.csv rows or video files "
                "changed since, other settings, or an older version's clip sampling): recomputing it"
            )

    rows, skipped, stats = _feature_rows(records, backend, spec, run_dir, batch_size, progress, context)
    if rejected is not None:
        rejected.extend(skipped)
    if decode_stats is not None:
        decode_stats.add(stats)
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
    if context.is_main:
        save_features(paths.features_npz, features)
    dist_utils.barrier(context)
    return features


def _feature_rows(
    records: Sequence[VideoRecord],
    backend: Backend,
    spec: FeatureSpec,
    run_dir: str | os.PathLike[str],
    batch_size: int | None,
    progress: bool,
    context: DistContext,
) -> tuple[dict[str, np.ndarray], list[Any], DecodeStats]:
    """Feature rows by video id, rejected videos and decode routes of all ranks (on every rank).
    Only rank 0 appends to rejected.csv (the ranks' rejects are gathered first), so no two
    processes rewrite the file at once."""
    rows: dict[str, np.ndarray] = {}
    skipped: list[Any] = []
    stats = DecodeStats()
    with progress_bar(total=len(records), desc="features", unit="video", enabled=progress and context.is_main) as bar:
        for batch in iter_feature_batches(
            records,
            backend,
            spec,
            run_dir=run_dir if not context.enabled else None,
            batch_size=batch_size,
            rejected=skipped,
            decode_stats=stats,
            shard=(context.rank, context.world_size),
            keyframes=KeyframeIndexes(RunPaths(run_dir).keyframes_npz),  # also under torchrun (no run_dir there)
        ):
            rows.update(zip(batch.video_ids, to_numpy(batch.features), strict=True))
            bar.update(len(batch.video_ids) * context.world_size)
        bar.update(len(records) - bar.n)
    if not context.enabled:
        return rows, skipped, stats
    merged_rows: dict[str, np.ndarray] = {}
    merged_skipped: list[Any] = []
    for part_rows, part_skipped in dist_utils.gather_objects((rows, skipped), context):
        merged_rows.update(part_rows)
        merged_skipped.extend(part_skipped)
    if context.is_main:
        for item in merged_skipped:
            append_rejected(run_dir, item.path, item.reason, STAGE)
    merged_stats = DecodeStats.merged(dist_utils.gather_objects(stats, context))
    return merged_rows, merged_skipped, merged_stats
