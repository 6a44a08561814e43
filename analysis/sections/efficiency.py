"""Efficiency: training and inference time, model size, peak memory, accuracy against cost."""

from __future__ import annotations

from analysis import plots
from analysis.context import ReportContext
from analysis.html import ReportSection, figures_html
from analysis.names import human_name
from analysis.plots import ReportFigure, human_bytes, human_seconds


def _time_figures(context: ReportContext) -> list[ReportFigure]:
    models, results, out = context.models, context.results, context.out
    plots.value_bars(
        models,
        {
            "final fit": [r.cost.fit_seconds for r in results],
            "hyper-parameter search": [r.cost.search_seconds for r in results],
        },
        out / "cost_training_time.png",
        title="Training time",
        ylabel="seconds",
        formatter=human_seconds,
    )
    plots.value_bars(
        models,
        {
            "model only": [r.cost.inference_seconds_per_video_model for r in results],
            "end to end (decode + features/clips + model)": [
                r.cost.inference_seconds_per_video_end_to_end for r in results
            ],
        },
        out / "cost_inference_time.png",
        title="Inference time per test video",
        ylabel="seconds per video",
        formatter=human_seconds,
    )
    return [
        ReportFigure(
            "cost_training_time.png",
            "Training time",
            "Seconds to fit the final model (deep: all epochs incl. validation) and, for the classical models, the "
            "grouped cross-validated hyper-parameter search before it.",
        ),
        ReportFigure(
            "cost_inference_time.png",
            "Inference time per video",
            "Seconds to classify one test video: the model alone, and end to end including decoding and feature "
            "extraction or clip preparation.",
        ),
    ]


def _size_figures(context: ReportContext) -> list[ReportFigure]:
    models, results, out = context.models, context.results, context.out
    plots.value_bars(
        models,
        {"model file": [r.cost.model_bytes for r in results]},
        out / "cost_model_size.png",
        title="Model size on disk",
        ylabel="bytes",
        formatter=human_bytes,
    )
    plots.value_bars(
        models,
        {
            "training": [r.cost.peak_memory_fit_bytes for r in results],
            "inference": [r.cost.peak_memory_predict_bytes for r in results],
        },
        out / "cost_peak_memory.png",
        title="Peak memory",
        ylabel="bytes",
        formatter=human_bytes,
    )
    kinds: dict[str, list[str]] = {}
    for r in results:
        kinds.setdefault(r.cost.memory_kind, []).append(human_name(r.model))
    measured = "; ".join(f"{kind} for {', '.join(names)}" for kind, names in kinds.items())
    return [
        ReportFigure("cost_model_size.png", "Model size", "Size of the saved model file (what you would deploy)."),
        ReportFigure(
            "cost_peak_memory.png",
            "Peak memory",
            "Peak memory while training and while predicting, as each model's result file measured it "
            f"({measured}; *_delta = above the memory the process already held). Compare within one kind only.",
        ),
    ]


def _pareto_figure(context: ReportContext) -> list[ReportFigure]:
    by_name = context.by_name
    timed = [m for m in context.models if (by_name[m].cost.inference_seconds_per_video_model or 0) > 0]
    if not timed:
        return []
    plots.accuracy_vs_cost(
        timed,
        [by_name[m].cost.inference_seconds_per_video_model or 0.0 for m in timed],
        [by_name[m].metrics.macro_f1 for m in timed],
        [by_name[m].cost.model_bytes for m in timed],
        context.out / "accuracy_vs_cost.png",
    )
    return [
        ReportFigure(
            "accuracy_vs_cost.png",
            "Accuracy versus cost",
            "Macro-F1 against model inference time per video; bigger markers are bigger models. Models on the dashed "
            "Pareto front are the sensible choices: nothing else is both faster and better.",
        )
    ]


def build(context: ReportContext) -> ReportSection:
    context.log("efficiency figures")
    figures = _time_figures(context) + _size_figures(context) + _pareto_figure(context)
    return ReportSection("efficiency", "Efficiency", figures_html(figures))
