"""Which accelerator a worker holds, told without importing torch (workers stay light)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from collections.abc import Sequence


def visible_gpus(env_value: str | None = None) -> tuple[str, ...]:
    """The GPU ids in CUDA_VISIBLE_DEVICES (or `env_value`); empty when none are visible."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES") if env_value is None else env_value
    if not value:
        return ()
    ids = tuple(part.strip() for part in value.split(",") if part.strip())
    # CUDA stops at the first invalid id; "-1" is the usual way to hide every GPU.
    valid: list[str] = []
    for gpu in ids:
        if gpu.startswith("-"):
            break
        valid.append(gpu)
    return tuple(valid)


def detect_device(gpu_ids: Sequence[str] | None = None) -> str:
    """"cpu", or the name of the first assigned GPU (from nvidia-smi), e.g. "NVIDIA H100 80GB HBM3".

    Without nvidia-smi an assigned GPU is named by its id ("gpu:0").
    """
    ids = tuple(str(gpu) for gpu in (visible_gpus() if gpu_ids is None else gpu_ids))
    if not ids:
        return "cpu"
    return _gpu_name(ids)


@functools.lru_cache(maxsize=16)
def _gpu_name(ids: tuple[str, ...]) -> str:
    fallback = "gpu:" + ",".join(ids)
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return fallback
    try:
        done = subprocess.run(
            [smi, "--query-gpu=name", "--format=csv,noheader", "-i", ids[0]],
            capture_output=True, text=True, timeout=15, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return fallback
    names = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not names:
        return fallback
    return names[0]
