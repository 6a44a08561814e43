"""The no-code model format: every classical model round-trips bit for bit; other files are refused."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import skops.io as sio
from sklearn.linear_model import LogisticRegression

from core.backend import resolve_backend
from core.runfiles import RunPaths
from models.classical.estimators import MODEL_NAMES, ClassicalModel, library_for
from models.classical.persist import (
    TRUSTED_TYPES,
    load_classical_model,
    model_file,
    portable_model,
    save_classical_model,
)
from models.classical.train import split_features
from pipelines.features.store import load_features
from tests.classical_data import shared_feature_run


@pytest.fixture(scope="module")
def splits(tmp_path_factory):  # type: ignore[no-untyped-def]
    return split_features(load_features(RunPaths(shared_feature_run(tmp_path_factory)).features_npz))


def _fit(name: str, train, params=None) -> ClassicalModel:  # type: ignore[no-untyped-def]
    library = library_for(name, resolve_backend("cpu"))
    return ClassicalModel(name, library, params, seed=0, n_jobs=1).fit(train.X, train.y, groups=train.groups)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_round_trips_bit_for_bit(name, splits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = _fit(name, splits["train"])
    path = save_classical_model(model, model_file(tmp_path / "models", name))
    assert path == tmp_path / "models" / f"{name}.skops" and [p.name for p in path.parent.iterdir()] == [path.name]
    loaded = load_classical_model(path)
    assert type(loaded) is ClassicalModel and loaded.get_params() == model.get_params()
    assert loaded.score_method_ == model.score_method_
    np.testing.assert_array_equal(loaded.classes_, model.classes_)
    for split in ("val", "test"):
        assert np.array_equal(loaded.predict_proba(splits[split].X), model.predict_proba(splits[split].X))
    # Only types of the explicit list (and skops' defaults) are in the file.
    assert set(sio.get_untrusted_types(file=path)) <= set(TRUSTED_TYPES)


def test_an_uncalibrated_svm_round_trips(splits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """With one training video of a class the SVM cannot be calibrated: a bare SVC in the pipeline."""
    train = splits["train"]
    keep = np.ones(len(train), dtype=bool)
    keep[np.flatnonzero(train.y == 0)[1:]] = False
    model = _fit("svm", train.subset(keep))
    assert model.score_method_.startswith("softmax fallback")
    loaded = load_classical_model(save_classical_model(model, tmp_path / "svm.skops"))
    assert np.array_equal(loaded.predict_proba(splits["test"].X), model.predict_proba(splits["test"].X))


def test_a_cpu_model_is_saved_as_it_is(splits) -> None:  # type: ignore[no-untyped-def]
    model = _fit("logreg", splits["train"])
    assert portable_model(model) is model


def test_a_file_with_other_types_is_refused_naming_them(tmp_path) -> None:
    path = tmp_path / "models" / "svm.skops"
    path.parent.mkdir()
    sio.dump({"model": os.system}, path)  # loading it as trusted would hand back os.system
    with pytest.raises(ValueError, match=r"svm\.skops: not loaded, it holds types .*posix\.system"):
        load_classical_model(path)


def test_a_pickle_is_refused_unread(tmp_path) -> None:
    path = tmp_path / "models" / "rf.skops"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match=r"rf\.skops is not a readable skops model file"):
        load_classical_model(path)


def test_another_estimator_is_refused(splits, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "logreg.skops"
    sio.dump(LogisticRegression().fit(splits["train"].X, splits["train"].y), path)
    with pytest.raises(ValueError, match="holds a LogisticRegression, not a classical model"):
        load_classical_model(path)


def test_a_missing_file_names_the_command(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="python cli.py classical --run"):
        load_classical_model(tmp_path / "run" / "models" / "gb.skops")
