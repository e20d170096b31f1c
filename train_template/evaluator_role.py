"""The evaluator: an untrusted process that loads the trainer's artefact and turns input rows
into logits. The model's forward() is candidate code, so it runs here, never in the referee;
the referee computes the loss from the logits this returns and trusts nothing else.

Protocol (channel.py), the referee asking (the evaluator says hello first, once started):
    load {artefact, train}  -> ready {info} | crash/invalid {reason}
    rows [B, T] int64       -> logits [B, T, V] float32 (host bytes, or a CUDA IPC handle)
                               | badoutput {shape} | crash {reason}
    bye                     -> (exit)
Started as `python -s evaluator_role.py ...` before the artefact exists (so interpreter and
torch start-up overlap training), never imported by the referee.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import traceback
from pathlib import Path

import numpy as np
import torch
from candidate import RoleFailure, import_train, pick_device, report_failure
from channel import Channel, ChannelClosed
from mfu import flops_per_token
from profiles import Profile, get_profile

MAX_ROWS_PAYLOAD = 1 << 30


def load(header: dict, profile: Profile, device: torch.device) -> tuple[torch.nn.Module, dict]:
    module = import_train(Path(str(header["train"])))
    try:
        model = torch.load(str(header["artefact"]), map_location=device, weights_only=False)
    except Exception as exc:
        traceback.print_exc()
        raise RoleFailure("crash", f"the trained model could not be loaded: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise RoleFailure("invalid", f"the artefact holds {type(model).__name__}, "
                          "not a torch.nn.Module")
    model.eval()
    depth = getattr(module, "DEPTH", 0)
    info = {"num_params": sum(p.numel() for p in model.parameters()),
            "depth": depth if isinstance(depth, int) else 0,
            "flops_per_token": flops_per_token(model, module, profile.seq_len)}
    return model, info


def autocast(profile: Profile, device: torch.device) -> contextlib.AbstractContextManager:
    if profile.autocast_bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def ipc_header(out: torch.Tensor) -> dict:
    """A CUDA IPC description of `out` as plain values (the referee never unpickles)."""
    from torch.multiprocessing.reductions import reduce_tensor

    _, fields = reduce_tensor(out)
    (_, size, stride, offset, _, _, device, handle, storage_size, storage_offset, _,
     ref_handle, ref_offset, event_handle, event_sync) = fields
    return {"type": "logits_ipc", "shape": list(size), "stride": list(stride), "offset": offset,
            "device": device, "handle": handle.hex(), "storage_size": storage_size,
            "storage_offset": storage_offset, "ref_handle": ref_handle.hex(),
            "ref_offset": ref_offset, "event_handle": event_handle.hex() if event_handle else "",
            "event_sync": bool(event_sync)}


def serve(channel: Channel, profile: Profile, vocab_size: int) -> None:
    device = pick_device(profile)
    if device.type == "cuda":  # the CUDA context too, while the trainer trains: not load time
        torch.zeros(1, device=device)
    channel.send({"type": "hello"})  # started: the referee's allowance clock may begin
    header, _ = channel.receive(("load", "bye"))
    if header["type"] == "bye":
        return
    model, info = load(header, profile, device)
    channel.send({"type": "ready", "info": info})
    held = None  # the last shared logits stay alive until the referee asks for more
    while True:
        header, payload = channel.receive(("rows", "bye"), max_payload=MAX_ROWS_PAYLOAD)
        if header["type"] == "bye":
            return
        batch, seq = (int(v) for v in header["shape"])
        x = torch.from_numpy(np.frombuffer(payload, dtype=np.int64).reshape(batch, seq)).to(device)
        try:
            with torch.no_grad(), autocast(profile, device):
                out = model(x)
        except Exception as exc:
            traceback.print_exc()
            raise RoleFailure("crash", f"the model failed during evaluation: "
                              f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(out, torch.Tensor) or out.dim() != 3 or out.shape[2] < vocab_size \
                or tuple(out.shape[:2]) != (batch, seq):
            got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            channel.send({"type": "badoutput", "shape": got})
            continue
        logits = out[..., :vocab_size].float().contiguous()
        if header.get("ipc") is True and device.type == "cuda":
            held = logits
            channel.send(ipc_header(held))
        else:
            host = logits.cpu().numpy()
            channel.send({"type": "logits", "shape": list(host.shape)}, memoryview(host).cast("B"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--profile", required=True)
    parser.add_argument("--vocab-size", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    args = parser.parse_args()
    channel = Channel.from_fd(args.channel_fd)
    try:
        serve(channel, get_profile(args.profile), args.vocab_size)
    except RoleFailure as failure:
        report_failure(channel, failure)
        return 1
    except ChannelClosed:  # the referee is done with us
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
