"""The trainer: an untrusted process that runs the candidate's train(ctx) and hands back the
model as an artefact file (torch.save of the module: weights and the candidate's classes).

Batches come only from the referee, over the channel; the budget, the clock and the record
are the referee's. Started by the referee as `python -s trainer_role.py ...`, never imported.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from candidate import (
    RoleFailure,
    import_train,
    peak_memory_mb,
    pick_device,
    report_failure,
    seed_everything,
)
from channel import Channel, ChannelClosed
from context import TrainContext
from profiles import get_profile


class ChannelSource:
    """ctx's batches, asked of the referee: one request per batch, the referee's state back."""

    def __init__(self, channel: Channel, seq_len: int) -> None:
        self.channel, self.seq_len = channel, seq_len

    def next(self, rows: int) -> tuple[np.ndarray | None, dict]:
        self.channel.send({"type": "batch", "rows": rows})
        header, payload = self.channel.receive(
            ("batch", "end"), max_payload=rows * (self.seq_len + 1) * 8)
        if header["type"] == "end":
            return None, header["state"]
        batch = np.frombuffer(payload, dtype=np.int64).reshape(rows, self.seq_len + 1)
        return batch, header["state"]

    def stop(self) -> dict:
        self.channel.send({"type": "stop"})
        header, _ = self.channel.receive(("state",))
        return header["state"]


def train_and_save(args: argparse.Namespace, channel: Channel) -> None:
    profile = get_profile(args.profile)
    device = pick_device(profile)
    module = import_train(Path(args.train))
    if not callable(getattr(module, "train", None)):
        raise RoleFailure("crash", f"{Path(args.train).name} defines no train(ctx) function")
    seed_everything(args.seed)
    ctx = TrainContext(profile, device, args.vocab_size, args.seed, args.budget_fraction,
                       ChannelSource(channel, profile.seq_len))
    try:
        model = module.train(ctx)
    except (Exception, SystemExit) as exc:  # SystemExit too: train.py does not end the role
        traceback.print_exc()
        raise RoleFailure("crash", f"train.py crashed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise RoleFailure("invalid", f"train(ctx) returned {type(model).__name__}, "
                          "not a torch.nn.Module")
    try:
        torch.save(model, args.artefact)
    except Exception as exc:
        traceback.print_exc()
        raise RoleFailure("crash", f"the returned model cannot be handed back (torch.save: "
                          f"{type(exc).__name__}: {exc}); keep unpicklable objects out of it") from exc
    channel.send({"type": "done", "peak_mb": peak_memory_mb(device)})


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--budget-fraction", type=float, required=True)
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--train", required=True)
    parser.add_argument("--artefact", required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args()
    channel = Channel.from_fd(args.channel_fd)
    try:
        train_and_save(args, channel)
    except RoleFailure as failure:
        report_failure(channel, failure)
        return 1
    except ChannelClosed:  # the referee ended the conversation (budget, protocol, hand-back)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
