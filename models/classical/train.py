"""Tune, fit, time and evaluate the classical models on a run's features.

For each model: a small grid is searched with group-aware cross-validation on the TRAIN split
(:func:`tune_model` receives the train split and nothing else), the best parameters are refitted
on the whole train split, the validation split is scored, and only then is the test split
predicted, once. Results go to ``RUN_DIR/results/<model>.json`` (THE schema) and the fitted
estimator to ``RUN_DIR/models/<model>.skops`` (:mod:`models.classical.persist`: a format that runs no
code when loaded); both are written atomically and a finished
model is skipped on rerun unless the features or the configuration changed, or ``force``.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedGroupKFold

from core.backend import Backend, library_versions
from core.console import notice, progress_bar
from core.cost import PeakMemory, file_size_bytes, timed
from core.metrics import classification_metrics
from core.runfiles import RunPaths, fingerprint, set_aside
from core.schema import Cost, LearningCurvePoint, ModelResult, Prediction, load_result, save_result
from models.classical.estimators import (
    BASE_PARAMS,
    MODEL_NAMES,
    NEEDS_SCALING,
    PARAM_GRIDS,
    ClassicalModel,
    fit_cost,
    library_for,
)
from models.classical.persist import model_file, save_classical_model
from pipelines.data.records import index_fingerprint, read_videos_csv
from pipelines.data.splits import group_strata
from pipelines.features.kernel import FeatureSpec
from pipelines.features.store import (
    FeatureSet,
    features_fingerprint,
    iter_feature_batches,
    up_to_date_features,
)

LEARNING_CURVE_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
SELECTION_RULES = ("one-se", "best")


@dataclass(frozen=True)
class ClassicalConfig:
    """How the classical models are tuned and evaluated (stored in every result's config)."""

    seed: int = 0
    # 5 folds: each CV fit sees 80 % of the training groups, close to the final fit; with 3 folds on
    # the demo's 16 training groups the fold scores were too noisy to rank candidates (validation
    # macro-F1, mean of the five models: 5-fold "best" 0.721, 3-fold "best" 0.705, "one-se" 0.70).
    cv_folds: int = 5
    grids: dict[str, dict[str, list[Any]]] | None = None  # None: models.classical.estimators.PARAM_GRIDS
    # Threads per fit for rf/knn/gb. 1: no oversubscription on shared CI cores, and the same
    # thread count as the single-threaded notebook estimators; None: the library default.
    n_jobs: int | None = 1
    # "best": the best CV macro-F1, first in grid order on ties; "one-se": the cheapest candidate
    # (models.classical.estimators.fit_cost) whose CV macro-F1 is within one standard error of the best.
    selection: str = "best"
    learning_curve_fractions: tuple[float, ...] = LEARNING_CURVE_FRACTIONS
    learning_curve_seeds: tuple[int, ...] = (0, 1, 2)
    end_to_end_videos: int = 3  # test videos decoded + featurised to time the end-to-end path
    memory_interval_s: float = 0.005

    def __post_init__(self) -> None:
        if self.selection not in SELECTION_RULES:
            raise ValueError(f"selection {self.selection!r}: use one of {', '.join(SELECTION_RULES)}")

    def grid(self, name: str) -> dict[str, list[Any]]:
        return (self.grids or {}).get(name, PARAM_GRIDS[name])


@dataclass(frozen=True)
class SplitData:
    """The rows of one split: features, labels, groups and video ids, aligned."""

    name: str
    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray
    video_ids: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, mask: np.ndarray) -> SplitData:
        return SplitData(self.name, self.X[mask], self.y[mask], self.groups[mask], self.video_ids[mask])


def split_features(features: FeatureSet) -> dict[str, SplitData]:
    """Train/val/test :class:`SplitData` from a FeatureSet (pipelines.features.store)."""
    splits = np.asarray(features.splits).astype(str)
    out = {}
    for name in ("train", "val", "test"):
        mask = splits == name
        out[name] = SplitData(
            name,
            np.asarray(features.X, dtype=np.float32)[mask],
            np.asarray(features.labels, dtype=np.int64)[mask],
            np.asarray(features.groups).astype(str)[mask],
            np.asarray(features.video_ids).astype(str)[mask],
        )
    return out


@dataclass
class TuningResult:
    best_params: dict[str, Any]  # the selected candidate
    best_score: float  # its mean CV macro-F1
    candidates: list[dict[str, Any]]  # {"params", "mean_macro_f1", "std_macro_f1", "se_macro_f1", "cost", ...}
    folds: list[tuple[np.ndarray, np.ndarray]]  # indices into the train split
    search_seconds: float
    selection: str = "best"
    top_params: dict[str, Any] | None = None  # the candidate with the best mean CV macro-F1
    top_score: float | None = None
    threshold: float | None = None  # one-se: best mean minus its standard error


def select_candidate(candidates: list[dict[str, Any]], rule: str) -> tuple[dict[str, Any], dict[str, Any], float]:
    """(selected, top, threshold) among scored candidates, by ``rule``.

    "best": the highest mean macro-F1 (first in grid order on ties). "one-se" (Breiman et al.'s
    one-standard-error rule): the lowest ``cost`` among candidates whose mean is at least the top
    mean minus the top candidate's standard error over folds; ties go to the higher mean, then
    grid order. Differences smaller than the fold-to-fold noise do not justify a costlier model.
    """
    top = max(candidates, key=lambda row: row["mean_macro_f1"])  # first best wins: deterministic
    if rule == "best":
        return top, top, top["mean_macro_f1"]
    threshold = top["mean_macro_f1"] - top["se_macro_f1"]
    eligible = [row for row in candidates if row["mean_macro_f1"] >= threshold - 1e-12]
    selected = min(eligible, key=lambda row: (row["cost"], -row["mean_macro_f1"]))
    return selected, top, threshold


def group_cv_folds(train: SplitData, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """StratifiedGroupKFold folds on the train split: no group is in two folds."""
    n_groups = len(np.unique(train.groups))
    k = min(n_splits, n_groups)
    if k < 2:
        raise ValueError(f"tuning needs at least 2 groups in the train split, found {n_groups}")
    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return list(splitter.split(np.zeros(len(train)), train.y, train.groups))


def param_candidates(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    keys = sorted(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(grid[key] for key in keys))]


def tune_model(
    name: str,
    library: str,
    train: SplitData,
    grid: dict[str, list[Any]],
    *,
    n_splits: int = 5,
    seed: int = 0,
    n_jobs: int | None = None,
    selection: str = "best",
) -> TuningResult:
    """Grid search by macro-F1 with group-aware CV. Sees the train split only, by signature.

    ``selection``: "one-se" or "best" (:func:`select_candidate`).
    """
    with timed() as clock:
        folds = group_cv_folds(train, n_splits, seed)
        candidates = []
        for params in param_candidates(grid):
            scores, seconds = [], []
            for fit_rows, score_rows in folds:
                model = ClassicalModel(name, library, params, seed, n_jobs)
                with timed() as fit_clock:
                    model.fit(train.X[fit_rows], train.y[fit_rows], groups=train.groups[fit_rows])
                seconds.append(fit_clock.seconds)
                predicted = model.predict(train.X[score_rows])
                scores.append(f1_score(train.y[score_rows], predicted, average="macro", zero_division=0))
            candidates.append(
                {
                    "params": params,
                    "mean_macro_f1": float(np.mean(scores)),
                    "std_macro_f1": float(np.std(scores)),
                    # standard error of the mean over folds (sample standard deviation / sqrt(folds))
                    "se_macro_f1": float(np.std(scores, ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0,
                    "cost": fit_cost(name, params, int(train.X.shape[1])),
                    "mean_fit_seconds": float(np.mean(seconds)),
                }
            )
        selected, top, threshold = select_candidate(candidates, selection)
    return TuningResult(
        selected["params"],
        selected["mean_macro_f1"],
        candidates,
        folds,
        clock.seconds,
        selection=selection,
        top_params=top["params"],
        top_score=top["mean_macro_f1"],
        threshold=threshold,
    )


def fit_final(
    name: str,
    library: str,
    params: dict[str, Any],
    train: SplitData,
    *,
    seed: int = 0,
    n_jobs: int | None = None,
    cuda: bool = False,
    memory_interval_s: float = 0.005,
) -> tuple[ClassicalModel, float, PeakMemory]:
    """Fit on the whole train split; return the model, fit seconds and the measured peak memory."""
    model = ClassicalModel(name, library, params, seed, n_jobs)
    with PeakMemory(interval_s=memory_interval_s, cuda=cuda) as memory, timed() as clock:
        model.fit(train.X, train.y, groups=train.groups)
    return model, clock.seconds, memory


def full_scores(model: ClassicalModel, X: np.ndarray, n_classes: int) -> np.ndarray:
    """Class scores with one column per class of the dataset (classes unseen in fit score 0)."""
    proba = model.predict_proba(X)
    scores = np.zeros((len(X), n_classes))
    scores[:, np.asarray(model.classes_, dtype=np.int64)] = proba
    return scores


def select_group_fraction(train: SplitData, fraction: float, seed: int) -> np.ndarray:
    """Row mask keeping ``fraction`` of the train groups of each stratum, >= 1 group per stratum.

    Strata as in :func:`pipelines.data.splits.group_strata`: one per class for class-specific groups,
    one for UCF101 group numbers shared by every class.
    """
    rng = np.random.default_rng(seed)
    group_names, group_index = np.unique(train.groups, return_inverse=True)
    stratum_of = group_strata([f"{label:06d}" for label in train.y], [str(g) for g in train.groups])
    group_stratum = np.array([stratum_of[str(name)] for name in group_names])
    keep = []
    for stratum in np.unique(group_stratum):
        members = np.flatnonzero(group_stratum == stratum)
        count = max(1, int(round(fraction * len(members))))
        keep.extend(rng.choice(members, size=min(count, len(members)), replace=False).tolist())
    return np.isin(group_index, keep)


def fit_learning_curve(
    name: str,
    library: str,
    params: dict[str, Any],
    train: SplitData,
    test: SplitData,
    n_classes: int,
    *,
    fractions: tuple[float, ...] = LEARNING_CURVE_FRACTIONS,
    seeds: tuple[int, ...] = (0, 1, 2),
    n_jobs: int | None = None,
    keep_models: bool = False,
) -> tuple[list[LearningCurvePoint], list[ClassicalModel]]:
    """Retrain with the tuned ``params`` on fractions of the train groups; score on the test split.

    The hyper-parameters are not searched again per fraction. Returns the points and, with
    ``keep_models``, the fitted models (fraction-major, seed-minor order).
    """
    points, models = [], []
    for fraction in fractions:
        f1s, accuracies, sizes = [], [], []
        for seed in seeds:
            subset = train.subset(select_group_fraction(train, fraction, seed))
            model = ClassicalModel(name, library, params, seed, n_jobs).fit(subset.X, subset.y, groups=subset.groups)
            predicted = model.classes_[np.argmax(model.predict_proba(test.X), axis=1)]
            f1s.append(f1_score(test.y, predicted, average="macro", labels=np.arange(n_classes), zero_division=0))
            accuracies.append(accuracy_score(test.y, predicted))
            sizes.append(len(subset))
            if keep_models:
                models.append(model)
        points.append(
            LearningCurvePoint(
                fraction=float(fraction),
                n_train_videos=int(round(np.mean(sizes))),
                seeds=[int(seed) for seed in seeds],
                macro_f1_mean=float(np.mean(f1s)),
                macro_f1_std=float(np.std(f1s)),
                accuracy_mean=float(np.mean(accuracies)),
                accuracy_std=float(np.std(accuracies)),
            )
        )
    return points, models


def _device(library: str, backend: Backend) -> str:
    on_gpu = library in ("cuml", "xgboost-cuda")
    gpu_name = getattr(backend, "gpu_name", None)
    return f"cuda ({gpu_name})" if on_gpu and gpu_name else ("cuda" if on_gpu else "cpu")


def _spec_of(videos_csv: Path, features: FeatureSet, given: FeatureSpec | None = None) -> FeatureSpec | None:
    """The FeatureSpec that made ``features``: the one stored in features.npz, else (a hand-made
    matrix) the given one or the default, whichever reproduces its fingerprint."""
    if features.spec is not None:
        return features.spec
    for candidate in [given, FeatureSpec()]:
        if candidate is not None and features_fingerprint(videos_csv, candidate) == str(features.fingerprint):
            return candidate
    return None


def measure_decode_features_seconds(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    features: FeatureSet,
    *,
    n_videos: int = 3,
    spec: FeatureSpec | None = None,
) -> tuple[float | None, str]:
    """Seconds per video to decode and featurise test videos one at a time, and how it was got.

    Runs the features stage's own path (loader + kernel, batch size 1) on up to ``n_videos``
    test videos and takes the median interval between consecutive videos, so the one-off loader
    start-up is not charged to each video. Uses the spec stored with the matrix, else the first of
    ``spec``, ``FeatureSpec()`` and the workflow profiles' specs that reproduces the fingerprint
    of ``features``.
    """

    paths = RunPaths(run_dir)
    if n_videos < 1 or not paths.videos_csv.exists():
        return None, "not measured: no videos.csv in the run directory"
    spec = _spec_of(paths.videos_csv, features, spec)
    if spec is None:
        return None, "not measured: features made with a FeatureSpec other than the given or the default"
    test_ids = set(np.asarray(features.video_ids)[np.asarray(features.splits) == "test"].astype(str))
    records = [record for record in read_videos_csv(paths.videos_csv) if record.video_id in test_ids][: n_videos + 1]
    if not records:
        return None, "not measured: no test video in videos.csv"
    stamps = [time.perf_counter()]
    try:
        for _ in iter_feature_batches(records, backend, spec, batch_size=1):
            stamps.append(time.perf_counter())
    except Exception as exc:  # a timing aid must not sink the training run
        return None, f"not measured: decoding failed ({type(exc).__name__}: {exc})"
    intervals = np.diff(stamps)
    if len(intervals) == 0:
        return None, "not measured: no test video could be decoded"
    steady = intervals[1:] if len(intervals) > 1 else intervals
    return float(np.median(steady)), (
        f"decode + features, batch size 1, median over {len(steady)} test video(s) after the first, "
        "plus model inference per video"
    )


def _config_dict(config: ClassicalConfig) -> dict[str, Any]:
    data = asdict(config)
    data["learning_curve_fractions"] = list(config.learning_curve_fractions)
    data["learning_curve_seeds"] = list(config.learning_curve_seeds)
    return data


def _model_fingerprint(features: FeatureSet, name: str, library: str, config: ClassicalConfig) -> str:
    # What changes the fitted model or its measured costs; the learning curve is handled apart.
    settings = {
        "seed": config.seed,
        "cv_folds": config.cv_folds,
        "n_jobs": config.n_jobs,
        "grid": config.grid(name),
        "selection": config.selection,
        "base": BASE_PARAMS[name],
    }
    return fingerprint(str(getattr(features, "fingerprint", "")), name, library, settings)


def _curve_settings(config: ClassicalConfig) -> dict[str, Any]:
    return {
        "fractions": list(config.learning_curve_fractions),
        "seeds": list(config.learning_curve_seeds),
        "unit": "train groups, stratified by class, at least one group per class",
        "hyperparameters": "tuned once on the full train split; not searched again per fraction",
    }


def _selection_text(rule: str) -> str:
    scored = "macro-F1, mean over StratifiedGroupKFold folds of the train split"
    if rule == "one-se":
        return (
            f"one-standard-error rule on {scored}: the lowest fit cost (models.classical.estimators.fit_cost) among "
            "candidates within one standard error (over folds) of the best mean"
        )
    return scored


def _class_scores_text(model: ClassicalModel) -> str:
    method = getattr(model, "score_method_", "predict_proba")
    if model.name != "svm":
        return method
    if method == "calibrated":
        return "calibrated (CalibratedClassifierCV sigmoid, ensemble=False)"
    return f"uncalibrated: softmax of the SVC's one-vs-rest decision values ({method.split(': ', 1)[-1]})"


def _test_protocol(folds: int, rule: str) -> str:
    chosen = " (one-standard-error rule: the cheapest candidate within one standard error of the best)"
    return (
        f"Hyper-parameters chosen by macro-F1 with {folds}-fold StratifiedGroupKFold on the train split only"
        f"{chosen if rule == 'one-se' else ''}; "
        "refitted on the whole train split; validation split scored; test split (groups disjoint from train) "
        "predicted once, after all fitting."
    )


def _predictions(test: SplitData, scores: np.ndarray) -> list[Prediction]:
    predicted = np.argmax(scores, axis=1)
    return [
        Prediction(str(video_id), int(true), int(pred), [float(value) for value in row])
        for video_id, true, pred, row in zip(test.video_ids, test.y, predicted, scores, strict=True)
    ]


@dataclass
class _RunContext:
    features: FeatureSet
    splits: dict[str, SplitData]
    class_names: list[str]
    paths: RunPaths
    backend: Backend
    config: ClassicalConfig
    versions: dict[str, str | None]
    index_fingerprint: str | None = None  # the run index the features were made from (None: made by hand)
    end_to_end_feature_seconds: float | None = None
    end_to_end_note: str = ""


def _train_one(name: str, library: str, ctx: _RunContext, with_curve: bool) -> ModelResult:
    config, paths = ctx.config, ctx.paths
    train, val, test = ctx.splits["train"], ctx.splits["val"], ctx.splits["test"]
    n_classes = len(ctx.class_names)
    cuda = library in ("cuml", "xgboost-cuda")

    tuning = tune_model(
        name,
        library,
        train,
        config.grid(name),
        n_splits=config.cv_folds,
        seed=config.seed,
        n_jobs=config.n_jobs,
        selection=config.selection,
    )
    model, fit_seconds, fit_memory = fit_final(
        name,
        library,
        tuning.best_params,
        train,
        seed=config.seed,
        n_jobs=config.n_jobs,
        cuda=cuda,
        memory_interval_s=config.memory_interval_s,
    )
    model_path = save_classical_model(model, model_file(paths.models_dir, name))

    validation = None
    if len(val):
        val_scores = full_scores(model, val.X, n_classes)
        validation = classification_metrics(val.y, np.argmax(val_scores, axis=1), val_scores, ctx.class_names)

    # The test split is touched here for the first time, after every fit of this model.
    with PeakMemory(interval_s=config.memory_interval_s, cuda=cuda) as predict_memory, timed() as clock:
        test_scores = full_scores(model, test.X, n_classes)
    per_video = clock.seconds / max(1, len(test))
    metrics = classification_metrics(test.y, np.argmax(test_scores, axis=1), test_scores, ctx.class_names)

    curve = None
    if with_curve:
        curve, _ = fit_learning_curve(
            name,
            library,
            tuning.best_params,
            train,
            test,
            n_classes,
            fractions=tuple(config.learning_curve_fractions),
            seeds=tuple(config.learning_curve_seeds),
            n_jobs=config.n_jobs,
        )

    e2e = None if ctx.end_to_end_feature_seconds is None else ctx.end_to_end_feature_seconds + per_video
    result_config = {
        "fingerprint": _model_fingerprint(ctx.features, name, library, config),
        "features_fingerprint": str(getattr(ctx.features, "fingerprint", "")),
        "params": tuning.best_params,
        "grid": config.grid(name),
        "cv_folds": len(tuning.folds),
        "cv_macro_f1": tuning.best_score,
        "cv_results": tuning.candidates,
        "selection": _selection_text(tuning.selection),
        "selection_rule": tuning.selection,
        "cv_macro_f1_best": tuning.top_score,
        "best_cv_params": tuning.top_params,
        "selection_threshold": tuning.threshold,
        "standardised": name in NEEDS_SCALING,
        "class_scores": _class_scores_text(model),
        "n_train_videos": len(train),
        "n_val_videos": len(val),
        "n_features": int(train.X.shape[1]),
        "settings": _config_dict(config),
        "learning_curve": _curve_settings(config) if with_curve else None,
        "end_to_end": ctx.end_to_end_note,
        "decode_features_seconds_per_video": ctx.end_to_end_feature_seconds,
    }
    return ModelResult(
        model=name,
        family="classical",
        backend=library,
        device=_device(library, ctx.backend),
        versions=ctx.versions,
        seed=config.seed,
        config=result_config,
        class_names=ctx.class_names,
        test_protocol=_test_protocol(len(tuning.folds), tuning.selection),
        predictions=_predictions(test, test_scores),
        metrics=metrics,
        cost=Cost(
            fit_seconds=fit_seconds,
            search_seconds=tuning.search_seconds,
            inference_seconds_per_video_model=per_video,
            inference_seconds_per_video_end_to_end=e2e,
            model_bytes=file_size_bytes(model_path),
            parameters=model.parameter_count(),
            peak_memory_fit_bytes=fit_memory.peak_bytes,
            peak_memory_predict_bytes=predict_memory.peak_bytes,
            memory_kind=fit_memory.kind,
        ),
        validation=validation,
        learning_curve=curve,
        artifacts={"model": os.path.relpath(model_path, paths.root)},
        index_fingerprint=ctx.index_fingerprint,
    )


def _reusable(path: Path, fp: str, features: FeatureSet, paths: RunPaths, name: str) -> ModelResult | None:
    """The stored result of ``name`` if it was made with these settings from these features and its
    model file is there; an unreadable result is set aside, a stale one is named (both retrained)."""
    if not path.exists():
        return None
    try:
        result = load_result(path)
    except (ValueError, OSError) as exc:
        set_aside(path, exc, redo=f"retraining {name}")
        return None
    if result.config.get("fingerprint") != fp:
        made = (
            "from other features (videos.csv or a video changed, or other feature settings)"
            if result.config.get("features_fingerprint") != str(features.fingerprint)
            else "with other settings (grid, folds, seed, selection rule or library)"
        )
        notice(f"{path} was made {made}: retraining {name}")
        return None
    if not model_file(paths.models_dir, name).exists():
        return None
    return result


def train_classical_models(
    features: FeatureSet,
    run_dir: str | os.PathLike[str],
    backend: Backend,
    *,
    models: list[str] | None = None,
    learning_curve: bool = False,
    force: bool = False,
    config: ClassicalConfig | dict[str, Any] | None = None,
    progress: bool = True,
    feature_spec: FeatureSpec | None = None,
    index_id: str | None = None,
) -> list[ModelResult]:
    """Train, evaluate and save each model on an in-memory FeatureSet; see :func:`run_classical`.
    ``index_id``: the run index (:func:`~pipelines.data.records.index_fingerprint`) the features were
    made from, recorded in every result (None for a matrix made by hand)."""

    if isinstance(config, dict):
        config = ClassicalConfig(**config)
    config = config or ClassicalConfig()
    names = list(models or MODEL_NAMES)
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown:
        raise ValueError(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODEL_NAMES)}")
    splits = split_features(features)
    if not len(splits["train"]) or not len(splits["test"]):
        raise ValueError("the features have no train or no test videos; rerun `python cli.py prepare`")
    paths = RunPaths(run_dir)
    ctx = _RunContext(
        features=features,
        splits=splits,
        class_names=[str(name) for name in features.class_names],
        paths=paths,
        backend=backend,
        config=config,
        versions=library_versions(),
        index_fingerprint=index_id,
    )
    measured = False
    results = []
    bar = progress_bar(names, desc="classical", unit="model", enabled=progress)
    for name in bar:
        bar.set_postfix_str(name)
        library = library_for(name, backend)
        fp = _model_fingerprint(features, name, library, config)
        result_path = paths.result_json(name)
        previous = None if force else _reusable(result_path, fp, features, paths, name)
        if previous is not None and previous.index_fingerprint != index_id and index_id is not None:
            # Its features are this index's (the model fingerprint holds theirs): record it, as
            # results of older versions did not.
            previous.index_fingerprint = index_id
            save_result(previous, result_path)
        if previous is not None and (
            not learning_curve
            or previous.learning_curve is not None
            and previous.config.get("learning_curve") == _curve_settings(config)
        ):
            results.append(previous)
            continue
        if previous is not None:  # finished model, only the learning curve is missing or stale
            previous.learning_curve, _ = fit_learning_curve(
                name,
                library,
                previous.config["params"],
                splits["train"],
                splits["test"],
                len(ctx.class_names),
                fractions=tuple(config.learning_curve_fractions),
                seeds=tuple(config.learning_curve_seeds),
                n_jobs=config.n_jobs,
            )
            previous.config["learning_curve"] = _curve_settings(config)
            save_result(previous, result_path)
            results.append(previous)
            continue
        if not measured:
            ctx.end_to_end_feature_seconds, ctx.end_to_end_note = measure_decode_features_seconds(
                run_dir, backend, features, n_videos=config.end_to_end_videos, spec=feature_spec
            )
            measured = True
        result = _train_one(name, library, ctx, learning_curve)
        save_result(result, result_path)
        results.append(result)
    return results


def run_classical(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    *,
    models: list[str] | None = None,
    learning_curve: bool = False,
    force: bool = False,
    config: ClassicalConfig | dict[str, Any] | None = None,
    progress: bool = True,
    feature_spec: FeatureSpec | None = None,
    rejected: list[Any] | None = None,
) -> list[ModelResult]:
    """Tune, fit and evaluate the classical models on ``RUN_DIR/features.npz``.

    Writes ``RUN_DIR/results/<model>.json`` and ``RUN_DIR/models/<model>.skops`` per model.
    Stale or unreadable features are recomputed first (:func:`~pipelines.features.store.up_to_date_features`,
    ``feature_spec`` when the file stores none); videos that fail to decode then are appended to
    ``rejected``.
    """
    paths = RunPaths(run_dir)
    features = up_to_date_features(run_dir, backend, default_spec=feature_spec, progress=progress, rejected=rejected)
    spec = features.spec or feature_spec or FeatureSpec()
    return train_classical_models(
        features,
        run_dir,
        backend,
        models=models,
        learning_curve=learning_curve,
        force=force,
        config=config,
        progress=progress,
        feature_spec=spec,
        index_id=index_fingerprint(read_videos_csv(paths.videos_csv)),
    )
