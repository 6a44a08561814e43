"""Saved classical models: skops files that are loaded without running code from the file.

``RUN_DIR/models/<model>.skops`` holds a fitted :class:`~models.classical.estimators.ClassicalModel`
(its scikit-learn ``Pipeline(StandardScaler, estimator)``, ``CalibratedClassifierCV(SVC)`` or
``XGBClassifier`` inside). skops stores objects as a JSON schema plus NumPy arrays, never a pickle;
:func:`load_classical_model` builds only the types of :data:`TRUSTED_TYPES` (beyond skops' own
defaults: NumPy, builtins, scikit-learn estimators) and refuses any file that holds another type, so
a run folder received from someone else cannot run code when a model is loaded. The XGBoost
booster is stored through XGBoost's own serialisation (``Booster.__getstate__``: its binary
model buffer), which skops keeps as bytes and XGBoost parses back.

What the type check cannot promise: skops checks types, not contents. scikit-learn does not
bounds-check the node indices of a tree (``sklearn.tree._tree.Tree``: rf) or of a KD/ball tree (knn),
so a crafted file of those models can crash the process when it predicts (see skops'
``UNTRUSTED_TYPE_REASONS``); no code from the file runs either way.

GPU runs: cuML estimators cannot be stored this way. :func:`portable_model` converts each one to its
scikit-learn equivalent with cuML's ``as_sklearn()`` (svm, rf, knn and logreg all have one) before
saving, and stops with a clear message where an estimator has none. This branch needs cuML and a GPU
and is not exercised by the CPU tests.
"""

from __future__ import annotations

import copy
import os
import zipfile
from pathlib import Path
from typing import Any

import skops.io as sio
from sklearn.pipeline import Pipeline

from core.runfiles import atomic_path
from models.classical.estimators import ClassicalModel

MODEL_SUFFIX = ".skops"

#: Types a saved classical model may hold beyond skops' defaults, and nothing else. Each is a type
#: that one of the five models contains once fitted (checked by the tests on every model).
TRUSTED_TYPES: tuple[str, ...] = (
    "models.classical.estimators.ClassicalModel",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.tree._tree.Tree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "xgboost.sklearn.XGBClassifier",
    "xgboost.core.Booster",
)


def model_file(models_dir: str | os.PathLike[str], name: str) -> Path:
    """Where the fitted classical model ``name`` of a run lives: ``models/<name>.skops``."""
    return Path(models_dir) / f"{name}{MODEL_SUFFIX}"


def _is_cuml(estimator: Any) -> bool:
    return type(estimator).__module__.split(".")[0] == "cuml"


def _to_sklearn(estimator: Any) -> Any:
    """``estimator`` with every cuML estimator in it replaced by its scikit-learn equivalent (in place
    for the containers; callers pass a copy)."""
    if isinstance(estimator, Pipeline):
        estimator.steps = [(step, _to_sklearn(part)) for step, part in estimator.steps]
        return estimator
    if hasattr(estimator, "calibrated_classifiers_"):  # CalibratedClassifierCV around a cuML SVC
        for calibrated in estimator.calibrated_classifiers_:
            calibrated.estimator = _to_sklearn(calibrated.estimator)
        estimator.estimator = _to_sklearn(estimator.estimator)
        return estimator
    if not _is_cuml(estimator):
        return estimator
    as_sklearn = getattr(estimator, "as_sklearn", None)
    if as_sklearn is None:
        raise ValueError(
            f"{type(estimator).__name__} from cuML has no scikit-learn equivalent (as_sklearn), so it cannot be "
            "saved in the no-code format; refit it on the CPU: `python cli.py --device cpu classical --run RUN --force`"
        )
    return as_sklearn()


def portable_model(model: ClassicalModel) -> ClassicalModel:
    """``model`` as it can be saved: itself unless it was fitted with cuML, else a copy whose cuML
    estimators are their scikit-learn equivalents (``library`` "sklearn", ``converted_from_`` "cuml")."""
    if model.library != "cuml":
        return model
    converted = copy.deepcopy(model)
    converted.model_ = _to_sklearn(converted.model_)
    converted.library = "sklearn"
    converted.converted_from_ = "cuml"
    return converted


def save_classical_model(model: ClassicalModel, path: str | os.PathLike[str]) -> Path:
    """Write ``model`` (see :func:`portable_model`) to ``path`` atomically; return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        sio.dump(portable_model(model), tmp)
    return path


def load_classical_model(path: str | os.PathLike[str]) -> ClassicalModel:
    """The :class:`ClassicalModel` saved at ``path``, built from :data:`TRUSTED_TYPES` only.

    Raises ``FileNotFoundError`` when missing and ``ValueError`` (naming the file) when it holds other
    types or is not a skops file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `python cli.py classical --run {path.parent.parent}` first")
    refit = f"rerun `python cli.py classical --run {path.parent.parent} --force` if it is your own run"
    try:
        untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is not a readable skops model file ({type(exc).__name__}: {exc}); {refit}") from exc
    if untrusted:
        raise ValueError(
            f"{path}: not loaded, it holds types a classical model of actionbench never contains "
            f"({', '.join(untrusted)}); {refit}"
        )
    try:
        model = sio.load(path, trusted=list(TRUSTED_TYPES))
    except Exception as exc:  # a damaged file fails in many ways; all of them mean "not loadable"
        raise ValueError(f"{path} could not be loaded ({type(exc).__name__}: {exc}); {refit}") from exc
    if not isinstance(model, ClassicalModel):
        raise ValueError(f"{path} holds a {type(model).__name__}, not a classical model of actionbench; {refit}")
    return model
