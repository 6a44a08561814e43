"""The report of a run: tables, figures, statistics and interpretability in ``RUN_DIR/report/``.

:func:`analyze_run` reads only ``RUN_DIR/results/*.json`` (the schema of core/schema.py),
``features.npz``, ``embeddings/<model>.npz``, the saved models (interpretability), ``videos.csv``
and ``rejected.csv``, so results produced on other machines can be analysed here. It computes the
evidence once (:class:`~analysis.context.ReportContext`), then each section of
``analysis/sections/`` writes its figures and files and returns its HTML. The output folder is
self-contained and works offline: PNG and SVG figures, CSV/JSON/Markdown files and ``index.html``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from analysis.comparison import compare_models, video_groups
from analysis.context import ReportContext, ReportOptions
from analysis.html import ReportSection, escape, page_html
from analysis.names import human_name
from analysis.results import load_results
from analysis.scene_bias import load_representations, scene_bias
from analysis.sections import (
    data_efficiency,
    efficiency,
    environment,
    interpretability,
    performance,
    reference,
    representations,
    statistics,
    summary,
    trained,
)
from analysis.sections.representations import EMBEDDING_METHODS
from analysis.tables import ModelRow
from analysis.training import deep_training, training_warnings
from analysis.verdicts import headline
from core.backend import Backend
from core.runfiles import RunPaths, atomic_write_text
from core.schema import ModelResult

# The sections after the summary, in page order (the summary is built last: it cites the others).
SECTIONS: tuple[Callable[[ReportContext], ReportSection], ...] = (
    trained.build,
    performance.build,
    statistics.build,
    efficiency.build,
    data_efficiency.build,
    representations.build,
    interpretability.build,
    reference.build,
    environment.build,
)


def _load(run_dir: Path) -> tuple[list[ModelResult], list[str]]:
    results, notes = load_results(run_dir)
    if not results:
        raise FileNotFoundError(
            f"no valid result in {RunPaths(run_dir).results_dir}; run `python cli.py classical --run {run_dir}` "
            f"and/or `python cli.py deep --run {run_dir} --model cnn3d` first"
            + (f" ({'; '.join(notes)})" if notes else "")
        )
    return results, notes


def build_context(
    run_dir: Path, options: ReportOptions, backend: Backend | None, log: Callable[[str], None]
) -> ReportContext:
    """Load the results and compute what several sections need: intervals and tests by group,
    the CNNs' training facts, the representations and their scene bias."""
    results, notes = _load(run_dir)
    class_names = list(results[0].class_names)
    if any(list(r.class_names) != class_names for r in results):
        notes.append("The result files do not all use the same class names; each model is scored on its own.")
    groups = video_groups(run_dir)
    if groups is None:
        notes.append("videos.csv is missing: intervals resample single videos, as if they were independent.")
    log(f"group bootstrap ({options.n_resamples} resamples) and paired tests for {len(results)} models")
    comparison = compare_models(results, groups, n_resamples=options.n_resamples, seed=options.seed)
    found, representation_notes = load_representations(run_dir, results)
    shares, share_notes = scene_bias(found, groups)
    return ReportContext(
        run_dir=run_dir,
        out=RunPaths(run_dir).report_dir,
        options=options,
        results=results,
        class_names=class_names,
        groups=groups,
        comparison=comparison,
        rows=[ModelRow.of(r, comparison.models[r.model]) for r in results],
        trained=[deep_training(r) for r in results if r.family == "deep"],
        representations=found,
        scene=shares,
        backend=backend,
        log=log,
        notes=notes,
        representation_notes=representation_notes + share_notes,
    )


def _header(context: ReportContext) -> str:
    families = "; ".join(
        f"{family}: {', '.join(human_name(r.model) for r in context.results if r.family == family)}"
        for family in ("classical", "deep")
        if any(r.family == family for r in context.results)
    )
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    c = context.comparison
    return (
        "<h1>actionbench: classical vs deep video action classifiers</h1>"
        f"<p>Run <code>{escape(context.run_dir)}</code> · {len(context.results)} models ({escape(families)}) · "
        f"{c.n_videos} test videos in {c.n_groups} test {c.unit}s · generated {generated}</p>"
    )


def analyze_run(
    run_dir: str | os.PathLike[str],
    *,
    progress: bool = True,
    backend: Backend | None = None,
    n_resamples: int = 2000,
    seed: int = 0,
    interpret: bool = True,
    gradcam_per_class: int = 2,
    occlusion_per_class: int = 6,
    embeddings: Sequence[str] = ("tsne", "umap"),
    command: str | None = None,
) -> Path:
    """Write ``RUN_DIR/report/`` (figures, tables, statistics.json, index.html) from the run's results.

    ``backend`` decodes the test clips for Grad-CAM (default: the CPU backend); ``gradcam_per_class``
    and ``occlusion_per_class`` test clips per class are explained per CNN; ``embeddings`` picks the
    2-D projections (tsne, umap) of the features and CNN embeddings; ``command`` is the command line
    shown under Environment. Returns the path of ``index.html``. Raises FileNotFoundError when the
    run has no valid result file.
    """
    unknown = [m for m in embeddings if m not in EMBEDDING_METHODS]
    if unknown:
        raise ValueError(f"unknown embedding method(s) {unknown}; use {', '.join(EMBEDDING_METHODS)}")
    started = time.perf_counter()

    def log(message: str) -> None:
        if progress:
            print(f"  [analyze {time.perf_counter() - started:5.1f}s] {message}", flush=True)

    options = ReportOptions(
        n_resamples=n_resamples,
        seed=seed,
        interpret=interpret,
        gradcam_per_class=gradcam_per_class,
        occlusion_per_class=occlusion_per_class,
        embeddings=tuple(embeddings),
        command=command,
    )
    run_dir = Path(run_dir)
    RunPaths(run_dir).report_dir.mkdir(parents=True, exist_ok=True)
    context = build_context(run_dir, options, backend, log)
    sections = [build(context) for build in SECTIONS]
    verdict = headline(
        context.comparison,
        len(context.class_names),
        training=training_warnings(context.trained),
        scene=context.scene,
    )
    log("index.html")
    page = page_html(
        f"actionbench report: {run_dir.name}", _header(context), [summary.build(context, verdict), *sections]
    )
    index = context.out / "index.html"
    atomic_write_text(index, page)
    log(f"done: {index}")
    return index
