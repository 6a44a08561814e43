"""Pure classification metrics from labels and class scores (never from hard labels alone)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from core.schema import ClassScores, Metrics


def macro_roc_auc(y_true: np.ndarray, scores: np.ndarray, n_classes: int) -> float | None:
    """Macro one-vs-rest ROC-AUC from class scores; None when some class is absent from y_true."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if len(np.unique(y_true)) < n_classes:
        return None
    if n_classes == 2:
        return float(roc_auc_score(y_true, scores[:, 1]))
    return float(roc_auc_score(y_true, scores, multi_class="ovr", average="macro", labels=np.arange(n_classes)))


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    scores: Sequence[Sequence[float]] | np.ndarray,
    class_names: Sequence[str],
) -> Metrics:
    """Accuracy, macro and per-class precision/recall/F1 and macro OvR ROC-AUC from scores."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n_classes = len(class_names)
    if scores.shape != (len(y_true), n_classes):
        raise ValueError(f"scores have shape {scores.shape}, expected ({len(y_true)}, {n_classes})")
    labels = np.arange(n_classes)
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    macro_p, macro_r, macro_f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average="macro", zero_division=0
    )
    per_class = {
        name: ClassScores(float(precision[i]), float(recall[i]), float(f1[i]), int(support[i]))
        for i, name in enumerate(class_names)
    }
    return Metrics(
        accuracy=float(accuracy_score(y_true, y_pred)),
        macro_precision=float(macro_p),
        macro_recall=float(macro_r),
        macro_f1=float(macro_f1),
        roc_auc_macro_ovr=macro_roc_auc(y_true, scores, n_classes),
        per_class=per_class,
        n_videos=int(len(y_true)),
    )
