"""The models a report knows, in the order it shows them, and the names a person reads.

Codes (``svm``, ``cnn3d``) stay in file names, options and result files; everything a person
reads (report, tables, figures, the console summary) uses :func:`human_name`.
"""

from __future__ import annotations

CLASSICAL_MODELS = ("svm", "rf", "knn", "logreg", "gb")
DEEP_MODELS = ("cnn2d", "cnn3d")
MODEL_ORDER = CLASSICAL_MODELS + DEEP_MODELS

HUMAN_NAMES = {
    "svm": "SVM (RBF)",
    "rf": "Random Forest",
    "knn": "k-NN",
    "logreg": "Logistic Regression",
    "gb": "Gradient Boosting (XGBoost)",
    "cnn2d": "ResNet-18 + temporal pooling (2D CNN)",
    "cnn3d": "R3D-18 (3D CNN)",
}
FAMILY_NAMES = {"classical": "classical (handcrafted features)", "deep": "deep (CNN on clips)"}


def human_name(model: str) -> str:
    """The name a person reads for a model code; an unknown code is shown as it is."""
    return HUMAN_NAMES.get(model, model)
