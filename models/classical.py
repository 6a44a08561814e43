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

SVM class scores: an SVC has no probabilities of its own. ``SVC(probability=True)`` is
deprecated in scikit-learn 1.9 (removal in 1.11) and was removed from cuML's SVC (26.08);
both projects recommend ``CalibratedClassifierCV(SVC(), ensemble=False)``, which we use on both
backends: one SVC fitted on all the training data, and Platt (sigmoid) calibrators fitted on
out-of-fold decision values. The calibration folds are group-aware when groups are given.

Standardisation (``StandardScaler``) sits inside the model's ``Pipeline`` for the models that
need it (svm, knn, logreg), so its mean and variance come from the data passed to ``fit`` only,
never from validation or test videos. The scaler is scikit-learn's on both backends (a
(N, F) float32 matrix; its cost is negligible next to the model).
"""

from __future__ import annotations

import importlib
from contextlib import nullcontext
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

MODEL_NAMES = ("svm", "rf", "knn", "logreg", "gb")
NEEDS_SCALING = frozenset({"svm", "knn", "logreg"})
CLASSICAL_LIBRARIES = ("sklearn", "cuml")
BOOSTING_LIBRARIES = ("xgboost-cpu", "xgboost-cuda")
CALIBRATION_FOLDS = 3

#: Hyper-parameters fixed for every fit (the grids below vary the others).
BASE_PARAMS: dict[str, dict[str, Any]] = {
    "svm": {"C": 1.0, "gamma": "scale"},
    "rf": {"n_estimators": 100, "max_depth": 16, "max_features": "sqrt"},
    "knn": {"n_neighbors": 5, "weights": "distance"},
    "logreg": {"C": 1.0, "max_iter": 1000},
    # 64 histogram bins: plenty for a few thousand videos, and ~3x cheaper per tree than 256.
    "gb": {"n_estimators": 100, "max_depth": 4, "learning_rate": 0.1, "subsample": 0.9, "max_bin": 64},
}

#: Small grids: a few values of the parameters that matter most on a few hundred videos.
PARAM_GRIDS: dict[str, dict[str, list[Any]]] = {
    "svm": {"C": [1.0, 10.0, 100.0], "gamma": ["scale", 0.01]},
    "rf": {"max_depth": [8, 16], "max_features": ["sqrt", 0.3]},
    "knn": {"n_neighbors": [3, 5, 9], "weights": ["uniform", "distance"]},
    "logreg": {"C": [0.1, 1.0, 10.0]},
    "gb": {"max_depth": [3, 6], "learning_rate": [0.1, 0.3]},
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


def library_for(name: str, backend: Any) -> str:
    """The library that runs ``name``: the backend's boosting stage for gb, classical otherwise.

    ``backend`` is a :class:`pipelines.backend.Backend` or a library name ("sklearn", "cuml",
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


def calibration_folds(
    y: np.ndarray, groups: np.ndarray | None, seed: int, n_splits: int = CALIBRATION_FOLDS
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds for SVM calibration: group-aware where every class has >= 2 groups, else by video.

    Every training fold must contain every class (a decision value per class is calibrated),
    which needs at least two groups per class when whole groups are held out.
    """
    y = np.asarray(y)
    _, class_counts = np.unique(y, return_counts=True)
    if groups is not None:
        groups = np.asarray(groups)
        groups_per_class = min(len(np.unique(groups[y == label])) for label in np.unique(y))
        k = min(n_splits, groups_per_class)
        if k >= 2:
            splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
            folds = list(splitter.split(np.zeros(len(y)), y, groups))
            if all(len(np.unique(y[train])) == len(class_counts) for train, _ in folds):
                return folds
    k = min(n_splits, int(class_counts.min()))
    if k < 2:
        raise ValueError("SVM calibration needs at least 2 training videos of every class")
    return list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


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

    def _build(self, y: np.ndarray, groups: np.ndarray | None) -> Any:
        model = self._library_estimator(len(y))
        if self.name in NEEDS_SCALING:
            model = Pipeline([("scale", StandardScaler()), ("model", model)])
        if self.name == "svm":
            from sklearn.calibration import CalibratedClassifierCV

            model = CalibratedClassifierCV(
                model, method="sigmoid", cv=calibration_folds(y, groups, self.seed), ensemble=False
            )
        return model

    def fit(self, X: Any, y: Any, groups: Any = None) -> ClassicalModel:
        X = np.ascontiguousarray(X, dtype=np.float32)
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{self.name}: training data has a single class")
        encoded = encoded.astype(np.int32)
        self.model_ = self._build(encoded, None if groups is None else np.asarray(groups))
        with thread_limit(self.n_jobs):
            self.model_.fit(X, encoded)
        self.n_features_in_ = X.shape[1]
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        with thread_limit(self.n_jobs):
            scores = _to_numpy(self.model_.predict_proba(X)).astype(np.float64)
        scores = np.clip(scores, 0.0, None)
        totals = scores.sum(axis=1, keepdims=True)
        uniform = np.full_like(scores, 1.0 / scores.shape[1])
        return np.where(totals > 0, scores / np.where(totals > 0, totals, 1.0), uniform)

    def predict(self, X: Any) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def parameter_count(self) -> int | None:
        """Numbers the fitted model stores to predict; None where the library hides them."""
        try:
            return _parameter_count(self.name, self.model_, self.n_features_in_)
        except Exception:
            return None


def _final_estimator(model: Any) -> Any:
    return model.steps[-1][1] if isinstance(model, Pipeline) else model


def _parameter_count(name: str, model: Any, n_features: int) -> int | None:
    scaler = 2 * n_features if name in NEEDS_SCALING else 0
    if name == "svm":
        calibrated = model.calibrated_classifiers_[0]
        svc = _final_estimator(calibrated.estimator)
        n_support = (
            int(np.sum(_to_numpy(svc.n_support_))) if np.ndim(_to_numpy(svc.n_support_)) else int(svc.n_support_)
        )
        dual = int(np.size(_to_numpy(svc.dual_coef_)))
        intercept = int(np.size(_to_numpy(svc.intercept_)))
        return n_support * n_features + dual + intercept + scaler + 2 * len(calibrated.calibrators)
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
    name: str, backend: Any, *, seed: int = 0, n_jobs: int | None = None, **params: Any
) -> ClassicalModel:
    """A :class:`ClassicalModel` for ``name`` on the library the backend chose for it.

    ``params`` override :data:`BASE_PARAMS` (e.g. ``make_estimator("svm", backend, C=10.0)``).
    """
    return ClassicalModel(
        name=name, library=library_for(name, backend), params=params or None, seed=seed, n_jobs=n_jobs
    )
