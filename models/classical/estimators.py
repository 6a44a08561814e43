"""The five classical models, one interface on cuML (GPU) or scikit-learn (CPU).

:func:`make_estimator` returns a :class:`ClassicalModel`: a scikit-learn compatible classifier
(``fit``/``predict``/``predict_proba``, parameters in ``__init__``, no work in the constructor)
whatever library runs underneath. It encodes labels itself (``classes_`` sorted, columns of
``predict_proba`` in that order) and derives ``predict`` from the class scores, so predictions
and the scores the ROC curves use always agree.

Libraries per model (``library`` is the backend's stage choice):

=========  ==========================================  ====================================
model      ``cuml`` (GPU)                              ``sklearn`` (CPU)
=========  ==========================================  ====================================
svm        cuml.svm.SVC(kernel="rbf") + calibration    sklearn.svm.SVC(kernel="rbf") + calibration
rf         cuml.ensemble.RandomForestClassifier        sklearn.ensemble.RandomForestClassifier
knn        cuml.neighbors.KNeighborsClassifier         sklearn.neighbors.KNeighborsClassifier
logreg     cuml.linear_model.LogisticRegression        sklearn.linear_model.LogisticRegression
gb         xgboost.XGBClassifier(device="cuda")        xgboost.XGBClassifier(device="cpu")
=========  ==========================================  ====================================

Gradient boosting is XGBoost on both backends (``tree_method="hist"``): cuML has no gradient
boosting, and running the same histogram algorithm with the same hyper-parameters on the CPU
("xgboost-cpu") and the GPU ("xgboost-cuda") keeps GPU and CPU results comparable, unlike
swapping in scikit-learn's ``HistGradientBoostingClassifier``, a different implementation.
Comparable, not equal: the devices build different histogram cuts and draw different random
subsamples. On an H200, with the same seed, 10-20 % of test predictions differed between the
two on hard synthetic data, 9-12 % without subsampling (accuracies 0.45-0.70 on both devices).

SVM class scores: an SVC has no probabilities of its own. ``SVC(probability=True)`` is
deprecated in scikit-learn 1.9 (removal in 1.11) and was removed from cuML's SVC (26.08);
both projects recommend ``CalibratedClassifierCV(SVC(), ensemble=False)``, which we use on both
backends: one SVC fitted on all the training data, and Platt (sigmoid) calibrators fitted on
out-of-fold decision values. The calibration folds are group-aware when groups are given
(:func:`calibration_folds`). Documented fallback: when calibration is impossible (a class with
fewer than 2 training videos) or not credible (a fitted sigmoid does not increase with its
class's decision value, which happens on a couple of dozen videos where out-of-fold decision
values are noise), the scores are the softmax of the SVC's one-vs-rest decision values: not
calibrated, but ordered as the SVC's own decisions, so predictions agree with the SVC.
``ClassicalModel.score_method_`` records which ("calibrated" or "softmax fallback: why").

Standardisation (``StandardScaler``) sits inside the model's ``Pipeline`` for the models that
need it (svm, knn, logreg), so its mean and variance come from the data passed to ``fit`` only,
never from validation or test videos. The scaler is scikit-learn's on both backends (a
(N, F) float32 matrix; its cost is negligible next to the model). For the SVM it is fitted once
on all the training data, in front of the calibration (the calibration folds are subsets of
that same training data, so no validation or test statistic enters).

Cost: the grids (:data:`PARAM_GRIDS`) stay small and include cheap settings (few trees, shallow
trees, coarse histograms). Tuning (``models.classical.train.tune_model``) takes the best CV
macro-F1; its "one-se" rule instead takes the cheapest candidate by :func:`fit_cost` within one
standard error of the best.
"""

from __future__ import annotations

import importlib
from contextlib import nullcontext
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from core.backend import Backend

MODEL_NAMES = ("svm", "rf", "knn", "logreg", "gb")
NEEDS_SCALING = frozenset({"svm", "knn", "logreg"})
CLASSICAL_LIBRARIES = ("sklearn", "cuml")
BOOSTING_LIBRARIES = ("xgboost-cpu", "xgboost-cuda")
CALIBRATION_FOLDS = 3

#: Hyper-parameters fixed for every fit (the grids below vary the others).
BASE_PARAMS: dict[str, dict[str, Any]] = {
    "svm": {"C": 1.0, "gamma": "scale"},
    # sqrt(F) candidate features per split: the classic forest setting, and ~4x cheaper per tree than 0.3 F.
    "rf": {"n_estimators": 50, "max_depth": None, "max_features": "sqrt"},
    "knn": {"n_neighbors": 5, "weights": "distance"},
    "logreg": {"C": 1.0, "max_iter": 1000},
    # The hist split search costs ~ nodes x candidate features x bins, not rows: on a few hundred
    # videos XGBoost spends its time there. Half the features per node (colsample_bynode) and
    # coarse histograms cut it 2-4x without loss at this size (the default grid tries 16 and 64 bins).
    "gb": {
        "n_estimators": 50,
        "max_depth": 3,
        "learning_rate": 0.3,
        "subsample": 0.9,
        "colsample_bynode": 0.5,
        "max_bin": 32,
    },
}

#: Small grids of the parameters that matter most on a few hundred videos, each including cheap
#: settings (the "one-se" selection rule prefers them when they score as well).
PARAM_GRIDS: dict[str, dict[str, list[Any]]] = {
    "svm": {"C": [1.0, 10.0, 100.0], "gamma": ["scale", 0.01]},
    "rf": {"n_estimators": [25, 50, 100], "max_depth": [8, None]},
    "knn": {"n_neighbors": [3, 5, 9], "weights": ["uniform", "distance"]},
    "logreg": {"C": [0.1, 1.0, 10.0]},
    "gb": {"n_estimators": [25, 50, 100], "max_depth": [2, 4], "max_bin": [16, 64]},
}

_CUML_CLASSES = {
    "svm": ("cuml.svm", "SVC"),
    "rf": ("cuml.ensemble", "RandomForestClassifier"),
    "knn": ("cuml.neighbors", "KNeighborsClassifier"),
    "logreg": ("cuml.linear_model", "LogisticRegression"),
}
_SKLEARN_CLASSES = {
    "svm": ("sklearn.svm", "SVC"),
    "rf": ("sklearn.ensemble", "RandomForestClassifier"),
    "knn": ("sklearn.neighbors", "KNeighborsClassifier"),
    "logreg": ("sklearn.linear_model", "LogisticRegression"),
}


def library_for(name: str, backend: Backend | str) -> str:
    """The library that runs ``name``: the backend's boosting stage for gb, classical otherwise.

    ``backend`` is a :class:`core.backend.Backend` or a library name ("sklearn", "cuml",
    "xgboost-cpu", "xgboost-cuda"; a classical name given for gb picks the matching device).
    """
    _check_name(name)
    if isinstance(backend, str):
        if name == "gb":
            return {"sklearn": "xgboost-cpu", "cuml": "xgboost-cuda"}.get(backend, backend)
        return {"xgboost-cpu": "sklearn", "xgboost-cuda": "cuml"}.get(backend, backend)
    return backend.boosting.name if name == "gb" else backend.classical.name


def _check_name(name: str) -> None:
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_NAMES)}")


def _features_per_split(max_features: Any, n_features: int) -> float:
    if max_features == "sqrt":
        return max(1.0, float(np.sqrt(n_features)))
    if max_features == "log2":
        return max(1.0, float(np.log2(max(n_features, 2))))
    if max_features is None:
        return float(n_features)
    if isinstance(max_features, float):
        return max(1.0, max_features * n_features)
    return float(max_features)


def fit_cost(name: str, params: dict[str, Any] | None, n_features: int) -> float:
    """Relative fit cost (rf, gb) or complexity (svm, knn, logreg) of ``name`` with ``params``.

    ``params`` override :data:`BASE_PARAMS`. Only comparisons between candidates of one model
    mean anything; the one-standard-error rule of the tuning picks the lowest. Deterministic, so
    a rerun selects the same candidate (measured seconds on shared cores would not):

    * rf: trees x depth x candidate features per split (unlimited depth counts as 32 levels);
    * gb: rounds x depth x histogram bins x share of features per node;
    * svm: C x gamma ("scale" is 1/n_features on standardised features): a larger C or a
      narrower kernel is both the more flexible model and more solver iterations;
    * knn: 1/k, x1.5 with distance weights (the fit costs the same; a larger, uniformly
      weighted neighbourhood is the smoother model);
    * logreg: C (weaker regularisation is the more flexible model and converges more slowly).
    """
    _check_name(name)
    merged = {**BASE_PARAMS[name], **(params or {})}
    if name == "rf":
        depth = merged.get("max_depth") or 32
        return float(merged["n_estimators"]) * depth * _features_per_split(merged.get("max_features"), n_features)
    if name == "gb":
        return (
            float(merged["n_estimators"])
            * merged["max_depth"]
            * merged.get("max_bin", 256)
            * merged.get("colsample_bynode", 1.0)
        )
    if name == "svm":
        gamma = merged["gamma"]
        gamma = 1.0 / max(n_features, 1) if gamma == "scale" else float(gamma)
        return float(merged["C"]) * gamma
    if name == "knn":
        return (1.5 if merged["weights"] == "distance" else 1.0) / float(merged["n_neighbors"])
    return float(merged["C"])


def estimator_spec(
    name: str, library: str, params: dict[str, Any], seed: int = 0, n_jobs: int | None = None
) -> tuple[str, str, dict[str, Any]]:
    """(module, class name, keyword arguments) of the underlying library estimator.

    Pure: builds nothing and imports nothing, so a test can check every keyword against the
    installed library's signature.
    """
    _check_name(name)
    if name == "gb":
        if library not in BOOSTING_LIBRARIES:
            raise ValueError(f"gb runs on {' or '.join(BOOSTING_LIBRARIES)}, not {library!r}")
        kwargs = {
            **params,
            "tree_method": "hist",
            "device": "cuda" if library == "xgboost-cuda" else "cpu",
            "random_state": seed,
            "n_jobs": n_jobs,
        }
        return "xgboost", "XGBClassifier", kwargs
    if library not in CLASSICAL_LIBRARIES:
        raise ValueError(f"{name} runs on {' or '.join(CLASSICAL_LIBRARIES)}, not {library!r}")
    module, cls = (_CUML_CLASSES if library == "cuml" else _SKLEARN_CLASSES)[name]
    kwargs = dict(params)
    if name == "svm":
        kwargs["kernel"] = "rbf"
        if library == "cuml":
            # cuML's multiclass default is one-vs-one pair scores; calibration needs one column per class.
            kwargs["decision_function_shape"] = "ovr"
    elif name == "rf":
        kwargs["random_state"] = seed
        if library == "cuml":
            kwargs["n_streams"] = 1  # one CUDA stream: reproducible trees for a given seed
        else:
            kwargs["n_jobs"] = n_jobs
    elif name == "knn" and library == "sklearn":
        kwargs["n_jobs"] = n_jobs
    elif name == "logreg" and library == "sklearn":
        kwargs["random_state"] = seed
    if library == "cuml":
        kwargs["output_type"] = "numpy"
    return module, cls, kwargs


def _to_numpy(array: Any) -> np.ndarray:
    if hasattr(array, "get"):  # CuPy
        array = array.get()
    elif hasattr(array, "to_numpy"):  # cuDF / pandas
        array = array.to_numpy()
    return np.asarray(array)


def thread_limit(n_jobs: int | None) -> Any:
    """Cap BLAS/OpenMP thread pools at ``n_jobs`` (None: leave them alone).

    On small matrices, idle BLAS threads spinning on busy shared cores cost more than the
    work: capping them made the calibrated SVM fit ~6x faster on the 2-core CI machine.
    """
    if n_jobs is None:
        return nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=max(1, int(n_jobs)))


def _class_balanced_group_folds(
    y: np.ndarray, groups: np.ndarray, n_splits: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Whole groups dealt into ``n_splits`` folds class by class (shuffled, round robin).

    A group counts for the class most of its videos have. Every class with >= ``n_splits``
    groups has a group in every fold. A few NumPy operations: StratifiedGroupKFold's search for
    balanced folds costs more than the SVM fits it serves on a few hundred videos.
    """
    rng = np.random.default_rng(seed)
    _, y_index = np.unique(y, return_inverse=True)
    group_names, group_index = np.unique(groups, return_inverse=True)
    counts = np.zeros((len(group_names), int(y_index.max()) + 1), dtype=np.int64)
    np.add.at(counts, (group_index, y_index), 1)
    group_class = counts.argmax(axis=1)
    group_fold = np.empty(len(group_names), dtype=np.int64)
    offset = 0
    for label in np.unique(group_class):
        members = rng.permutation(np.flatnonzero(group_class == label))
        group_fold[members] = (offset + np.arange(len(members))) % n_splits
        offset += len(members)  # the next class starts where this one stopped: balanced fold sizes
    row_fold = group_fold[group_index]
    return [(np.flatnonzero(row_fold != k), np.flatnonzero(row_fold == k)) for k in range(n_splits)]


def calibration_folds(
    y: np.ndarray, groups: np.ndarray | None, seed: int, n_splits: int = CALIBRATION_FOLDS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds for SVM calibration: group-aware where every class has >= 2 groups, else by video.

    Every training fold must contain every class (a decision value per class is calibrated),
    which needs at least two groups per class when whole groups are held out. Raises
    ValueError when a class has fewer than 2 videos (no calibration is possible).
    """
    y = np.asarray(y)
    labels, class_counts = np.unique(y, return_counts=True)
    if groups is not None:
        groups = np.asarray(groups)
        groups_per_class = min(len(np.unique(groups[y == label])) for label in labels)
        k = min(n_splits, groups_per_class)
        if k >= 2:
            folds = _class_balanced_group_folds(y, groups, k, seed)
            if all(len(np.unique(y[train])) == len(labels) and len(test) for train, test in folds):
                return folds
    k = min(n_splits, int(class_counts.min()))
    if k < 2:
        raise ValueError("SVM calibration needs at least 2 training videos of every class")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = values - values.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


class ClassicalModel(ClassifierMixin, BaseEstimator):
    """One of the five classical models on one library, scikit-learn compatible.

    ``name``: svm | rf | knn | logreg | gb. ``library``: sklearn | cuml (gb: xgboost-cpu |
    xgboost-cuda). ``params``: model hyper-parameters (defaults :data:`BASE_PARAMS`).
    ``n_jobs``: threads (rf/knn/gb workers, and the cap on BLAS/OpenMP pools during fit and
    predict); None: library defaults.
    ``fit(X, y, groups=None)``: ``groups`` makes the SVM calibration folds group-aware.
    """

    def __init__(
        self,
        name: str = "logreg",
        library: str = "sklearn",
        params: dict[str, Any] | None = None,
        seed: int = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.name = name
        self.library = library
        self.params = params
        self.seed = seed
        self.n_jobs = n_jobs

    def resolved_params(self) -> dict[str, Any]:
        return {**BASE_PARAMS[self.name], **(self.params or {})}

    def _library_estimator(self, n_samples: int) -> Any:
        params = self.resolved_params()
        if self.name == "knn":  # tiny training sets (learning-curve fractions): k <= videos
            params["n_neighbors"] = min(int(params["n_neighbors"]), n_samples)
        module, cls, kwargs = estimator_spec(self.name, self.library, params, self.seed, self.n_jobs)
        return getattr(importlib.import_module(module), cls)(**kwargs)

    def _build(self, y: np.ndarray, groups: np.ndarray | None) -> tuple[Any, str]:
        """The unfitted estimator and, for the SVM, why it is not calibrated ("" when it is)."""
        model = self._library_estimator(len(y))
        not_calibrated = ""
        if self.name == "svm":
            from sklearn.calibration import CalibratedClassifierCV

            try:
                folds = calibration_folds(y, groups, self.seed)
                model = CalibratedClassifierCV(model, method="sigmoid", cv=folds, ensemble=False)
            except ValueError as exc:
                not_calibrated = str(exc)
        if self.name in NEEDS_SCALING:
            model = Pipeline([("scale", StandardScaler()), ("model", model)])
        return model, not_calibrated

    def fit(self, X: Any, y: Any, groups: Any = None) -> ClassicalModel:
        X = np.ascontiguousarray(X, dtype=np.float32)
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{self.name}: training data has a single class")
        encoded = encoded.astype(np.int32)
        self.model_, not_calibrated = self._build(encoded, None if groups is None else np.asarray(groups))
        with thread_limit(self.n_jobs):
            self.model_.fit(X, encoded)
        self.n_features_in_ = X.shape[1]
        self.score_method_ = "predict_proba"
        if self.name == "svm":
            problem = not_calibrated or _calibration_problem(_final_estimator(self.model_))
            self.score_method_ = f"softmax fallback: {problem}" if problem else "calibrated"
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        with thread_limit(self.n_jobs):
            if getattr(self, "score_method_", "calibrated").startswith("softmax"):
                scores = _softmax(_svm_decision_values(self.model_, X))
            else:
                scores = _to_numpy(self.model_.predict_proba(self._library_input(X))).astype(np.float64)
        scores = np.clip(scores, 0.0, None)
        totals = scores.sum(axis=1, keepdims=True)
        uniform = np.full_like(scores, 1.0 / scores.shape[1])
        return np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), uniform)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def _library_input(self, X: np.ndarray) -> Any:
        """``X`` where the library predicts from it. XGBoost on CUDA takes it in GPU memory (CuPy):
        from host memory it warns of mismatched devices and predicts through a slower DMatrix copy
        (seen on an H200). Where this XGBoost has no CUDA (a GPU-trained model used with the
        xgboost-cpu build), or CuPy or a usable GPU is missing, the host array is passed: XGBoost
        then predicts on the CPU (with a warning that it changed the device)."""
        if self.library != "xgboost-cuda" or not _xgboost_has_cuda():
            return X
        try:
            import cupy

            return cupy.asarray(X)
        except (ImportError, RuntimeError):  # RuntimeError: CuPy's CUDA errors (no usable GPU)
            return X

    def parameter_count(self) -> int | None:
        """Numbers the fitted model stores to predict; None where the library hides them."""
        try:
            return _parameter_count(self.name, self.model_, self.n_features_in_)
        except Exception:
            return None


def _xgboost_has_cuda() -> bool:
    """Whether the installed XGBoost was built with CUDA (xgboost-cu13, not xgboost-cpu)."""
    import xgboost

    return bool(xgboost.build_info().get("USE_CUDA"))


def _final_estimator(model: Any) -> Any:
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def _svc_and_calibrators(model: Any) -> tuple[Any, list[Any]]:
    """The SVC fitted on all the training data and its calibrators (none when not calibrated)."""
    final = _final_estimator(model)
    if hasattr(final, "calibrated_classifiers_"):
        calibrated = final.calibrated_classifiers_[0]
        return calibrated.estimator, list(calibrated.calibrators)
    return final, []


def _calibration_problem(calibration: Any) -> str:
    """Why fitted sigmoid calibrators are not credible, or "" when they are.

    Platt scaling models P(class | decision value) as a sigmoid that must rise with the class's
    decision value; one that falls (scikit-learn's slope ``a_`` >= 0 in 1/(1+exp(a*f+b)))
    inverts the SVC's ranking, which on tiny training sets turns a perfect SVC into a 0-accuracy one.
    """
    slopes = [float(getattr(calibrator, "a_", -1.0)) for calibrator in _svc_and_calibrators(calibration)[1]]
    if any(slope >= 0 for slope in slopes):
        return "a calibration sigmoid does not increase with its class's decision value (too few out-of-fold videos)"
    return ""


def _svm_decision_values(model: Any, X: np.ndarray) -> np.ndarray:
    """One-vs-rest decision values (N, C) of the SVC fitted on all the training data."""
    svc, _ = _svc_and_calibrators(model)
    if isinstance(model, Pipeline):
        for _, step in model.steps[:-1]:
            X = step.transform(X)
    values = _to_numpy(svc.decision_function(X)).astype(np.float64)
    if values.ndim == 1:  # binary: one signed value for the second class
        values = np.column_stack([-values / 2, values / 2])
    return values


def _parameter_count(name: str, model: Any, n_features: int) -> int | None:
    scaler = 2 * n_features if name in NEEDS_SCALING else 0
    if name == "svm":
        svc, calibrators = _svc_and_calibrators(model)
        n_support = (
            int(np.sum(_to_numpy(svc.n_support_))) if np.ndim(_to_numpy(svc.n_support_)) else int(svc.n_support_)
        )
        dual = int(np.size(_to_numpy(svc.dual_coef_)))
        intercept = int(np.size(_to_numpy(svc.intercept_)))
        return n_support * n_features + dual + intercept + scaler + 2 * len(calibrators)
    estimator = _final_estimator(model)
    if name == "rf":
        if hasattr(estimator, "estimators_"):
            return int(sum(tree.tree_.node_count for tree in estimator.estimators_))
        return None
    if name == "knn":
        fitted = getattr(estimator, "_fit_X", None)
        return None if fitted is None else int(np.size(_to_numpy(fitted))) + scaler
    if name == "logreg":
        return int(np.size(_to_numpy(estimator.coef_)) + np.size(_to_numpy(estimator.intercept_))) + scaler
    if name == "gb":
        return int(sum(len(tree.strip().splitlines()) for tree in estimator.get_booster().get_dump()))
    return None


def make_estimator(
    name: str, backend: Backend | str, *, seed: int = 0, n_jobs: int | None = None, **params: Any
) -> ClassicalModel:
    """A :class:`ClassicalModel` for ``name`` on the library the backend chose for it.

    ``params`` override :data:`BASE_PARAMS` (e.g. ``make_estimator("svm", backend, C=10.0)``).
    """
    return ClassicalModel(
        name=name, library=library_for(name, backend), params=params or None, seed=seed, n_jobs=n_jobs
    )
