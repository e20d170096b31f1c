"""What both untrusted roles share: importing the candidate's train script, the device, the
RNG seeds, and a failure reported over the channel. Runs only in the roles, never the referee."""

from __future__ import annotations

import importlib.util
import random
import resource
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from channel import Channel
from profiles import Profile


class RoleFailure(Exception):
    """The candidate failed in a way the referee must hear about: status and reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(profile: Profile) -> torch.device:
    if profile.device == "cuda":
        if not torch.cuda.is_available():
            raise RoleFailure("crash", f"profile {profile.name} needs a CUDA GPU and none is visible")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def import_train(path: Path):
    """Import the candidate's train script as module `train` (its folder on sys.path)."""
    if not path.is_file():
        raise RoleFailure("crash", f"train script {path.name} not found")
    spec = importlib.util.spec_from_file_location("train", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train"] = module
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        traceback.print_exc()
        raise RoleFailure("crash", f"{path.name} failed to import: {type(exc).__name__}: {exc}") from exc
    return module


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory on CUDA; on CPU the process's peak resident memory."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report_failure(channel: Channel, failure: RoleFailure) -> None:
    """Tell the referee; it believes a candidate's own failure (that only costs the candidate)."""
    try:
        channel.send({"type": failure.status, "reason": failure.reason[:2000]})
    except OSError:
        pass
