from __future__ import annotations

import csv
import html
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from analysis.browser import check_layout, find_browser
from analysis.report import analyze_run
from analysis.results import load_results
from core.metrics import classification_metrics
from core.runfiles import RunPaths, append_rejected
from core.schema import Cost, FoldMetrics, LearningCurvePoint, ModelResult, Prediction, load_result, save_result
from models.classical.estimators import ClassicalModel
from models.classical.persist import model_file, save_classical_model
from pipelines.data.records import VideoRecord, index_fingerprint, read_videos_csv, write_videos_csv
from pipelines.features.kernel import FeatureSpec
from pipelines.features.store import FeatureSet, features_fingerprint, save_features

CLASSES = ["PullUps", "Punch", "PushUps"]
MODELS = {"svm": 0.8, "rf": 0.85, "knn": 0.6, "logreg": 0.75, "gb": 0.9, "cnn2d": 0.7, "cnn3d": 0.95}
GROUPS = ["motion"] * 4 + ["appearance"] * 3 + ["colour"] * 3 + ["temporal"] * 2
SPEC = FeatureSpec()  # the settings recorded with the (synthetic) feature matrix


def _group_of(split: str, i: int) -> str:
    """Three consecutive videos (one per class) share a group, as UCF101 group numbers do."""
    return f"{split}{i // 3:02d}"


def _deep_config(model: str) -> dict:
    config = {
        "weights": "none", "frames": 8, "size": 64 if model == "cnn2d" else 48, "stride": 1, "epochs": 10,
        "epochs_run": 10, "best_epoch": 7, "test_clips": 2, "batch_size": 8, "lr": 3e-4, "profile": "cpu",
        "history": [
            {"epoch": float(e), "loss": 1.2 - 0.05 * e, "val_macro_f1": 0.3 + 0.04 * e, "lr": 3e-4} for e in range(10)
        ],
    }  # fmt: skip
    if model == "cnn3d":
        config["stride_fps"] = 25.0
        config["decode"] = {
            "routes": {"dali-cpu": 40, "pyav": 2}, "fallbacks": {}, "frames_decoded_per_clip": 17.5,
            "cache_hit_rate": None,
        }  # fmt: skip
    return config


def _classical_config() -> dict:
    grid = {"C": [0.1, 1.0, 10.0]}
    return {
        "params": {"C": 1.0},
        "grid": grid,
        "cv_folds": 3,
        "cv_macro_f1": 0.81,
        "selection": "macro-F1, mean over StratifiedGroupKFold folds of the train split",
        "cv_results": [
            {"params": {"C": c}, "mean_macro_f1": 0.7 + 0.05 * i, "std_macro_f1": 0.04} for i, c in enumerate(grid["C"])
        ],
    }


def synthetic_result(
    model: str, skill: float, video_ids: list[str], labels: np.ndarray, seed: int, groups: list[str] | None = None
) -> ModelResult:
    """A schema-valid result whose predictions are right with probability ``skill``, shifted by a
    per-group difficulty shared by every model (hard groups are hard for all, as in real data)."""
    rng = np.random.default_rng(seed)
    n, c = len(labels), len(CLASSES)
    groups = groups or [str(i) for i in range(n)]
    difficulty = {g: np.random.default_rng(sum(map(ord, g))).normal(0, 0.25) for g in set(groups)}
    scores = rng.dirichlet(np.ones(c), size=n)
    right = rng.random(n) < np.clip(skill + np.array([difficulty[g] for g in groups]), 0.02, 0.98)
    boost = np.where(right, 1.5, 0.0)
    scores[np.arange(n), labels] += boost
    scores /= scores.sum(1, keepdims=True)
    preds = scores.argmax(1)
    family = "deep" if model.startswith("cnn") else "classical"
    curve = [
        LearningCurvePoint(
            fraction=f,
            n_train_videos=int(60 * f),
            seeds=[0] if family == "deep" else [0, 1, 2],
            macro_f1_mean=skill * (0.6 + 0.4 * f),
            macro_f1_std=0.0 if family == "deep" else 0.05,
            accuracy_mean=skill * (0.6 + 0.4 * f),
            accuracy_std=0.0 if family == "deep" else 0.05,
            epochs=1 if family == "deep" else None,
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
        config=_deep_config(model) if family == "deep" else _classical_config(),
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
    """videos.csv (groups of three videos, one per class), features.npz, results for all seven models,
    CNN embeddings, two saved classical models."""
    paths = RunPaths(run_dir)
    rng = np.random.default_rng(0)
    records, ids, labels, splits, groups = [], [], [], [], []
    for split, count in (("train", 45), ("val", 15), ("test", n_test)):
        for i in range(count):
            label = i % 3
            video_id = f"{CLASSES[label]}/v_{CLASSES[label]}_{split}{i:03d}"
            group = _group_of(split, i)
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
    test_groups = list(np.array(groups)[test])
    for seed, (model, skill) in enumerate(MODELS.items()):
        result = synthetic_result(model, skill, test_ids, labels_a[test], seed, test_groups)
        result.index_fingerprint = index_id
        save_result(result, paths.result_json(model))
    for model in ("cnn2d", "cnn3d"):
        paths.embeddings_dir.mkdir(parents=True, exist_ok=True)
        emb = rng.normal(size=(n_test, 16)).astype(np.float32) + labels_a[test][:, None]
        if model == "cnn3d":  # a scene-biased embedding: each group a tight cluster of its own
            emb = rng.normal(size=(n_test, 16)).astype(np.float32) * 0.05 + np.repeat(
                rng.normal(size=(n_test // 3, 16)) * 5, 3, axis=0
            )
        np.savez(
            paths.embeddings_dir / f"{model}.npz", video_ids=np.array(test_ids), embeddings=emb, labels=labels_a[test]
        )
    if with_models:
        train = np.array(splits) == "train"
        for name in ("logreg", "rf"):
            model = ClassicalModel(name, "sklearn", {"n_estimators": 10} if name == "rf" else None, n_jobs=1)
            paths.models_dir.mkdir(parents=True, exist_ok=True)
            save_classical_model(model.fit(X[train], labels_a[train]), model_file(paths.models_dir, name))
    append_rejected(run_dir, "/data/broken.avi", "moov atom not found", "prepare")
    # As prepare records an official split whose lists name a video the folder lacks.
    paths.run_json.write_text(json.dumps({"stage": "prepare", "listed_missing": ["punch/v_punch_g09_c01"]}))
    return run_dir


FIGURES = [
    "accuracy_f1.png",
    "precision_recall.png",
    "roc_macro.png",
    "roc_per_class.png",
    "confusion_counts.png",
    "confusion_normalised.png",
    "pairs_matrix.png",
    "pairs_differences.png",
    "mcnemar_matrix.png",
    "training_history.png",
    "cost_training_time.png",
    "cost_inference_time.png",
    "cost_model_size.png",
    "cost_peak_memory.png",
    "accuracy_vs_cost.png",
    "learning_curves.png",
    "importance_feature_groups.png",
    "importance_top_features.png",
    *(f"embedding_{m}_{s}.png" for m in ("tsne", "umap") for s in ("features", "cnn2d", "cnn3d")),
]
EXPECTED_FILES = [
    "index.html",
    "summary.txt",
    "statistics.json",
    "pairs.csv",
    "mcnemar.csv",
    "per_class.csv",
    "hyperparameters.csv",
    "training_history.csv",
    "scene_bias.csv",
    "reference.csv",
    "table_all.csv",
    "table_all.md",
    *FIGURES,
    *(name.replace(".png", ".svg") for name in FIGURES),
]
HUMAN = {
    "svm": "SVM (RBF)",
    "rf": "Random Forest",
    "knn": "k-NN",
    "logreg": "Logistic Regression",
    "gb": "Gradient Boosting (XGBoost)",
    "cnn2d": "ResNet-18 + temporal pooling (2D CNN)",
    "cnn3d": "R3D-18 (3D CNN)",
}


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = make_synthetic_run(tmp_path_factory.mktemp("run"))
    return analyze_run(run_dir, progress=False, n_resamples=2000, command="python cli.py analyze --run x")


def test_every_expected_file_exists(report: Path):
    missing = [name for name in EXPECTED_FILES if not (report.parent / name).is_file()]
    assert not missing
    assert not list(report.parent.glob("*.tmp")) and not list(report.parent.glob(".*"))


def test_figures_are_drawn_at_200_dpi_with_a_vector_copy(report: Path):
    from PIL import Image

    for name in FIGURES:
        with Image.open(report.parent / name) as image:
            assert image.info["dpi"][0] == pytest.approx(200, abs=1)
        assert (report.parent / name.replace(".png", ".svg")).read_text().lstrip().startswith("<?xml")


def test_html_references_only_existing_files_and_works_offline(report: Path):
    page = report.read_text()
    links = re.findall(r'(?:src|href)="([^"#]+)"', page)
    assert links and all((report.parent / link).is_file() for link in links)
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for section in ("summary", "trained", "performance", "statistics", "efficiency", "data", "representations",
                    "interpretability", "reference", "environment"):  # fmt: skip
        assert f"id='{section}'" in page
    assert page.count("What this shows") >= 20
    for raw in ("statistics.json", "table_all.csv", "per_class.csv", "../results/svm.json"):
        assert f'href="{raw}"' in page


def test_models_appear_by_their_human_names(report: Path):
    page = report.read_text()
    for code, name in HUMAN.items():
        assert html.escape(name) in page
        assert f">{code}<" not in page  # never a bare code in a cell or heading
    summary = (report.parent / "summary.txt").read_text()
    for name in HUMAN.values():
        assert name in summary
    assert "has the highest test macro-F1" in summary and "model pairs differ at the group level" in summary
    assert "| SVM (RBF) |" in (report.parent / "table_all.md").read_text()


def test_the_report_says_what_was_trained(report: Path):
    page = report.read_text()
    trained = page[page.index("id='trained'") : page.index("id='performance'")]
    assert "from scratch" in trained and "8" in trained and "64 px" in trained and "48 px" in trained
    assert "TSN segments" in trained and "10 (best: epoch 7)" in trained and "2 per video" in trained
    assert "a window of frames 40 ms apart: stride 1 at 25 fps, scaled to each video" in trained
    assert "dali-cpu: 40, pyav: 2; PyAV decoded 17.5 frames per clip" in trained  # how clips were decoded
    assert "cache hit rate" not in trained  # no cache used
    assert "C=1.0" in trained and "C in [0.1, 1.0, 10.0]" in trained  # chosen and grid
    assert "Validation macro-F1" in trained and "0.660" in trained  # per-epoch history (0.3 + 0.04 * 9)
    summary = (report.parent / "summary.txt").read_text()
    assert "WARNING ResNet-18 + temporal pooling (2D CNN) was trained from scratch" in summary
    assert "on 8-frame clips" in summary and "at 48 px" in summary


def test_environment_lists_versions_once_with_commit_and_command(report: Path):
    page = report.read_text()
    environment = page[page.index("id='environment'") :]
    assert page.count(np.__version__) == 1
    assert "git commit" in environment and "python cli.py analyze --run x" in environment
    assert "broken.avi" in environment and "moov atom" in environment
    assert "name 1 video(s) of these classes that are not in the data folder (punch/v_punch_g09_c01)" in environment
    assert "no saved model" in page  # svm/knn/gb/cnn models have no file: a note, not a crash


def test_statistics_json_has_the_group_format(report: Path):
    stats = json.loads((report.parent / "statistics.json").read_text())
    assert stats["resampling_unit"] == "group"
    assert (stats["n_test_groups"], stats["n_test_videos"]) == (10, 30)
    assert set(stats["models"]) == set(MODELS)
    for model in MODELS:
        for metric in ("accuracy", "macro_f1", "roc_auc_macro_ovr"):
            value = stats["models"][model][metric]
            assert value["low"] <= value["estimate"] <= value["high"]
    assert len(stats["pairs"]) == 21
    for pair in stats["pairs"]:
        assert {"a", "b", "test", "p", "p_holm", "difference"} <= set(pair)
        assert "sign-flip" in pair["test"] and pair["p"] <= pair["p_holm"] <= 1
        assert pair["difference"]["low"] <= pair["difference"]["estimate"] <= pair["difference"]["high"]


def independent_group_intervals(run_dir: Path, model: str, resamples: int = 2000) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of accuracy and macro-F1 from ``results/<model>.json`` and
    videos.csv alone: resample groups, keep their videos, score with scikit-learn."""
    groups = {r.video_id: r.group for r in read_videos_csv(run_dir / "videos.csv")}
    predictions = json.loads((run_dir / "results" / f"{model}.json").read_text())["predictions"]
    by_group: dict[str, list[dict]] = {}
    for p in predictions:
        by_group.setdefault(groups[p["video_id"]], []).append(p)
    names = sorted(by_group)
    rng = np.random.default_rng(12345)
    accuracy, macro_f1 = [], []
    for _ in range(resamples):
        drawn = [p for g in rng.choice(names, len(names)) for p in by_group[g]]
        truth = [p["true_label"] for p in drawn]
        predicted = [p["pred_label"] for p in drawn]
        accuracy.append(accuracy_score(truth, predicted))
        macro_f1.append(f1_score(truth, predicted, average="macro", zero_division=0))
    return {metric: tuple(np.percentile(values, [2.5, 97.5])) for metric, values in
            (("accuracy", accuracy), ("macro_f1", macro_f1))}  # fmt: skip


def test_group_bootstrap_recomputed_independently_agrees(report: Path):
    """The percentile intervals recomputed from the result files and videos.csv alone agree with
    the report's within 0.04."""
    run_dir = report.parent.parent
    stats = json.loads((report.parent / "statistics.json").read_text())
    for model in ("svm", "cnn2d"):
        for metric, (low, high) in independent_group_intervals(run_dir, model).items():
            reported = stats["models"][model][metric]
            assert abs(reported["low"] - low) <= 0.04 and abs(reported["high"] - high) <= 0.04


def test_one_definition_of_told_apart(report: Path):
    pairs = list(csv.DictReader((report.parent / "pairs.csv").open()))
    apart = sum(row["significant"] == "True" for row in pairs)
    assert all((row["significant"] == "True") == (float(row["p_holm"]) < 0.05) for row in pairs)
    page = report.read_text()
    assert f"{apart} of 21 model pairs differ at the group level" in page
    mcnemar = list(csv.DictReader((report.parent / "mcnemar.csv").open()))
    assert len(mcnemar) == 21 and all("independent" in row["unit"] for row in mcnemar)
    assert all((row["significant"] == "True") == (float(row["p_holm"]) < 0.05) for row in mcnemar)
    assert "assumes independent videos" in page


def test_ten_groups_can_show_a_difference_so_the_summary_does_not_say_otherwise(report: Path):
    # 2/2^10 = 0.00195, times 21 pairs = 0.041 < 0.05 (tests/analysis/test_verdicts.py: fewer groups).
    summary = (report.parent / "summary.txt").read_text()
    assert "no difference" not in summary and "can be detected" not in summary
    assert "95 % intervals: bootstrap over 10 test groups (30 videos)" in summary


def test_scene_bias_and_maps_by_group(report: Path):
    rows = {row["representation"]: row for row in csv.DictReader((report.parent / "scene_bias.csv").open())}
    assert set(rows) == {"features", "cnn2d", "cnn3d"}
    assert float(rows["cnn3d"]["nn_same_group"]) == 1.0 and rows["cnn3d"]["clusters_by_group"] == "True"
    assert rows["features"]["clusters_by_group"] == "False"
    summary = (report.parent / "summary.txt").read_text()
    assert "R3D-18 (3D CNN) embeddings cluster by group more than by class" in summary
    assert "by test group" in report.read_text()


def test_per_class_scores_and_the_notebook_reference(report: Path):
    per_class = list(csv.DictReader((report.parent / "per_class.csv").open()))
    assert len(per_class) == 7 * 3 and {row["class"] for row in per_class} == set(CLASSES)
    page = report.read_text()
    assert "F1 per class and model" in page
    reference = page[page.index("id='reference'") : page.index("id='environment'")]
    assert "97.8 %" in reference and "62.0 min" in reference and "1.3 s" in reference  # ResNet-18: 3718 s, 1.26 s
    assert "46 test videos" in reference and "frozen" in reference


def test_learning_curve_caption_states_seeds_and_epochs(report: Path):
    page = report.read_text()
    assert "SVM (RBF): 3 seeds" in page and "R3D-18 (3D CNN): 1 seed, 1 epoch(s) per point" in page
    assert "one seed, so no band" in page


def test_report_renders_in_chromium_within_the_window(report: Path):
    if find_browser() is None:
        pytest.skip("no Chromium installed (apt-get install chromium); the structural test below still runs")
    layout = check_layout(report, width=1400)
    assert layout.fits, layout.too_wide
    # The main table's two halves fit a 1400-px window without scrolling.
    assert not {"Test scores: estimate [95 % interval]", "Measured costs"} & set(layout.scrolled), layout.scrolled
    assert check_layout(report, width=1000).fits  # narrower windows scroll tables only


def test_every_table_sits_in_a_horizontal_scroller(report: Path):
    page = report.read_text()
    assert page.count("<table>") == page.count('<div class="scroll"><table>') > 10
    assert ".scroll{overflow-x:auto" in page and "figure img{max-width:100%" in page


def test_k_fold_results_show_the_spread_over_folds(tmp_path: Path):
    run_dir = make_synthetic_run(tmp_path / "run", n_test=12, with_models=False)
    paths = RunPaths(run_dir)
    for model in ("svm", "cnn3d"):
        result = load_result(paths.result_json(model))
        for i, p in enumerate(result.predictions):
            p.fold = i % 2
        result.folds = [
            FoldMetrics(fold, replace(result.metrics, accuracy=0.5 + 0.2 * fold), n_train_videos=40) for fold in (0, 1)
        ]
        save_result(result, paths.result_json(model))
    index = analyze_run(run_dir, progress=False, n_resamples=200, interpret=False, embeddings=())
    stats = json.loads((index.parent / "statistics.json").read_text())
    assert stats["models"]["svm"]["folds"]["n_folds"] == 2
    assert stats["models"]["svm"]["folds"]["accuracy"]["mean"] == pytest.approx(0.6)
    assert stats["models"]["svm"]["folds"]["accuracy"]["sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert "folds" not in stats["models"]["rf"]
    page = index.read_text()
    assert "Across the outer folds" in page and "0.600 ± 0.141" in page


def test_invalid_result_is_skipped_with_a_note(tmp_path: Path):
    run_dir = make_synthetic_run(tmp_path / "run", n_test=12, with_models=False)
    (RunPaths(run_dir).results_dir / "broken.json").write_text('{"model": "x"}')
    results, notes = load_results(run_dir)
    assert len(results) == 7 and notes and "broken.json" in notes[0]
    index = analyze_run(run_dir, progress=False, n_resamples=100, interpret=False, embeddings=())
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
