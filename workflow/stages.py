"""One function per stage of a comparison, shared by ``run`` and the single-stage commands.

Each takes the run folder, the backend and the settings of one :class:`~workflow.profiles.Profile`
and returns a :class:`StageReport`: the line that says what the stage did and the videos it could
not decode. ``cli.py`` prints a report; ``workflow.run`` strings reports together.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.report import analyze_run
from core.backend import Backend
from core.runfiles import RunPaths, rejected_notice
from models.classical.train import ClassicalConfig, run_classical
from models.deep.config import DeepConfig
from models.deep.train import run_deep, summarize
from pipelines.data.prepare import prepare_run
from pipelines.features.kernel import FeatureSpec
from pipelines.features.store import extract_features
from pipelines.video.cache import ClipCache
from pipelines.video.loader import RejectedVideo
from workflow.profiles import AnalysisSettings


@dataclass
class StageReport:
    """What one stage did: ``message`` (its line in ``run``), the videos it could not decode, and
    ``lines``, what the single-stage command prints (default: the message)."""

    run_dir: Path
    message: str
    rejected: list[RejectedVideo] = field(default_factory=list)
    lines: list[str] | None = None

    def line(self) -> str:
        """The stage line of ``run``: the message and how many videos were rejected."""
        count = len(self.rejected)
        return f"{self.message}, {count} video(s) rejected" if count else self.message

    def text(self) -> str:
        """What a single-stage command prints, ending with the rejected-videos notice if any."""
        notice = rejected_notice(len(self.rejected), self.run_dir)
        lines = [self.message] if self.lines is None else self.lines
        return "\n".join([*lines, notice] if notice else lines)


def prepare(
    data_root: str | os.PathLike[str],
    run_dir: str | os.PathLike[str],
    *,
    classes: Sequence[str] | None = None,
    split: str = "group",
    val: float = 0.15,
    test: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> StageReport:
    summary = prepare_run(
        data_root, run_dir, classes=classes, split=split, val=val, test=test, seed=seed, progress=progress
    )
    lines = ([] if summary.up_to_date else [summary.table()]) + [f"{summary} -> {summary.videos_csv}"]
    return StageReport(Path(run_dir), str(summary), lines=lines)


def features(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    spec: FeatureSpec,
    *,
    force: bool = False,
    progress: bool = True,
) -> StageReport:
    rejected: list[RejectedVideo] = []
    found = extract_features(run_dir, backend, progress=progress, force=force, spec=spec, rejected=rejected)
    message = f"{len(found)} videos x {found.X.shape[1]} features ({backend.features.name})"
    written = f"{found.summary()} -> {RunPaths(run_dir).features_npz}"
    return StageReport(Path(run_dir), message, rejected, lines=[written])


def classical(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    config: ClassicalConfig,
    *,
    models: Sequence[str] | None = None,
    learning_curve: bool = True,
    force: bool = False,
    progress: bool = True,
) -> StageReport:
    results = run_classical(
        run_dir,
        backend,
        models=list(models) if models else None,
        learning_curve=learning_curve,
        force=force,
        config=config,
        progress=progress,
    )
    lines = [
        f"{r.model:<7} {r.backend:<12} macro-F1 {r.metrics.macro_f1:.3f}  fit {r.cost.fit_seconds:.2f}s  "
        f"search {r.cost.search_seconds or 0:.1f}s  -> results/{r.model}.json"
        for r in results
    ]
    message = ", ".join(f"{r.model} F1 {r.metrics.macro_f1:.2f}" for r in results)
    return StageReport(Path(run_dir), message, lines=lines)


def cache_notice(run_dir: str | os.PathLike[str], decode: dict[str, Any] | None = None) -> str | None:
    """The line about the decoded-clip cache: its size on disk and, from a result's ``decode``
    counters (:func:`models.deep.build.decode_summary`), its hit rate and limit (None when empty)."""
    cache_dir = RunPaths(run_dir).cache_dir
    size = ClipCache(cache_dir).cache_size_bytes()
    if size <= 0:
        return None
    decode = decode or {}
    usage = ""
    if decode.get("cache_hit_rate") is not None:
        looked_up = decode.get("cache_hits", 0) + decode.get("cache_misses", 0)
        usage = f", hit rate {100 * decode['cache_hit_rate']:.0f}% of {looked_up:.0f} video reads"
    if decode.get("cache_max_bytes"):
        usage += (
            f", limit {decode['cache_max_bytes'] / 1e9:.3g} GB ({decode.get('cache_evictions', 0)} evicted, "
            f"{decode.get('cache_not_stored', 0)} not stored)"
        )
    return (
        f"decoded-clip cache: {size / 2**20:.1f} MiB in {cache_dir}{usage} (safe to delete; rebuilt on the next pass)"
    )


def deep(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    config: DeepConfig,
    *,
    learning_curve: bool = True,
    force: bool = False,
    resume: bool = False,
    progress: bool = True,
) -> StageReport:
    rejected: list[RejectedVideo] = []
    result = run_deep(
        run_dir,
        backend,
        config,
        learning_curve=learning_curve,
        force=force,
        resume=resume,
        progress=progress,
        rejected=rejected,
    )
    message = (
        f"{config.model}: F1 {result.metrics.macro_f1:.2f}, trained {result.cost.fit_seconds:.0f} s "
        f"({config.epochs} epochs, {config.frames}x{config.size}px, weights {config.weights})"
    )
    notice = cache_notice(run_dir, result.config.get("decode")) if config.cache else None
    return StageReport(Path(run_dir), message, rejected, lines=[summarize(result), *([notice] if notice else [])])


def analyze(
    run_dir: str | os.PathLike[str],
    backend: Backend,
    settings: AnalysisSettings,
    *,
    interpret: bool = True,
    progress: bool = True,
) -> StageReport:
    index = analyze_run(
        run_dir,
        progress=progress,
        backend=backend,
        n_resamples=settings.n_resamples,
        interpret=interpret,
        gradcam_per_class=settings.gradcam_per_class,
        occlusion_per_class=settings.occlusion_per_class,
        embeddings=settings.embeddings,
    )
    summary = (index.parent / "summary.txt").read_text().rstrip("\n")
    return StageReport(Path(run_dir), f"report in {index.parent}", lines=[summary, f"report: {index}"])
