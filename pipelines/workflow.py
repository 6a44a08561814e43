"""The whole comparison in one call: demo data -> prepare -> features -> classical -> deep -> report.

Every stage resumes: its function skips work whose outputs are up to date (demo clips present,
videos.csv unchanged, features.npz fingerprint, result files), so a killed run continues where it
stopped. A :class:`Profile` bundles the settings of every stage for one kind of machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.demo import DemoConfig
from pipelines.runfiles import RunPaths, rejected_notice

DEEP_MODELS = ("cnn2d", "cnn3d")
PROFILE_NAMES = ("tiny", "cpu", "gpu")


@dataclass(frozen=True)
class Profile:
    """Settings of every stage for one budget.

    ``deep_overrides`` are applied on top of ``DeepConfig.for_profile(model, name)``;
    ``feature_spec`` None means the kernel's defaults; ``classical`` holds ClassicalConfig fields.
    """

    name: str
    description: str
    demo: DemoConfig
    classical: dict[str, Any] = field(default_factory=dict)
    feature_spec: dict[str, Any] | None = None
    deep_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)  # keyword arguments of analyze_run
    split_seed: int = 0

    def deep_config(self, model: str) -> Any:
        from models.deep_config import DeepConfig

        return DeepConfig.for_profile(model, self.name, **self.deep_overrides.get(model, {}))

    def classical_config(self) -> Any:
        from models.train_classical import ClassicalConfig

        return ClassicalConfig(**self.classical)

    def features_spec(self) -> Any:
        from pipelines.features import FeatureSpec

        return FeatureSpec(**self.feature_spec) if self.feature_spec is not None else FeatureSpec()


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        name="tiny",
        description="seconds on a CPU, for tests and CI: 3 classes x 6 groups x 2 short 64x48 clips, tiny models",
        demo=DemoConfig(
            groups=6, clips_per_group=2, size=(64, 48), seconds=(0.8, 0.8), difficulty="easy", codec="mjpeg"
        ),
        classical=dict(
            cv_folds=2,
            grids={
                "svm": {"C": [1.0]},
                "rf": {"max_depth": [8], "n_estimators": [20]},
                "knn": {"n_neighbors": [3]},
                "logreg": {"C": [1.0]},
                "gb": {"max_depth": [3], "n_estimators": [20]},
            },
            learning_curve_fractions=(0.5, 1.0),
            learning_curve_seeds=(0, 1),
            end_to_end_videos=1,
        ),
        feature_spec=dict(frames=8, size=32, grid=2),
        # 16 px crops: a pipeline check, not a measurement; a quarter of the 32 px compute on CI's 2 cores.
        deep_overrides={"cnn2d": dict(size=16, batch_size=8), "cnn3d": dict(size=16, batch_size=8)},
        # UMAP's first call JIT-compiles for ~10 CPU seconds; the report tests cover it.
        analysis=dict(n_resamples=1000, gradcam_per_class=1, occlusion_per_class=2, embeddings=("tsne",)),
    ),
    "cpu": Profile(
        name="cpu",
        description="the default demo dataset on a 2-core CPU in at most 15 minutes",
        demo=DemoConfig(),
    ),
    "gpu": Profile(
        name="gpu",
        description="the notebook study's settings on a CUDA GPU (16 frames, 224 px 2D / 112 px 3D, 20 epochs)",
        demo=DemoConfig(),
    ),
}


def default_profile(backend: Any) -> str:
    return "gpu" if backend.on_gpu else "cpu"


def _banner(index: int, total: int, title: str, progress: bool) -> None:
    if progress:
        print(f"\n=== [{index}/{total}] {title} " + "=" * max(3, 60 - len(title)), flush=True)


def _note(message: str, progress: bool) -> None:
    if progress:
        print(f"  {message}", flush=True)


def _weights_or_scratch(config: Any) -> Any:
    """The config, or the same with ``weights="none"`` when its pretrained weights are not on disk
    (nothing is downloaded at run time); the result file records the weights used."""
    from models import pretrained
    from models.deep_build import build_model

    if not pretrained.is_pretrained(config.weights):
        return config
    try:
        build_model(config, 2)
    except pretrained.WeightsUnavailableError as exc:
        _note(f"WARNING {config.model}: {exc} -> training from scratch (weights none) instead.", True)
        return replace(config, weights="none")
    return config


def run_comparison(
    data_root: str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str],
    *,
    profile: str | Profile | None = None,
    backend: Any = None,
    skip_deep: bool = False,
    classes: Sequence[str] | None = None,
    progress: bool = True,
    stop_after: str | None = None,
) -> Path:
    """Run every stage of the comparison into ``run_dir`` and return the report's index.html.

    ``data_root`` None: generate the profile's demo dataset into ``RUN_DIR/demo_data``.
    ``profile``: tiny | cpu | gpu (default gpu on a usable CUDA GPU, else cpu).
    ``stop_after``: a stage name (demo, prepare, features, classical, deep) to stop after.
    """
    from analysis.report import analyze_run
    from models.train_classical import run_classical
    from models.train_deep import has_current_result, run_deep
    from pipelines.feature_store import extract_features
    from pipelines.prepare import prepare_run

    if backend is None:
        from pipelines.backend import resolve_backend

        backend = resolve_backend()
    chosen = profile if isinstance(profile, Profile) else PROFILES.get(profile or default_profile(backend))
    if chosen is None:
        raise ValueError(f"unknown profile {profile!r}; use one of {', '.join(PROFILES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = RunPaths(run_dir)
    classes = list(classes) if classes else None
    stages: list[tuple[str, str, Callable[[], str]]] = []

    if data_root is None:
        demo_dir = run_dir / "demo_data"
        demo = replace(chosen.demo, classes=tuple(classes)) if classes else chosen.demo

        def demo_stage() -> str:
            from pipelines.demo import generate_demo_dataset

            clips = generate_demo_dataset(demo_dir, demo, progress=progress)
            return f"{len(clips)} demo clips in {demo_dir}"

        stages.append(
            (
                "demo",
                f"demo dataset ({len(demo.classes)} classes x {demo.groups} groups x {demo.clips_per_group} clips)",
                demo_stage,
            )
        )
        data_root = demo_dir
    source = Path(data_root)

    def prepare_stage() -> str:
        summary = prepare_run(source, run_dir, classes=classes, seed=chosen.split_seed, progress=progress)
        return str(summary) if summary is not None else f"videos.csv in {run_dir}"

    rejected: dict[str, Any] = {}  # path -> the stage's RejectedVideo: decode failures of this run

    def with_rejected(message: str, found: list[Any]) -> str:
        rejected.update({item.path: item for item in found})
        return f"{message}, {len(found)} video(s) rejected" if found else message

    def features_stage() -> str:
        found: list[Any] = []
        features = extract_features(run_dir, backend, progress=progress, spec=chosen.features_spec(), rejected=found)
        shape = f"{features.X.shape[0]} videos x {features.X.shape[1]} features ({backend.features.name})"
        return with_rejected(shape, found)

    def classical_stage() -> str:
        results = run_classical(
            run_dir, backend, learning_curve=True, config=chosen.classical_config(), progress=progress
        )
        return ", ".join(f"{r.model} F1 {r.metrics.macro_f1:.2f}" for r in results)

    stages += [
        ("prepare", f"prepare: index {source}, group-wise splits", prepare_stage),
        ("features", "features: handcrafted motion/appearance/colour/temporal", features_stage),
        ("classical", "classical models (tuning, test, learning curves)", classical_stage),
    ]

    if not skip_deep:
        for model in DEEP_MODELS:

            def deep_stage(model: str = model) -> str:
                config = chosen.deep_config(model)
                if not has_current_result(run_dir, model):  # a finished model is reused whatever its weights
                    config = _weights_or_scratch(config)
                found: list[Any] = []
                result = run_deep(run_dir, backend, config, learning_curve=True, progress=progress, rejected=found)
                return with_rejected(
                    f"{model}: F1 {result.metrics.macro_f1:.2f}, trained {result.cost.fit_seconds:.0f} s "
                    f"({config.epochs} epochs, {config.frames}x{config.size}px, weights {config.weights})",
                    found,
                )

            stages.append(("deep", f"deep model {model} ({chosen.name} profile)", deep_stage))

    def analyze_stage() -> str:
        index = analyze_run(run_dir, progress=progress, backend=backend, **chosen.analysis)
        return f"report in {index.parent}"

    stages.append(("analyze", "analyze: statistics, figures, interpretability, report", analyze_stage))

    if stop_after is not None and stop_after not in {key for key, _, _ in stages}:
        raise ValueError(f"stop_after {stop_after!r} is not a stage of this run: {', '.join(k for k, _, _ in stages)}")
    started = time.perf_counter()
    if progress:
        print(
            f"actionbench run: profile {chosen.name} ({chosen.description}); device {backend.device_description()}; "
            f"run folder {run_dir}",
            flush=True,
        )
    for number, (key, title, stage) in enumerate(stages, 1):
        _banner(number, len(stages), title, progress)
        t0 = time.perf_counter()
        message = stage()
        _note(f"{message}  [{time.perf_counter() - t0:.1f} s]", progress)
        if stop_after == key and not (key == "deep" and any(s[0] == "deep" for s in stages[number:])):
            _note(f"stopped after {key} (as asked); rerun to continue", progress)
            if notice := rejected_notice(len(rejected), run_dir):
                _note(notice, progress)
            return paths.report_dir / "index.html"

    index = paths.report_dir / "index.html"
    if progress:
        total = time.perf_counter() - started
        print(f"\nDone in {total / 60:.1f} min. Report: {index}", flush=True)
        print((paths.report_dir / "summary.txt").read_text(), end="", flush=True)
        if notice := rejected_notice(len(rejected), run_dir):
            print(notice, flush=True)
    return index
