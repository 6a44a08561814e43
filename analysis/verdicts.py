"""The sentences a reader takes away, in plain words and human names, shared by the HTML summary
and the console summary: who scores highest and whether that is evidence, which models are near
chance, what the number of test groups allows, and what the training and the representations warn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analysis.comparison import Comparison, ModelEvidence, PairEvidence
from analysis.names import human_name
from analysis.scene_bias import NeighbourShares
from analysis.stats import min_sign_flip_p

NEAR_CHANCE_AUC = 0.6  # without an interval: a macro ROC-AUC below this is near chance
NEAR_CHANCE_MARGIN = 0.1  # ... or an accuracy within this of 1 / number of classes


def near_chance(evidence: ModelEvidence, n_classes: int) -> bool:
    """Whether a model's scores are compatible with guessing: its macro ROC-AUC interval reaches
    0.5 or its accuracy interval reaches 1/K (estimates near those values when there is no interval)."""
    chance = 1.0 / max(1, n_classes)
    auc, acc = evidence.intervals["roc_auc_macro_ovr"], evidence.intervals["accuracy"]
    if auc.low is not None and auc.low <= 0.5:
        return True
    if acc.low is not None:
        return acc.low <= chance
    if auc.estimate is not None and auc.estimate < NEAR_CHANCE_AUC:
        return True
    return acc.estimate is not None and acc.estimate <= chance + NEAR_CHANCE_MARGIN


def detectability(n_groups: int, n_pairs: int, alpha: float) -> str | None:
    """One plain sentence when this many test groups cannot show a difference at ``alpha`` (None
    when they can)."""
    smallest = min_sign_flip_p(n_groups)
    if n_groups < 2:
        return (
            f"With {n_groups} test group(s) nothing can be said about uncertainty: no interval can be estimated "
            "and no difference between two models can be detected."
        )
    if smallest >= alpha:
        return (
            f"With {n_groups} test groups no difference between two models can be detected at alpha = {alpha}: "
            f"the smallest p-value a group-level sign-flip test can give is 2/2^{n_groups} = {smallest:.3g}."
        )
    if n_pairs > 1 and smallest * n_pairs >= alpha:
        return (
            f"With {n_groups} test groups no difference can be detected after the Holm correction over {n_pairs} "
            f"pairs: the smallest possible p-value, 2/2^{n_groups} = {smallest:.3g}, times {n_pairs} is not below "
            f"{alpha}."
        )
    return None


def pair_verdict(pair: PairEvidence, alpha: float) -> str:
    a, b = human_name(pair.model_a), human_name(pair.model_b)
    if pair.n_shared_videos == 0:
        return f"{a} and {b} share no test videos: they cannot be compared."
    diff = pair.differences["accuracy"]
    interval = (
        f" [{diff.low:+.3f}, {diff.high:+.3f}]" if diff.low is not None and diff.high is not None else " (no interval)"
    )
    numbers = (
        f"accuracy difference {diff.estimate:+.3f}{interval} over {pair.test.n_groups} group(s); "
        f"sign-flip p = {pair.test.p_value:.3g}, Holm p = {pair.p_holm:.3g}"
    )
    if pair.significant:
        better, worse = (a, b) if pair.test.statistic > 0 else (b, a)
        return f"{better} is more accurate than {worse}: {numbers}."
    return f"{a} and {b} cannot be told apart: {numbers}."


def pairs_sentence(comparison: Comparison) -> str:
    apart = sum(p.significant for p in comparison.pairs)
    return (
        f"{apart} of {len(comparison.pairs)} model pairs differ at the group level (sign-flip test over test groups, "
        f"Holm p < {comparison.alpha}); the other {len(comparison.pairs) - apart} cannot be told apart, so smaller "
        "differences in the table are not evidence."
    )


@dataclass(frozen=True)
class Headline:
    """The summary's sentences: what scores best, and the caveats a reader must see with it."""

    sentences: list[str]
    warnings: list[str]


def _best_sentences(comparison: Comparison, ranked: Sequence[str], n_classes: int) -> list[str]:
    best = comparison.models[ranked[0]]
    unit = "group" if comparison.unit == "group" else "video"
    interval_note = (
        f"95 % {unit}-bootstrap interval over {best.n_groups} test {unit}s, {best.n_videos} videos"
        if best.intervals["macro_f1"].low is not None
        else f"no interval: {best.n_groups} test {unit}"
    )
    sentences = [
        f"{human_name(best.model)} has the highest test macro-F1, {best.intervals['macro_f1'].format()} "
        f"({interval_note})."
    ]
    if near_chance(best, n_classes):
        sentences.append("It is itself near chance: no model has learnt the task from this data.")
        return sentences
    if len(ranked) > 1:
        pair = comparison.pair(ranked[0], ranked[1])
        if pair is not None:
            sentences.append(f"Against the runner-up: {pair_verdict(pair, comparison.alpha)}")
    weak = [m for m in ranked[1:] if near_chance(comparison.models[m], n_classes)]
    if weak:
        names = ", ".join(human_name(m) for m in weak)
        sentences.append(
            f"Near chance (macro ROC-AUC interval reaching 0.5 or accuracy reaching 1/{n_classes}): {names}. "
            "Beating a model that has not learnt the task says nothing about its family."
        )
    return sentences


def headline(
    comparison: Comparison,
    n_classes: int,
    *,
    training: Sequence[str] = (),
    scene: Sequence[NeighbourShares] = (),
) -> Headline:
    ranked = sorted(comparison.models, key=lambda m: -(comparison.models[m].intervals["macro_f1"].estimate or 0.0))
    sentences = _best_sentences(comparison, ranked, n_classes) if ranked else []
    if comparison.pairs:
        sentences.append(pairs_sentence(comparison))
    warnings = []
    if sentence := detectability(comparison.n_groups, len(comparison.pairs), comparison.alpha):
        warnings.append(sentence)
    warnings += list(training)
    warnings += [
        f"The {s.label} cluster by group more than by class: a test video's nearest neighbour shares its group "
        f"{s.same_group:.0%} of the time and its class {s.same_class:.0%} (the scene, not the action, dominates)."
        for s in scene
        if s.clusters_by_group
    ]
    return Headline(sentences, warnings)
