"""Classify new videos with a trained model of a run: the ``predict`` command and the Python API.

    from workflow.predict import load_model
    model = load_model("runs/demo", "best")      # or "svm", "cnn3d", ...
    for row in model.predict(["clip.mp4", "more_clips/"]):
        print(row.path, row.predicted_class, row.error)

A video takes the path it took in the comparison: the pre-flight check (pipelines.data.preflight),
decoding through the clip loader on the backend's device (core.backend), then
- classical models: the feature kernel with the FeatureSpec stored in ``features.npz``, and the saved
  model (``models/<model>.skops``);
- CNNs: the model's test clip protocol (K clips x 1 crop, from its saved config and normalisation),
  clip probabilities averaged per video, with the evaluation's AMP dtype and memory layout; where the
  CNN was evaluated through the decoded-clip cache, so is the video (the run's ``cache/``, or a
  temporary one when the run folder is read-only), so that the pixels are the same.
Videos stream through the loader in batches. A file that fails the pre-flight check or decoding gets a
row with the reason in ``error``; none is dropped. ``seconds`` is the wall time spent on a video: its
share of the pre-flight pass plus its share of the batch that finished it (decode, features or clips,
model), so the column adds up to the time ``predict`` took (loading the model aside).
"""

from __future__ import annotations

import csv
import os
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.names import MODEL_ORDER
from analysis.results import load_results, rank_by_macro_f1
from core.backend import Backend, resolve_backend
from core.console import notice, progress_bar
from core.runfiles import RunPaths, atomic_path
from models.classical.estimators import ClassicalModel
from models.classical.persist import load_classical_model, model_file
from models.classical.train import full_scores
from models.deep.build import clip_cache_max_bytes, uses_clip_cache
from models.deep.config import MODELS as DEEP_MODELS
from models.deep.infer import ClipAverager, TrainedNetwork, clip_probabilities, load_network
from pipelines.data.dataset import VIDEO_EXTENSIONS, is_video_file
from pipelines.data.preflight import ProbeResult, preflight
from pipelines.data.records import VideoRecord
from pipelines.features.kernel import FeatureSpec, feature_names
from pipelines.features.store import features_fingerprint, iter_feature_batches, load_features, to_numpy
from pipelines.video.loader import RejectedVideo, make_clip_loader

BEST = "best"
SCORE_PREFIX = "score_"


@dataclass
class VideoPrediction:
    """One input video: the predicted class and every class's score, or why there is none."""

    path: str
    predicted_class: str | None
    scores: dict[str, float]  # class name -> probability, in the model's class order; {} on error
    seconds: float
    error: str = ""

    def top(self, k: int) -> list[tuple[str, float]]:
        """The ``k`` best (class, score) pairs, best first."""
        return sorted(self.scores.items(), key=lambda item: -item[1])[:k]


@dataclass(frozen=True)
class ModelChoice:
    """Which model of the run predicts, and why (printed by ``predict``)."""

    name: str
    reason: str


def choose_model(run_dir: str | os.PathLike[str], name: str) -> ModelChoice:
    """``name``, or for ``best`` the model the report ranks first on test macro-F1 among the run's
    valid results (:func:`analysis.results.load_results`)."""
    if name != BEST:
        if name not in MODEL_ORDER:
            raise ValueError(f"unknown model {name!r}; use one of {', '.join(MODEL_ORDER)} or {BEST}")
        return ModelChoice(name, "as asked")
    results, notes = load_results(run_dir)
    if not results:
        skipped = f" ({'; '.join(notes)})" if notes else ""
        raise ValueError(f"{run_dir} has no valid result to choose the best model from{skipped}; run the comparison")
    ranked = rank_by_macro_f1(results)
    winner, f1 = ranked[0]
    return ModelChoice(
        winner.model,
        f"best: the report ranks it first on test macro-F1 ({f1:.3f}) among {len(ranked)} valid result(s)",
    )


def expand_inputs(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files to classify: each file as given, each folder's video files (recursively, sorted); a path
    given twice counts once. A missing path or a folder without videos is an error."""
    found: dict[str, Path] = {}
    for given in map(Path, paths):
        if given.is_dir():
            # A dangling link is kept: the pre-flight check gives it a row with the reason.
            files = sorted(p for p in given.rglob("*") if (p.is_file() or p.is_symlink()) and is_video_file(p))
            if not files:
                raise ValueError(f"{given}: no video files ({' '.join(VIDEO_EXTENSIONS)}) in this folder")
        elif given.exists() or given.is_symlink():  # a dangling link gets its row from the pre-flight check
            files = [given]
        else:
            raise FileNotFoundError(f"{given}: no such file or folder")
        for file in files:
            found.setdefault(os.path.abspath(file), file)
    if not found:
        raise ValueError("no video given; pass video files or folders")
    return list(found.values())


def _record(probe: ProbeResult, key: str) -> VideoRecord:
    """An index row for a video outside the run (no class, split or group)."""
    return VideoRecord(
        video_id=key, path=key, class_name="", label=-1, group="", split="test", codec=probe.codec,
        frames=probe.frames, fps=probe.fps, width=probe.width, height=probe.height,
    )  # fmt: skip


class Predictor(ABC):
    """A trained model of a run, ready to classify videos; see :func:`load_model`.

    ``name`` (svm ... cnn3d), ``family`` (classical | deep), ``class_names`` (the order of the
    scores), ``choice`` (why this model), ``predict(paths)``.
    """

    family = ""

    def __init__(self, name: str, run_dir: Path, class_names: Sequence[str], backend: Backend, batch_size: int) -> None:
        self.name = name
        self.run_dir = run_dir
        self.class_names = [str(c) for c in class_names]
        self.backend = backend
        self.batch_size = batch_size
        self.choice = ModelChoice(name, "as asked")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, run {str(self.run_dir)!r}, classes {self.class_names})"

    @abstractmethod
    def _score(self, records: list[VideoRecord], rejected: list[RejectedVideo]) -> Iterator[dict[str, np.ndarray]]:
        """Class scores of finished videos (video id -> (C,) scores), batch by batch; videos that fail to
        decode are appended to ``rejected``."""

    def predict(self, paths: Sequence[str | os.PathLike[str]], *, progress: bool = False) -> list[VideoPrediction]:
        """One :class:`VideoPrediction` per video of ``paths`` (files and folders), in input order."""
        files = expand_inputs(paths)
        keys = [os.path.abspath(file) for file in files]
        start = time.perf_counter()
        probes = preflight(files, progress=progress)
        share = (time.perf_counter() - start) / len(files)
        rows: dict[str, VideoPrediction] = {}
        records = []
        for file, key, probe in zip(files, keys, probes, strict=True):
            if probe.ok:
                records.append(_record(probe, key))
            else:
                rows[key] = VideoPrediction(str(file), None, {}, share, f"pre-flight: {probe.reason}")
        shown = dict(zip(keys, files, strict=True))
        rejected: list[RejectedVideo] = []
        with progress_bar(total=len(records), desc=f"predict {self.name}", unit="video", enabled=progress) as bar:
            last = time.perf_counter()
            for finished in self._score(records, rejected):
                now = time.perf_counter()
                each = share + (now - last) / len(finished)
                last = now
                for key, scores in finished.items():
                    rows[key] = self._row(str(shown[key]), scores, each)
                bar.update(len(finished))
        for item in rejected:
            reason = f"decoding: {item.reason}"
            rows[item.video_id] = VideoPrediction(str(shown[item.video_id]), None, {}, share, reason)
        missing = "no score came back for it (see the log)"
        return [rows.get(key) or VideoPrediction(str(shown[key]), None, {}, share, missing) for key in keys]

    def _row(self, path: str, scores: np.ndarray, seconds: float) -> VideoPrediction:
        named = {name: float(value) for name, value in zip(self.class_names, scores, strict=True)}
        return VideoPrediction(path, self.class_names[int(np.argmax(scores))], named, seconds)


class ClassicalPredictor(Predictor):
    """A classical model: features of the run's FeatureSpec, then the saved model's class scores."""

    family = "classical"

    def __init__(
        self, name: str, run_dir: Path, class_names: Sequence[str], backend: Backend, batch_size: int, *,
        model: ClassicalModel, spec: FeatureSpec,
    ) -> None:  # fmt: skip
        super().__init__(name, run_dir, class_names, backend, batch_size)
        self.model = model
        self.spec = spec

    def _score(self, records: list[VideoRecord], rejected: list[RejectedVideo]) -> Iterator[dict[str, np.ndarray]]:
        n_classes = len(self.class_names)
        for batch in iter_feature_batches(records, self.backend, self.spec, batch_size=self.batch_size,
                                          rejected=rejected):  # fmt: skip
            scores = full_scores(self.model, to_numpy(batch.features), n_classes)
            yield dict(zip(batch.video_ids, scores, strict=True))


class DeepPredictor(Predictor):
    """A CNN: the test clips of its protocol, clip probabilities averaged per video."""

    family = "deep"

    def __init__(self, name: str, run_dir: Path, backend: Backend, batch_size: int, *, trained: TrainedNetwork) -> None:
        super().__init__(name, run_dir, trained.class_names, backend, batch_size)
        self.trained = trained

    @contextmanager
    def _cache_dir(self) -> Iterator[Path | None]:
        """Where decoded frames go when the CNN was evaluated through the cache: the run's cache/ when
        it can be written, else a temporary folder removed afterwards (same pixels either way)."""
        if not uses_clip_cache(self.trained.config, self.backend):
            yield None
            return
        cache = RunPaths(self.run_dir).cache_dir
        try:
            cache.mkdir(parents=True, exist_ok=True)
            writable = os.access(cache, os.W_OK)
        except OSError:
            writable = False
        if writable:
            yield cache
            return
        with tempfile.TemporaryDirectory(prefix="actionbench-predict-") as folder:
            yield Path(folder)

    def _score(self, records: list[VideoRecord], rejected: list[RejectedVideo]) -> Iterator[dict[str, np.ndarray]]:
        trained = self.trained
        with self._cache_dir() as cache_dir:
            loader = make_clip_loader(
                records, trained.clip, self.backend, batch_size=self.batch_size, num_threads=trained.config.num_threads,
                cache_dir=cache_dir, cache_max_bytes=clip_cache_max_bytes(trained.config), stage="predict",
            )  # fmt: skip
            averager = ClipAverager(trained.clip.clips_per_video)
            for batch in loader:
                finished = averager.add(list(batch.video_ids), clip_probabilities(trained, batch.clips))
                if finished:
                    yield finished
            rejected.extend(loader.rejected)


def _classical(name: str, run_dir: Path, backend: Backend, batch_size: int | None) -> ClassicalPredictor:
    features = load_features(RunPaths(run_dir).features_npz)
    if features.spec is None:
        raise ValueError(f"{RunPaths(run_dir).features_npz} does not say how it was computed (no FeatureSpec); "
                         f"rerun `python cli.py features --run {run_dir} --force`")  # fmt: skip
    if features.fingerprint != features_fingerprint(RunPaths(run_dir).videos_csv, features.spec):
        notice(
            f"{RunPaths(run_dir).features_npz} was made from another index or by an older version of the feature "
            f"code: {name} learnt from those features, and the videos here get this version's; to predict as it "
            f"was trained, rerun `python cli.py features --run {run_dir}` and `python cli.py classical --run {run_dir}`"
        )
    model = load_classical_model(model_file(RunPaths(run_dir).models_dir, name))
    expected = len(feature_names(features.spec))
    if getattr(model, "n_features_in_", expected) != expected:
        raise ValueError(
            f"{model_file(RunPaths(run_dir).models_dir, name)} was fitted on {model.n_features_in_} features, "
            f"features.npz has {expected}; rerun `python cli.py classical --run {run_dir} --models {name} --force`"
        )
    return ClassicalPredictor(
        name, run_dir, list(features.class_names), backend, batch_size or backend.feature_batch_size,
        model=model, spec=features.spec,
    )  # fmt: skip


def _deep(name: str, run_dir: Path, backend: Backend, batch_size: int | None) -> DeepPredictor:
    path = RunPaths(run_dir).models_dir / f"{name}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; train it with `python cli.py deep --run {run_dir} --model {name}`")
    trained = load_network(path, backend.torch_device())
    return DeepPredictor(name, run_dir, backend, batch_size or trained.config.batch_size, trained=trained)


def load_model(
    run: str | os.PathLike[str],
    name: str = BEST,
    *,
    device: str | None = None,
    backend: Backend | None = None,
    batch_size: int | None = None,
) -> Predictor:
    """The trained model ``name`` of the run folder ``run`` (``best``: the report's first on macro-F1),
    with ``predict(paths)`` and ``class_names``. ``device``: auto | cpu | gpu (or give a ``backend``);
    ``batch_size``: videos per feature batch / clips per CNN batch (default: the run's)."""
    run_dir = Path(run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run folder; make one with `python cli.py run --run {run_dir}`")
    choice = choose_model(run_dir, name)
    backend = backend or resolve_backend(device)
    build = _deep if choice.name in DEEP_MODELS else _classical
    predictor = build(choice.name, run_dir, backend, batch_size)
    predictor.choice = choice
    return predictor


def prediction_columns(class_names: Sequence[str], top_k: int) -> list[str]:
    """The CSV header: path, predicted_class, score_<class>..., top<i>_class/top<i>_score, seconds, error."""
    tops = [f"top{i}_{part}" for i in range(1, top_k + 1) for part in ("class", "score")]
    return ["path", "predicted_class", *[SCORE_PREFIX + name for name in class_names], *tops, "seconds", "error"]


def write_predictions_csv(
    path: str | os.PathLike[str], predictions: Sequence[VideoPrediction], class_names: Sequence[str], top_k: int
) -> Path:
    """Write one row per video (``top_k`` capped at the number of classes) atomically; return the path."""
    top_k = min(top_k, len(class_names))
    columns = prediction_columns(class_names, top_k)
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in predictions:
                values: dict[str, str] = {"path": row.path, "predicted_class": row.predicted_class or "",
                                          "seconds": f"{row.seconds:.4f}", "error": row.error}  # fmt: skip
                values.update({SCORE_PREFIX + name: f"{score:.8f}" for name, score in row.scores.items()})
                for i, (name, score) in enumerate(row.top(top_k), 1):
                    values.update({f"top{i}_class": name, f"top{i}_score": f"{score:.8f}"})
                writer.writerow(values)
    return Path(path)


@dataclass
class PredictReport:
    """What ``predict`` did, for its closing lines."""

    model: str
    choice: ModelChoice
    out: Path
    predictions: list[VideoPrediction]

    def text(self) -> str:
        failed = [row for row in self.predictions if row.error]
        counts: dict[str, int] = {}
        for row in self.predictions:
            if row.predicted_class is not None:
                counts[row.predicted_class] = counts.get(row.predicted_class, 0) + 1
        spread = ", ".join(f"{name} {count}" for name, count in sorted(counts.items(), key=lambda kv: -kv[1]))
        lines = [f"{len(self.predictions)} video(s) -> {self.out}" + (f" ({spread})" if spread else "")]
        if failed:
            lines.append(f"{len(failed)} video(s) could not be classified; the reason is in the error column:")
            lines += [f"  {row.path}: {row.error}" for row in failed[:5]]
            if len(failed) > 5:
                lines.append(f"  ... and {len(failed) - 5} more")
        return "\n".join(lines)

    def check_any_classified(self) -> None:
        """``ValueError`` when no video could be classified (a script must not take that for success);
        the CSV still lists every video with its reason."""
        if self.predictions and all(row.error for row in self.predictions):
            raise ValueError(
                f"none of the {len(self.predictions)} video(s) could be classified; the reasons are in the "
                f"error column of {self.out}"
            )


def predict_to_csv(
    predictor: Predictor,
    paths: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    top_k: int = 3,
    progress: bool = True,
) -> PredictReport:
    """Classify ``paths`` with ``predictor`` and write ``out`` (:func:`write_predictions_csv`)."""
    predictions = predictor.predict(paths, progress=progress)
    written = write_predictions_csv(out, predictions, predictor.class_names, top_k)
    return PredictReport(predictor.name, predictor.choice, written, predictions)
