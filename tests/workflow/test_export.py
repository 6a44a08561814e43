"""`export`: the CNNs as ONNX (run with onnxruntime) and TorchScript, the classical models as skops,
each checked against the run's own model; a failed check writes nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
import torch
from click.testing import CliRunner

import workflow.export as export_workflow
from cli import main
from core.runfiles import RunPaths, read_json
from core.schema import load_result
from models.classical.persist import load_classical_model, model_file
from models.classical.train import split_features
from models.deep.infer import load_network
from pipelines.features.store import load_features
from workflow.export import sample_test_clips


def _export(run_dir: Path, *args: str) -> str:
    result = CliRunner().invoke(main, ["--device", "cpu", "export", "--run", str(run_dir), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("model", ["cnn2d", "cnn3d"])
def test_onnx_export_matches_pytorch_in_onnxruntime(trained_run: Path, tmp_path: Path, cpu_backend, model) -> None:  # type: ignore[no-untyped-def]
    onnxruntime = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the test/export extra)")
    output = _export(trained_run, "--model", model, "--format", "onnx", "--out", str(tmp_path))
    path = tmp_path / f"{model}.onnx"
    assert f"{model} -> {path} (onnx)" in output
    info = read_json(path.with_name(path.name + ".json"))
    trained = load_network(RunPaths(trained_run).models_dir / f"{model}.pt", torch.device("cpu"))
    assert info["class_names"] == load_result(RunPaths(trained_run).result_json(model)).class_names
    assert info["normalization"] == {"mean": list(trained.clip.mean), "std": list(trained.clip.std)}
    assert info["clip"]["frames"] == trained.config.frames and info["clip"]["test_clips"] == trained.config.test_clips
    assert info["input"]["layout"] == trained.clip.layout and info["check"]["max_probability_difference"] <= 1e-3

    clips = sample_test_clips(trained_run, trained, cpu_backend, 12)  # every clip of the demo's test videos
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {session.get_inputs()[0].name: clips.numpy()})
    exported = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    with torch.no_grad():
        expected = torch.softmax(trained.network(clips), dim=1).numpy()
    np.testing.assert_allclose(exported, expected, rtol=0, atol=1e-3)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_and_a_failed_check_writes_nothing(trained_run, tmp_path, cpu_backend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(export_workflow, "TOLERANCE", -1.0)  # no export can pass: the check must stop it
    result = CliRunner().invoke(main, ["--device", "cpu", "export", "--run", str(trained_run), "--model", "cnn2d",
                                       "--format", "torchscript", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 1 and "nothing written" in result.output and list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    _export(trained_run, "--model", "cnn2d", "--format", "torchscript", "--out", str(tmp_path))
    path = tmp_path / "cnn2d.torchscript.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".json"]
    trained = load_network(RunPaths(trained_run).models_dir / "cnn2d.pt", torch.device("cpu"))
    clips = sample_test_clips(trained_run, trained, cpu_backend, 4)
    with torch.no_grad():
        np.testing.assert_allclose(
            torch.jit.load(str(path))(clips).numpy(), trained.network(clips).numpy(), rtol=0, atol=1e-5
        )


def test_classical_export_is_skops_and_reproduces_the_model(trained_run: Path, tmp_path: Path) -> None:
    output = _export(trained_run, "--model", "svm", "--out", str(tmp_path))
    assert f"svm -> {tmp_path / 'svm.skops'} (skops)" in output
    info = read_json(tmp_path / "svm.skops.json")
    features = load_features(RunPaths(trained_run).features_npz)
    assert info["feature_spec"] == features.spec.to_dict() and info["class_names"] == list(features.class_names)
    exported = sio.load(tmp_path / "svm.skops", trusted=info["trusted_types"])  # what a user of the JSON does
    test = split_features(features)["test"]
    run_model = load_classical_model(model_file(RunPaths(trained_run).models_dir, "svm"))
    assert np.array_equal(exported.predict_proba(test.X), run_model.predict_proba(test.X))


def test_a_classical_model_is_not_exported_as_onnx(trained_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--device", "cpu", "export", "--run", str(trained_run), "--model", "gb",
                                       "--format", "onnx", "--out", str(tmp_path)])  # fmt: skip
    assert result.exit_code == 1
    expected = "Error: gb is a classical model: it exports as skops (a format that runs no code), not onnx\n"
    assert result.output == expected
