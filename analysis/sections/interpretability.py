"""Interpretability: permutation importance and coefficients of the classical models, Grad-CAM and
temporal occlusion of the CNNs (analysis/interpret.py)."""

from __future__ import annotations

from analysis.context import ReportContext
from analysis.html import ReportSection, figures_html, notes_html
from analysis.interpret import classical_section, deep_section
from core.backend import resolve_backend


def build(context: ReportContext) -> ReportSection:
    if not context.options.interpret:
        return ReportSection(
            "interpretability", "Interpretability", "<p>Skipped (analyze was run without interpretability).</p>"
        )
    by_name, options = context.by_name, context.options
    context.log("interpretability: classical models")
    classical = classical_section(
        context.run_dir, context.out, [m for m in context.models if by_name[m].family == "classical"], seed=options.seed
    )
    context.log("interpretability: deep models (Grad-CAM, occlusion)")
    deep = deep_section(
        context.run_dir,
        context.out,
        [m for m in context.models if by_name[m].family == "deep"],
        context.backend or resolve_backend("cpu"),
        gradcam_per_class=options.gradcam_per_class,
        occlusion_per_class=options.occlusion_per_class,
    )
    body = "".join(figures_html(s.figures) + notes_html(s.notes) for s in (classical, deep))
    return ReportSection("interpretability", "Interpretability", body)
