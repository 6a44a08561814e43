from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import joblib
import numpy as np
import pytest

from analysis.report import analyze_run
from analysis.results import load_results
from core.metrics import classification_metrics
from core.runfiles import RunPaths, append_rejected
from core.schema import Cost, LearningCurvePoint, ModelResult, Prediction, save_result
from models.classical.estimators import ClassicalModel
from pipelines.data.records import VideoRecord, index_fingerprint, read_videos_csv, write_videos_csv
from pipelines.features.kernel import FeatureSpec
from pipelines.features.store import FeatureSet, features_fingerprint, save_features

CLASSES = ["PullUps", "Punch", "PushUps"]
MODELS = {"svm": 0.8, "rf": 0.85, "knn": 0.6, "logreg": 0.75, "gb": 0.9, "cnn2d": 0.7, "cnn3d": 0.95}
GROUPS = ["motion"] * 4 + ["appearance"] * 3 + ["colour"] * 3 + ["temporal"] * 2
SPEC = FeatureSpec()  # the settings recorded with the (synthetic) feature matrix


def synthetic_result(model: str, skill: float, video_ids: list[str], labels: np.ndarray, seed: int) -> ModelResult:
    """A schema-valid result whose predictions are right with probability ``skill``."""
    rng = np.random.default_rng(seed)
    n, c = len(labels), len(CLASSES)
    scores = rng.dirichlet(np.ones(c), size=n)
    right = rng.random(n) < skill
    boost = np.where(right, 1.5, 0.0)
    scores[np.arange(n), labels] += boost
    scores /= scores.sum(1, keepdims=True)
    preds = scores.argmax(1)
    family = "deep" if model.startswith("cnn") else "classical"
    curve = [
        LearningCurvePoint(
            fraction=f,
            n_train_videos=int(60 * f),
            seeds=[0, 1, 2],
            macro_f1_mean=skill * (0.6 + 0.4 * f),
            macro_f1_std=0.05,
            accuracy_mean=skill * (0.6 + 0.4 * f),
            accuracy_std=0.05,
        )
        for f in (0.25, 0.5, 1.0)
    ]
    return ModelResult(
        model=model,
        family=family,
        backend="torch-cpu" if family == "deep" else "sklearn",
        device="cpu",
        versions={"python": "3.11", "numpy": np.__version__},
        seed=0,
        config={"synthetic": True},
        class_names=CLASSES,
        test_protocol="synthetic predictions",
        predictions=[
            Prediction(v, int(t), int(p), [float(s) for s in row])
            for v, t, p, row in zip(video_ids, labels, preds, scores, strict=True)
        ],
        metrics=classification_metrics(labels, preds, scores, CLASSES),
        cost=Cost(
            fit_seconds=100.0 if family == "deep" else 0.5 + seed,
            search_seconds=None if family == "deep" else 2.0,
            inference_seconds_per_video_model=0.05 if family == "deep" else 1e-5 * (seed + 1),
            inference_seconds_per_video_end_to_end=0.2 if family == "deep" else 0.03,
            model_bytes=45_000_000 if family == "deep" else 20_000 * (seed + 1),
            parameters=11_000_000 if family == "deep" else 500,
            flops_per_clip=4e10 if family == "deep" else None,
            peak_memory_fit_bytes=900_000_000 if family == "deep" else 150_000_000,
            peak_memory_predict_bytes=400_000_000 if family == "deep" else None,
        ),
        learning_curve=curve,
    )


def make_synthetic_run(run_dir: Path, n_test: int = 30, with_models: bool = True) -> Path:
    """videos.csv, features.npz, results for all seven models, CNN embeddings, two saved classical models."""
    paths = RunPaths(run_dir)
    rng = np.random.default_rng(0)
    records, ids, labels, splits, groups = [], [], [], [], []
    for split, count in (("train", 45), ("val", 15), ("test", n_test)):
        for i in range(count):
            label = i % 3
            video_id = f"{CLASSES[label]}/v_{CLASSES[label]}_{split}{i:03d}"
            group = f"{CLASSES[label]}_{split}{i // 3}"
            records.append(
                VideoRecord(
                    video_id, f"/data/{video_id}.webm", CLASSES[label], label, group, split, "vp9", 50, 25.0, 160, 120
                )
            )
            ids.append(video_id)
            labels.append(label)
            splits.append(split)
            groups.append(group)
    write_videos_csv(paths.videos_csv, records)
    index_id = index_fingerprint(records)  # as the stages record it (the /data paths do not exist)
    labels_a = np.array(labels)
    X = rng.normal(size=(len(ids), len(GROUPS))).astype(np.float32)
    X[:, 0] += 2 * labels_a  # a motion feature carries the class
    features = FeatureSet(
        X,
        np.array([f"{g}_{i}" for i, g in enumerate(GROUPS)]),
        np.array(GROUPS),
        np.array(ids),
        labels_a,
        np.array(splits),
        np.array(groups),
        np.array(CLASSES),
        features_fingerprint(paths.videos_csv, SPEC),
        SPEC,
    )
    save_features(paths.features_npz, features)
    test = np.array(splits) == "test"
    test_ids = list(np.array(ids)[test])
    for seed, (model, skill) in enumerate(MODELS.items()):
        result = synthetic_result(model, skill, test_ids, labels_a[test], seed)
        result.index_fingerprint = index_id
        save_result(result, paths.result_json(model))
    for model in ("cnn2d", "cnn3d"):
        paths.embeddings_dir.mkdir(parents=True, exist_ok=True)
        emb = rng.normal(size=(n_test, 16)).astype(np.float32) + labels_a[test][:, None]
        np.savez(
            paths.embeddings_dir / f"{model}.npz", video_ids=np.array(test_ids), embeddings=emb, labels=labels_a[test]
        )
    if with_models:
        train = np.array(splits) == "train"
        for name in ("logreg", "rf"):
            model = ClassicalModel(name, "sklearn", {"n_estimators": 10} if name == "rf" else None, n_jobs=1)
            paths.models_dir.mkdir(parents=True, exist_ok=True)
            joblib.dump(model.fit(X[train], labels_a[train]), paths.models_dir / f"{name}.joblib")
    append_rejected(run_dir, "/data/broken.avi", "moov atom not found", "prepare")
    return run_dir


EXPECTED_FILES = [
    "index.html",
    "summary.txt",
    "accuracy_f1.png",
    "precision_recall.png",
    "roc_macro.png",
    "roc_per_class.png",
    "confusion_counts.png",
    "confusion_normalised.png",
    "mcnemar_matrix.png",
    "mcnemar.csv",
    "cost_training_time.png",
    "cost_inference_time.png",
    "cost_model_size.png",
    "cost_peak_memory.png",
    "accuracy_vs_cost.png",
    "learning_curves.png",
    "importance_feature_groups.png",
    "importance_top_features.png",
    *(f"embedding_{m}_{s}.png" for m in ("tsne", "umap") for s in ("features", "cnn2d", "cnn3d")),
    *(f"table_{t}.{e}" for t in ("all", "classical", "deep") for e in ("csv", "md")),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_synthetic_run(tmp_path_factory.mktemp("run"))
    return analyze_run(run_dir, progress=False, n_resamples=300)


def test_every_expected_file_exists(report: Path):
    missing = [name for name in EXPECTED_FILES if not (report.parent / name).is_file()]
    assert not missing
    assert not list(report.parent.glob("*.tmp")) and not list(report.parent.glob(".*"))


def test_html_references_only_existing_files_and_works_offline(report: Path):
    page = report.read_text()
    links = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert links and all((report.parent / link).is_file() for link in links)
    assert "http://" not in page and "https://" not in page
    for section in ("summary", "performance", "statistics", "efficiency", "data", "interpretability", "environment"):
        assert f"id='{section}'" in page
    assert page.count("What this shows") >= 15


def test_html_content(report: Path):
    page = report.read_text()
    for model in MODELS:
        assert f"<b>{model}</b>" in page
    for name in CLASSES:
        assert name in page
    assert "broken.avi" in page and "moov atom" in page  # rejected files
    assert "no saved model" in page  # svm/knn/gb/cnn models have no file: a note, not a crash
    assert 'class="best"' in page
    assert "McNemar" in page and ("too small to separate" in page or "more accurate than" in page)


def test_tables(report: Path):
    all_csv = (report.parent / "table_all.csv").read_text().splitlines()
    assert all_csv[0].startswith("model,family,accuracy,accuracy_ci_low,accuracy_ci_high")
    assert len(all_csv) == 1 + len(MODELS)
    assert len((report.parent / "table_deep.csv").read_text().splitlines()) == 3
    markdown = (report.parent / "table_all.md").read_text()
    assert "**" in markdown and "| gb |" in markdown
    mcnemar = (report.parent / "mcnemar.csv").read_text().splitlines()
    assert len(mcnemar) == 1 + 21  # 7 models -> 21 pairs


def test_invalid_result_is_skipped_with_a_note(tmp_path: Path):
    run_dir = make_synthetic_run(tmp_path / "run", n_test=12, with_models=False)
    (RunPaths(run_dir).results_dir / "broken.json").write_text('{"model": "x"}')
    results, notes = load_results(run_dir)
    assert len(results) == 7 and notes and "broken.json" in notes[0]
    index = analyze_run(run_dir, progress=False, n_resamples=100, interpret=False)
    assert "broken.json" in index.read_text()


def test_a_result_from_another_split_is_skipped_with_a_note(tmp_path: Path):
    run_dir = make_synthetic_run(tmp_path / "run", n_test=12, with_models=False)
    paths = RunPaths(run_dir)
    records = read_videos_csv(paths.videos_csv)
    # `prepare` re-run with another split: a test video of the saved results is now a training video.
    moved = next(i for i, r in enumerate(records) if r.split == "test")
    records[moved] = replace(records[moved], split="train")
    write_videos_csv(paths.videos_csv, records)
    results, notes = load_results(run_dir)
    assert results == [] and len(notes) == 7
    assert all("made from another index" in note and "--force" not in note for note in notes)


def test_no_results_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="no valid result"):
        analyze_run(tmp_path, progress=False)
