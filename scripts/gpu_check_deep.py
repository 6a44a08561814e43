#!/usr/bin/env python
"""R3D-18 training throughput on one CUDA GPU: AMP (bf16) + channels_last_3d versus fp32.

PyTorch and torchvision only (no DALI, no project imports), so it can be copied to any GPU machine:

    python scripts/gpu_check_deep.py                       # 16x112x112 clips, batch 64, prints JSON
    python scripts/gpu_check_deep.py --out gpu_check.json
    python scripts/gpu_check_deep.py --device cpu --steps 2 --batch 2 --frames 4 --size 32   # smoke test

Three settings, each on a fresh model with synthetic clips already on the device (the data
pipeline is measured separately by ``cli.py bench loader``), cudnn.benchmark on, timed after warm-up:

* ``fp32``: full fp32, TF32 off for convolutions and matmuls, contiguous NCDHW;
* ``fp32_tf32``: PyTorch's defaults (cuDNN may use TF32 for convolutions), contiguous NCDHW;
* ``amp_bf16_channels_last_3d``: autocast bf16 (fp16 + GradScaler where bf16 is unsupported), model
  and input in channels_last_3d.

Targets on an H100/H200: AMP at least 2x the fp32 setting and at least 1000 clips/s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import torch
from torch import nn
from torchvision.models.video import r3d_18

SETTINGS = ("fp32", "fp32_tf32", "amp_bf16_channels_last_3d")
TARGET_SPEEDUP = 2.0
TARGET_CLIPS_PER_SECOND = 1000.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _set_tf32(enabled: bool) -> None:
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def measure(setting: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """Training clips/s of one setting: forward, loss, backward and an SGD step per timed step."""
    default_tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    _set_tf32(setting != "fp32")
    amp = setting.startswith("amp")
    dtype = None
    if amp:
        dtype = torch.bfloat16 if device.type != "cuda" or torch.cuda.is_bf16_supported() else torch.float16
    torch.manual_seed(0)
    model = r3d_18(weights=None, num_classes=args.classes).to(device)
    clips = torch.randn(args.batch, 3, args.frames, args.size, args.size, device=device)
    labels = torch.randint(0, args.classes, (args.batch,), device=device)
    if amp:
        model = model.to(memory_format=torch.channels_last_3d)
        clips = clips.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    criterion = nn.CrossEntropyLoss()
    model.train()

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = criterion(model(clips).float(), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - start
    result = {
        "clips_per_second": args.batch * args.steps / seconds,
        "step_ms": 1000 * seconds / args.steps,
        "amp_dtype": str(dtype).replace("torch.", "") if dtype else None,
        "channels_last_3d": amp,
        "tf32": setting != "fp32",
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None,
    }
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = default_tf32
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per setting")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotuning)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma-separated subset of {SETTINGS}")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = set(settings) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; use {SETTINGS}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device; use --device cpu for a smoke test")
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True

    results = {}
    for setting in settings:
        results[setting] = measure(setting, args, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the previous setting's model and activations are gone
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
        "model": "r3d_18",
        "batch": args.batch,
        "clip": [args.frames, args.size, args.size],
        "steps": args.steps,
        "warmup_steps": args.warmup,
        "results": results,
    }
    amp = results.get("amp_bf16_channels_last_3d")
    if amp is not None:
        for baseline in ("fp32", "fp32_tf32"):
            if baseline in results:
                report[f"speedup_vs_{baseline}"] = amp["clips_per_second"] / results[baseline]["clips_per_second"]
        report["targets"] = {
            "speedup_vs_fp32_at_least_2x": report.get("speedup_vs_fp32", 0.0) >= TARGET_SPEEDUP,
            "amp_at_least_1000_clips_per_second": amp["clips_per_second"] >= TARGET_CLIPS_PER_SECOND,
        }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(text + "\n")
    if args.strict and not all(report.get("targets", {}).values()):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
