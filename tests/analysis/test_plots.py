from __future__ import annotations

from itertools import combinations

from matplotlib.colors import to_rgb

from analysis.names import HUMAN_NAMES, MODEL_ORDER, human_name
from analysis.plots import CLASS_COLOURS, MODEL_COLOURS, model_colour, model_label


def _distance(a: str, b: str) -> float:
    return sum((x - y) ** 2 for x, y in zip(to_rgb(a), to_rgb(b), strict=True)) ** 0.5 * 255


def test_every_model_has_its_own_colour_far_from_every_class_colour():
    colours = [model_colour(m) for m in MODEL_ORDER]
    assert len(set(colours)) == len(MODEL_ORDER)
    assert min(_distance(a, b) for a, b in combinations(colours, 2)) > 60
    assert min(_distance(m, c) for m in MODEL_COLOURS.values() for c in CLASS_COLOURS) > 85
    assert len(set(CLASS_COLOURS)) == len(CLASS_COLOURS)


def test_figures_use_human_names():
    assert set(HUMAN_NAMES) == set(MODEL_ORDER)
    assert human_name("cnn3d") == "R3D-18 (3D CNN)" and human_name("mystery") == "mystery"
    assert model_label("cnn2d", 16) == "ResNet-18 +\ntemporal pooling\n(2D CNN)"
