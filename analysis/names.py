"""The models a report knows, in the order it shows them."""

from __future__ import annotations

CLASSICAL_MODELS = ("svm", "rf", "knn", "logreg", "gb")
DEEP_MODELS = ("cnn2d", "cnn3d")
MODEL_ORDER = CLASSICAL_MODELS + DEEP_MODELS
