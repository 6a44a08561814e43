"""A trained CNN as a file other runtimes read: ONNX (onnxruntime, TensorRT, ...) or TorchScript,
and the class probabilities those files give, to check an export against PyTorch.

Both take a batch of normalised clips in the network's layout (``BTCHW`` for cnn2d, ``BCTHW`` for
cnn3d) and return class logits; the batch size is free. onnx, onnxscript and onnxruntime are the
optional ``export`` extra, hence imported where used.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx", "torchscript")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt"}
INPUT_NAME = "clips"
OUTPUT_NAME = "logits"
_MISSING = "`export --format onnx` needs onnx, onnxscript and onnxruntime: pip install -e '.[export]'"


def check_onnx_available() -> None:
    """Raise ``ModuleNotFoundError`` with the install command when the ONNX libraries are missing."""
    for module in ("onnx", "onnxscript", "onnxruntime"):
        try:
            __import__(module)
        except ImportError as exc:
            raise ModuleNotFoundError(f"{module} is not installed; {_MISSING}") from exc


def export_onnx(network: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Write ``network`` (eval mode, on the CPU) as one ONNX file with a free batch dimension.

    torch 2.14's exporter (``dynamo=True``: torch.export, then onnxscript) prints its progress and
    warns about its own internals; both are kept off the user's console.
    """
    check_onnx_available()
    batch = torch.export.Dim("batch")
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamo=True,
            dynamic_shapes=({0: batch},),
            external_data=False,
            verbose=False,
        )


def export_torchscript(network: nn.Module, example: torch.Tensor, path: str | os.PathLike[str]) -> None:
    """Write ``network`` (eval mode, on the CPU) as a traced TorchScript module.

    torch 2.14 deprecates TorchScript (a FutureWarning, silenced here); ONNX is the format to prefer.
    The traced graph has no data-dependent branches for either network, so the trace is exact.
    """
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(network, (example,), check_trace=False)
        torch.jit.save(traced, str(path))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def exported_probabilities(path: str | os.PathLike[str], fmt: str, clips: torch.Tensor) -> np.ndarray:
    """Softmax probabilities (B, C) of ``clips`` (a CPU batch) from an exported file, run on the CPU:
    onnxruntime for ONNX, ``torch.jit.load`` for TorchScript."""
    batch = clips.detach().cpu().float()
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.numpy()})
        return _softmax(np.asarray(logits, dtype=np.float64)).astype(np.float32)
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu").eval()
            return torch.softmax(module(batch).float(), dim=1).numpy()
    raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


def torch_probabilities(network: nn.Module, clips: torch.Tensor) -> np.ndarray:
    """Softmax probabilities (B, C) of ``clips`` from the PyTorch network itself (float32, CPU)."""
    with torch.no_grad():
        return torch.softmax(network(clips.detach().cpu().float()).float(), dim=1).numpy()


def export_network(network: nn.Module, example: torch.Tensor, path: str | os.PathLike[str], fmt: str) -> None:
    """Write ``network`` to ``path`` in ``fmt`` (onnx | torchscript)."""
    if fmt == "onnx":
        export_onnx(network, example, path)
    elif fmt == "torchscript":
        export_torchscript(network, example, path)
    else:
        raise ValueError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
