"""One small trained run shared by the predict, export and bench tests (it is only read)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.backend import Backend, resolve_backend


@pytest.fixture(scope="session")
def cpu_backend() -> Backend:
    return resolve_backend("cpu")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, cpu_backend: Backend) -> Path:
    """The tiny profile's demo videos, prepared, featurised, every classical model and both CNNs
    trained (one epoch, no learning curves): all seven models of a real run, in about a minute."""
    from pipelines.demo import generate_demo_dataset
    from workflow import stages
    from workflow.profiles import PROFILES

    tiny = PROFILES["tiny"]
    root = tmp_path_factory.mktemp("trained_run")
    data, run_dir = root / "data", root / "run"
    generate_demo_dataset(data, tiny.demo, progress=False)
    stages.prepare(data, run_dir, seed=tiny.split_seed, progress=False)
    stages.features(run_dir, cpu_backend, tiny.features, progress=False)
    stages.classical(run_dir, cpu_backend, tiny.classical, tiny.features, learning_curve=False, progress=False)
    for model in ("cnn2d", "cnn3d"):
        config = tiny.deep_config(model, epochs=1)
        stages.deep(run_dir, cpu_backend, config, learning_curve=False, progress=False)
    return run_dir
