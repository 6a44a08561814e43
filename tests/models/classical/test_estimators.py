from __future__ import annotations

import importlib
import inspect
import sys
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from core.backend import resolve_backend
from models.classical.estimators import (
    BASE_PARAMS,
    MODEL_NAMES,
    NEEDS_SCALING,
    PARAM_GRIDS,
    ClassicalModel,
    calibration_folds,
    estimator_spec,
    fit_cost,
    library_for,
    make_estimator,
)
from models.classical.train import param_candidates, split_features
from pipelines.features.store import load_features
from tests.classical_data import shared_feature_run


@pytest.fixture(scope="module")
def splits(tmp_path_factory):  # type: ignore[no-untyped-def]
    return split_features(load_features(shared_feature_run(tmp_path_factory) / "features.npz"))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_fits_and_predicts_real_features(name: str, splits) -> None:  # type: ignore[no-untyped-def]
    train, test = splits["train"], splits["test"]
    model = make_estimator(name, resolve_backend("cpu"), n_jobs=1).fit(train.X, train.y, groups=train.groups)
    proba = model.predict_proba(test.X)
    assert proba.shape == (len(test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba >= 0).all()
    predicted = model.predict(test.X)
    np.testing.assert_array_equal(predicted, model.classes_[proba.argmax(axis=1)])
    assert set(predicted) <= set(train.y)
    assert model.parameter_count() > 0


@pytest.mark.gpu
def test_gradient_boosting_on_cuda_predicts_from_gpu_memory() -> None:
    """XGBoost with device="cuda" gets its test rows in GPU memory: no device-mismatch warning (given
    host arrays it warns and predicts through a slower copy). Its trees are not the CPU's (on an
    H200, 10-20 % of test predictions differed on hard data), so it must learn, not match."""
    backend = resolve_backend("gpu")
    if backend.boosting.name != "xgboost-cuda":
        pytest.skip(f"XGBoost with CUDA is not usable here: {backend.boosting.reason}")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 40)).astype(np.float32)
    x[:, :4] += 2.0 * y[:, None]  # the CPU model scores 0.93-0.97 on such data (5 seeds)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proba = make_estimator("gb", backend, n_jobs=1).fit(x[:240], y[:240]).predict_proba(x[240:])
    assert proba.shape == (60, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert (proba.argmax(axis=1) == y[240:]).mean() >= 0.8


@pytest.mark.filterwarnings("ignore:.*Device is changed from GPU to CPU:UserWarning")
def test_a_gpu_trained_gradient_boosting_model_predicts_with_an_xgboost_without_cuda(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A model fitted on XGBoost-CUDA and used with the xgboost-cpu build (e.g. `predict` on another
    machine) gets its rows in host memory even where CuPy imports: that XGBoost cannot read GPU
    arrays and would raise. (This machine's XGBoost has no CUDA; CuPy is a stand-in that refuses.)"""
    import xgboost

    if xgboost.build_info().get("USE_CUDA"):
        pytest.skip("this XGBoost was built with CUDA")
    refusing = type(sys)("cupy")
    refusing.asarray = lambda *args, **kwargs: pytest.fail("rows were sent to the GPU")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cupy", refusing)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = rng.normal(size=(120, 10)).astype(np.float32)
    x[:, :2] += 2.0 * y[:, None]
    model = ClassicalModel("gb", "xgboost-cuda", params={"n_estimators": 10}).fit(x[:90], y[:90])
    proba = model.predict_proba(x[90:])
    assert proba.shape == (30, 3) and (proba.argmax(axis=1) == y[90:]).mean() >= 0.8


def test_backend_picks_the_library_per_model() -> None:
    backend = resolve_backend("cpu")
    assert [library_for(name, backend) for name in MODEL_NAMES] == ["sklearn"] * 4 + ["xgboost-cpu"]
    assert library_for("gb", "cuml") == "xgboost-cuda"
    assert library_for("svm", "xgboost-cuda") == "cuml"
    with pytest.raises(ValueError, match="unknown model"):
        library_for("tree", backend)


def test_labels_are_encoded_consistently_with_class_order(splits) -> None:  # type: ignore[no-untyped-def]
    train, test = splits["train"], splits["test"]
    labels = train.y * 10 + 5  # non-contiguous labels: XGBoost alone would reject them
    model = make_estimator("gb", "sklearn", n_jobs=1, n_estimators=10).fit(train.X, labels)
    np.testing.assert_array_equal(model.classes_, [5, 15, 25])
    assert set(model.predict(test.X)) <= {5, 15, 25}


@pytest.mark.parametrize("name", sorted(NEEDS_SCALING))
def test_standardisation_is_fitted_on_training_rows_only(name: str, splits) -> None:  # type: ignore[no-untyped-def]
    train = splits["train"]
    model = make_estimator(name, "sklearn").fit(train.X, train.y, groups=train.groups)
    pipeline = model.model_
    assert isinstance(pipeline, Pipeline) and isinstance(pipeline.steps[0][1], StandardScaler)
    np.testing.assert_allclose(
        pipeline.steps[0][1].mean_, train.X.astype(np.float64).mean(axis=0), rtol=1e-5, atol=1e-6
    )


def test_svm_scores_are_calibrated_on_group_aware_folds(splits) -> None:  # type: ignore[no-untyped-def]
    train = splits["train"]
    model = make_estimator("svm", "sklearn").fit(train.X, train.y, groups=train.groups)
    calibration = model.model_.steps[-1][1]
    assert isinstance(calibration, CalibratedClassifierCV) and calibration.ensemble is False
    folds = calibration_folds(train.y, train.groups, seed=0)
    assert len(folds) == 3
    scored = np.concatenate([calibrate_rows for _, calibrate_rows in folds])
    assert sorted(scored) == list(range(len(train)))  # every video calibrated once
    for fit_rows, calibrate_rows in folds:
        assert not set(train.groups[fit_rows]) & set(train.groups[calibrate_rows])
        assert len(np.unique(train.y[fit_rows])) == 3 and len(np.unique(train.y[calibrate_rows])) == 3


def test_svm_scores_on_a_tiny_real_feature_matrix_follow_the_svm(splits) -> None:  # type: ignore[no-untyped-def]
    # 30 training videos: the out-of-fold decision values are noise and Platt sigmoids come out
    # decreasing, which used to invert the SVC's ranking (0 accuracy on the tiny profile).
    train, val, test = splits["train"], splits["val"], splits["test"]
    model = make_estimator("svm", "sklearn", n_jobs=1).fit(train.X, train.y, groups=train.groups)
    svc = Pipeline([("scale", StandardScaler()), ("svc", SVC(kernel="rbf"))]).fit(train.X, train.y)
    for rows in (val, test):
        proba = model.predict_proba(rows.X)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
        if model.score_method_ == "calibrated":
            calibrators = model.model_.steps[-1][1].calibrated_classifiers_[0].calibrators
            assert all(calibrator.a_ < 0 for calibrator in calibrators)  # rising with the decision value
        else:
            assert model.score_method_.startswith("softmax fallback")
            np.testing.assert_array_equal(model.predict(rows.X), svc.predict(rows.X))
            decision = svc.decision_function(rows.X)  # scores rank videos as the decision values do
            np.testing.assert_allclose(
                np.log(proba) - np.log(proba).mean(axis=1, keepdims=True),
                decision - decision.mean(axis=1, keepdims=True),
                atol=1e-4,
            )
    assert model.score_method_.startswith("softmax fallback")  # what these 30 videos give; both paths stay sound


def test_svm_without_enough_videos_to_calibrate_falls_back_instead_of_failing(splits) -> None:  # type: ignore[no-untyped-def]
    train = splits["train"]
    keep = np.concatenate([np.flatnonzero(train.y == 0)[:1], np.flatnonzero(train.y != 0)])  # class 0: 1 video
    model = make_estimator("svm", "sklearn", n_jobs=1).fit(train.X[keep], train.y[keep], groups=train.groups[keep])
    assert model.score_method_.startswith("softmax fallback") and "at least 2" in model.score_method_
    proba = model.predict_proba(splits["test"].X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert model.parameter_count() > 0


def test_fit_cost_orders_cheaper_and_simpler_settings_first() -> None:
    assert fit_cost("rf", {"n_estimators": 25}, 200) < fit_cost("rf", {"n_estimators": 100}, 200)
    assert fit_cost("rf", {"max_depth": 8}, 200) < fit_cost("rf", {"max_depth": None}, 200)
    assert fit_cost("rf", {"max_features": "sqrt"}, 200) < fit_cost("rf", {"max_features": 0.3}, 200)
    assert fit_cost("gb", {"n_estimators": 25}, 200) < fit_cost("gb", {"n_estimators": 50}, 200)
    assert fit_cost("gb", {"max_bin": 16}, 200) < fit_cost("gb", {"max_bin": 64}, 200)
    assert fit_cost("gb", {"max_depth": 2}, 200) < fit_cost("gb", {"max_depth": 4}, 200)
    assert fit_cost("svm", {"C": 1.0}, 200) < fit_cost("svm", {"C": 10.0}, 200)
    assert fit_cost("svm", {"gamma": "scale"}, 200) < fit_cost("svm", {"gamma": 0.01}, 200)  # 1/200 < 0.01
    assert fit_cost("knn", {"n_neighbors": 9, "weights": "uniform"}, 200) < fit_cost("knn", {"n_neighbors": 3}, 200)
    assert fit_cost("logreg", {"C": 0.1}, 200) < fit_cost("logreg", {"C": 10.0}, 200)
    for name in MODEL_NAMES:  # every grid candidate has a finite cost
        assert all(np.isfinite(fit_cost(name, c, 200)) for c in param_candidates(PARAM_GRIDS[name]))


def test_calibration_falls_back_to_video_folds_with_one_group_per_class() -> None:
    y = np.repeat([0, 1, 2], 4)
    groups = np.repeat(["a", "b", "c"], 4)
    folds = calibration_folds(y, groups, seed=0)
    assert len(folds) == 3
    with pytest.raises(ValueError, match="at least 2"):
        calibration_folds(np.array([0, 1, 1]), None, seed=0)


def test_model_is_a_scikit_learn_estimator() -> None:
    model = make_estimator("rf", "sklearn", n_estimators=5)
    assert not hasattr(model, "model_")  # no work in the constructor
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert copy.resolved_params()["n_estimators"] == 5


def _accepted_keywords(cls: type) -> set[str]:
    """Explicit constructor keywords along the MRO (a ``**kwargs`` catch-all does not count)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        parameters = inspect.signature(init).parameters.values()
        names |= {
            p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
        }
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    if hasattr(cls, "_get_param_names"):
        try:
            names |= set(cls._get_param_names())
        except (TypeError, RuntimeError):  # scikit-learn refuses *args constructors
            pass
    return names


def _every_spec(library: str):  # type: ignore[no-untyped-def]
    names = ["gb"] if library.startswith("xgboost") else [name for name in MODEL_NAMES if name != "gb"]
    for name in names:
        for candidate in param_candidates(PARAM_GRIDS[name]):
            yield estimator_spec(name, library, {**BASE_PARAMS[name], **candidate}, seed=0, n_jobs=1)


@pytest.mark.parametrize("library", ["cuml", "xgboost-cuda", "xgboost-cpu", "sklearn"])
def test_every_keyword_we_pass_exists_in_the_installed_library(library: str) -> None:
    module_name = "cuml" if library == "cuml" else "xgboost" if library.startswith("xgboost") else "sklearn"
    try:
        importlib.import_module(module_name)
    except Exception as exc:  # cuML is importable only where the RAPIDS wheels are installed
        pytest.skip(
            f"{module_name} not importable here ({type(exc).__name__}: {exc}); its keywords are checked where it is"
        )
    checked = 0
    for module, cls_name, kwargs in _every_spec(library):
        cls = getattr(importlib.import_module(module), cls_name)
        unknown = set(kwargs) - _accepted_keywords(cls)
        assert not unknown, f"{module}.{cls_name} does not take {sorted(unknown)}"
        checked += 1
    assert checked > 0
