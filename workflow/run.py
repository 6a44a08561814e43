"""The whole comparison in one call: demo data -> prepare -> features -> classical -> deep -> report.

Every stage resumes: its function skips work whose outputs are up to date (demo clips present,
videos.csv unchanged, features.npz fingerprint, result files), so a killed run continues where it
stopped; a CNN killed mid-training continues from its last finished epoch (``resume="auto"``).
The settings of every stage come from one :class:`~workflow.profiles.Profile`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from analysis.names import human_name
from core.backend import Backend, resolve_backend
from core.runfiles import RunPaths, rejected_notice
from models.deep.build import build_model
from models.deep.config import MODELS as DEEP_MODELS
from models.deep.config import DeepConfig
from models.deep.train import has_current_result
from models.networks import pretrained
from pipelines.demo import generate_demo_dataset
from pipelines.video.loader import RejectedVideo
from workflow import stages
from workflow.profiles import Profile, get_profile
from workflow.stages import StageReport

STAGE_KEYS = ("demo", "prepare", "features", "classical", "deep", "analyze")


@dataclass(frozen=True)
class Stage:
    key: str  # one of STAGE_KEYS (both CNNs are "deep")
    title: str
    action: Callable[[], str]  # does the work (or finds it done) and returns the stage's closing line


@dataclass
class _Run:
    """What the stages of one ``run_comparison`` call share."""

    run_dir: Path
    profile: Profile
    backend: Backend
    classes: list[str] | None
    progress: bool
    split_seed: int
    command: str | None = None  # the command line, recorded in the report
    rejected: dict[str, RejectedVideo] = field(default_factory=dict)  # decode failures of this call, by path
    warnings: list[str] = field(default_factory=list)  # repeated in the closing summary

    def note(self, message: str) -> None:
        if self.progress:
            print(f"  {message}", flush=True)

    def warn(self, message: str) -> None:
        """Say it now (with progress) and again in the closing summary, where a log reader looks."""
        self.warnings.append(message)
        self.note(f"WARNING {message}")

    def keep(self, report: StageReport) -> str:
        """The stage's line; its rejected videos count towards the run's closing line."""
        self.rejected.update({item.path: item for item in report.rejected})
        return report.line()


def weights_or_scratch(config: DeepConfig) -> tuple[DeepConfig, str | None]:
    """The config, or the same with ``weights="none"`` and a warning when its pretrained weights are
    not on disk (nothing is downloaded at run time); the result file records the weights used."""
    if not pretrained.is_pretrained(config.weights):
        return config, None
    try:
        build_model(config, 2)
    except pretrained.WeightsUnavailableError as exc:
        warning = f"{human_name(config.model)}: {exc} -> trained from scratch (weights none) instead."
        return replace(config, weights="none"), warning
    return config, None


def _demo_stage(run: _Run) -> tuple[Stage, Path]:
    demo_dir = run.run_dir / "demo_data"
    demo = replace(run.profile.demo, classes=tuple(run.classes)) if run.classes else run.profile.demo

    def action() -> str:
        clips = generate_demo_dataset(demo_dir, demo, progress=run.progress)
        return f"{len(clips)} demo clips in {demo_dir}"

    title = f"demo dataset ({len(demo.classes)} classes x {demo.groups} groups x {demo.clips_per_group} clips)"
    return Stage("demo", title, action), demo_dir


def _data_stages(run: _Run, source: Path) -> list[Stage]:
    def prepare() -> str:
        return stages.prepare(
            source, run.run_dir, classes=run.classes, seed=run.split_seed, progress=run.progress
        ).line()

    def features() -> str:
        return run.keep(stages.features(run.run_dir, run.backend, run.profile.features, progress=run.progress))

    def classical() -> str:
        return run.keep(
            stages.classical(
                run.run_dir, run.backend, run.profile.classical, run.profile.features, progress=run.progress
            )
        )

    return [
        Stage("prepare", f"prepare: index {source}, group-wise splits", prepare),
        Stage("features", "features: handcrafted motion/appearance/colour/temporal", features),
        Stage("classical", "classical models (tuning, test, learning curves)", classical),
    ]


def _deep_stage(run: _Run, model: str) -> Stage:
    def action() -> str:
        config = run.profile.deep_config(model)
        if not has_current_result(run.run_dir, config):  # a finished model with the profile's weights is kept
            config, warning = weights_or_scratch(config)
            if warning:  # said now and again in the closing summary
                run.warn(warning)
        # An interrupted training continues from its last epoch when it had these very settings.
        return run.keep(stages.deep(run.run_dir, run.backend, config, resume="auto", progress=run.progress))

    return Stage("deep", f"deep model {human_name(model)} ({model}, {run.profile.name} profile)", action)


def _analyze_stage(run: _Run) -> Stage:
    def action() -> str:
        return stages.analyze(
            run.run_dir, run.backend, run.profile.analysis, progress=run.progress, command=run.command
        ).line()

    return Stage("analyze", "analyze: statistics, figures, interpretability, report", action)


def plan_stages(data_root: Path | None, run: _Run, *, skip_deep: bool) -> list[Stage]:
    """The stages of one run, in order."""
    stages: list[Stage] = []
    if data_root is None:
        demo, data_root = _demo_stage(run)
        stages.append(demo)
    stages += _data_stages(run, Path(data_root))
    if not skip_deep:
        stages += [_deep_stage(run, model) for model in DEEP_MODELS]
    stages.append(_analyze_stage(run))
    return stages


def default_run_dir(data_root: str | os.PathLike[str] | None) -> Path:
    """runs/demo for the demo dataset, runs/latest for a folder of the user's."""
    return Path("runs") / ("demo" if data_root is None else "latest")


def _is_last_of(key: str, stages: Sequence[Stage], number: int) -> bool:
    return not any(stage.key == key for stage in stages[number:])


def closing_summary(run: _Run, index: Path | None, seconds: float) -> str:
    """What ``run`` prints last, with or without progress: the time, the report and its one-screen
    summary, every warning of the run again, and the rejected-videos notice."""
    lines = []
    if index is not None:
        lines.append(f"Done in {seconds / 60:.1f} min. Report: {index}")
        lines.append((index.parent / "summary.txt").read_text().rstrip("\n"))
    lines += [f"WARNING {warning}" for warning in run.warnings]
    if notice := rejected_notice(len(run.rejected), run.run_dir):
        lines.append(notice)
    return "\n".join(lines)


def run_comparison(
    data_root: str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str],
    *,
    profile: str | Profile | None = None,
    backend: Backend | None = None,
    skip_deep: bool = False,
    classes: Sequence[str] | None = None,
    progress: bool = True,
    stop_after: str | None = None,
    seed: int | None = None,
    command: str | None = None,
) -> Path:
    """Run every stage of the comparison into ``run_dir`` and return the report's index.html.

    ``data_root`` None: generate the profile's demo dataset into ``RUN_DIR/demo_data``.
    ``profile``: tiny | cpu | gpu (default gpu on a usable CUDA GPU, else cpu).
    ``stop_after``: a stage key (demo, prepare, features, classical, deep) to stop after.
    ``seed``: the seed of the train/val/test split (default: the profile's ``split_seed``).
    ``progress`` False: no stage banners or progress, only the closing summary (results, warnings).
    ``command``: the command line, recorded in the report.
    """
    backend = backend or resolve_backend()
    chosen = profile if isinstance(profile, Profile) else get_profile(profile, backend)
    split_seed = chosen.split_seed if seed is None else seed
    run = _Run(Path(run_dir), chosen, backend, list(classes) if classes else None, progress, split_seed, command)
    run.run_dir.mkdir(parents=True, exist_ok=True)
    stages = plan_stages(None if data_root is None else Path(data_root), run, skip_deep=skip_deep)
    if stop_after is not None and stop_after not in {stage.key for stage in stages}:
        raise ValueError(f"stop_after {stop_after!r} is not a stage of this run: {', '.join(s.key for s in stages)}")
    started = time.perf_counter()
    if progress:
        print(
            f"actionbench run: profile {chosen.name} ({chosen.description}); device {backend.device_description()}; "
            f"run folder {run.run_dir}",
            flush=True,
        )
    index = RunPaths(run.run_dir).report_dir / "index.html"
    for number, stage in enumerate(stages, 1):
        if progress:
            print(f"\n=== [{number}/{len(stages)}] {stage.title} " + "=" * max(3, 60 - len(stage.title)), flush=True)
        t0 = time.perf_counter()
        run.note(f"{stage.action()}  [{time.perf_counter() - t0:.1f} s]")
        if stop_after == stage.key and _is_last_of(stage.key, stages, number):
            run.note(f"stopped after {stage.key} (as asked); rerun to continue")
            if text := closing_summary(run, None, time.perf_counter() - started):
                print(text, flush=True)
            return index
    print(("\n" if progress else "") + closing_summary(run, index, time.perf_counter() - started), flush=True)
    return index
