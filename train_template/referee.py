"""The referee's two conversations: serving the trainer its batches, and asking an evaluator
for logits. Every message from a role is a stranger's: validated, bounded, and on a deadline
wherever a deadline is the rule (the hand-back). No candidate code runs here.
"""

from __future__ import annotations

import math
import select
import time
from dataclasses import dataclass

import numpy as np
from allowance import EvalAllowance
from channel import ChannelClosed, Deadline, ProtocolError
from context import BatchServer, BudgetError
from corpus import JudgedFailure
from roles import Role

POLL_S = 0.5          # how often a silent role is checked for being alive
MESSAGE_S = 60.0      # a message, once begun, arrives whole within this
TRAINER_SAYS = ("batch", "stop", "done", "crash", "invalid")
EVALUATOR_SAYS = ("hello", "ready", "logits", "logits_ipc", "badoutput", "crash", "invalid")


def _reason(header: dict) -> str:
    return " ".join(str(header.get("reason", "")).split())[:500] or "no reason given"


def _await(role: Role, until: float | None) -> bool:
    """Wait until the role's channel is readable (True) or `until` passes (False).
    Raises ChannelClosed when the role has exited with nothing left to read."""
    while True:
        now = time.monotonic()
        wait = POLL_S if until is None else min(POLL_S, until - now)
        if wait <= 0:
            return False
        readable, _, _ = select.select([role.channel.sock], [], [], wait)
        if readable:
            return True
        if not role.alive():
            raise ChannelClosed(f"the {role.name} exited with code {role.process.returncode}")


@dataclass(frozen=True)
class Handback:
    """What the trainer said when it handed back (only informational values)."""

    peak_mb: float
    waited_s: float  # seconds from the budget's end to the hand-back
    trainer_seconds: float = 0.0  # referee clock: its first batch to the hand-back


def _handback_deadline(server: BatchServer, handback_s: float) -> float | None:
    """time.monotonic() by which the model must be handed back (None: not yet bounded)."""
    spent = server.time_spent_at()
    if spent is None and server.spent_at is not None:
        spent = server.spent_at
    return None if spent is None else spent + handback_s


def serve_trainer(role: Role, server: BatchServer, handback_s: float) -> Handback:
    """Serve batches until the trainer hands back; JudgedFailure on anything else."""
    try:
        while True:
            deadline = _handback_deadline(server, handback_s)
            if not _await(role, deadline):
                raise JudgedFailure("invalid", f"the trainer kept its model more than "
                                    f"{handback_s:g} s after the budget was spent (it is allowed "
                                    "only the time to hand it back): training past the budget")
            until = time.monotonic() + MESSAGE_S if deadline is None else deadline
            header, _ = role.channel.receive(TRAINER_SAYS, deadline=until)
            kind = header["type"]
            if kind == "batch":
                batch = server.serve(header.get("rows"))
                if batch is None:
                    role.channel.send({"type": "end", "state": server.state()})
                else:
                    role.channel.send({"type": "batch", "state": server.state()},
                                      memoryview(batch).cast("B"))
            elif kind == "stop":
                server.stop()
                role.channel.send({"type": "state", "state": server.state()})
            elif kind == "done":
                spent = _handback_deadline(server, 0.0)
                peak = header.get("peak_mb")
                peak = float(peak) if isinstance(peak, (int, float)) and math.isfinite(peak) else 0.0
                now = time.monotonic()
                return Handback(peak, max(0.0, now - spent) if spent else 0.0,
                                server.counted_seconds(now))
            else:
                raise JudgedFailure("crash" if kind == "crash" else "invalid", _reason(header))
    except BudgetError as exc:
        raise JudgedFailure("invalid", f"the trainer broke the batch contract: {exc}") from exc
    except Deadline as exc:
        raise JudgedFailure("invalid", "the trainer kept its model past the hand-back deadline "
                            "(or sent half a message): training past the budget") from exc
    except ChannelClosed as exc:
        if (why := role.killed_for()) is not None:
            raise JudgedFailure("crash", f"the trainer was killed: {why}") from exc
        raise JudgedFailure("crash", f"the trainer ended without handing back a model ({exc})") from exc
    except ProtocolError as exc:
        raise JudgedFailure("invalid", f"the trainer broke the batch protocol: {exc}") from exc
    except OSError as exc:  # e.g. it closed its end while we were sending
        raise JudgedFailure("crash", f"the trainer's channel failed: {exc}") from exc


class _OverAllowance(Exception):
    """The evaluator is still computing when its allowance runs out."""


class Evaluator:
    """An evaluator role seen from the referee: load the artefact, then rows in, logits out.

    With an `allowance`, its seconds from the load request to each answer are measured, the
    referee's own loss arithmetic between requests included (small, and a model could compute
    in the background meanwhile), and where it is enforced, bounded at every step: a deadline
    while it works, and invalid once it is over (allowance.py says why).
    """

    def __init__(self, role: Role, vocab_size: int, device,
                 allowance: EvalAllowance | None = None) -> None:
        self.role, self.vocab_size, self.device = role, vocab_size, device
        self.info: dict = {}
        self.ipc = False
        self.ipc_note = ""
        self.allowance = allowance
        self.busy_s = 0.0     # seconds from the load request to its last answer
        self._since: float | None = None  # time.monotonic() of the load request
        self.tokens = 0       # tokens it was asked to score
        self.most_used = 0.0  # the largest share of its allowance it had used after a request

    def _timed(self, tokens: int, max_payload: int = 0) -> tuple[dict, bytearray | None]:
        """The answer to the request just sent, on the allowance's clock for `tokens` more."""
        if self._since is None:
            self._since = time.monotonic()
        self.tokens += tokens
        until = None
        if self.allowance is not None and self.allowance.enforced:
            until = self._since + self.allowance.seconds(self.tokens)
        try:
            answer = self._receive(max_payload, until)
        except _OverAllowance:
            answer = None
        finally:
            self.busy_s = time.monotonic() - self._since
        self._check(over=answer is None)
        return answer

    def _check(self, over: bool = False) -> None:
        """Note the share of the allowance used; invalid once over it (where enforced)."""
        if self.allowance is None:
            return
        limit = self.allowance.seconds(self.tokens)
        if limit > 0:
            self.most_used = max(self.most_used, self.busy_s / limit)
        if self.allowance.enforced and (over or self.busy_s > limit):
            raise JudgedFailure("invalid", self.allowance.problem(self.role.name, self.busy_s,
                                                                  self.tokens))

    def _receive(self, max_payload: int = 0,
                 until: float | None = None) -> tuple[dict, bytearray | None]:
        try:
            if not _await(self.role, until):
                raise _OverAllowance
            deadline = time.monotonic() + MESSAGE_S * 10
            return self.role.channel.receive(EVALUATOR_SAYS, max_payload=max_payload,
                                             deadline=deadline if until is None
                                             else min(deadline, until + MESSAGE_S))
        except Deadline as exc:
            raise JudgedFailure("invalid", "the evaluator sent half a message") from exc
        except ChannelClosed as exc:
            if (why := self.role.killed_for()) is not None:
                raise JudgedFailure("crash", f"the model's evaluator was killed: {why}") from exc
            raise JudgedFailure("crash", f"the model's evaluator died ({exc})") from exc
        except ProtocolError as exc:
            raise JudgedFailure("invalid", f"the evaluator broke the protocol: {exc}") from exc

    def _fail(self, header: dict) -> None:
        if header["type"] in ("crash", "invalid"):
            raise JudgedFailure("crash" if header["type"] == "crash" else "invalid", _reason(header))

    def load(self, artefact: str, train: str, ipc: bool) -> dict:
        """Have the evaluator load the model; its informational facts (params, depth, FLOPs)."""
        self.ipc = ipc
        header, _ = self._receive()  # its interpreter has started: what follows is its time
        self._fail(header)
        if header["type"] != "hello":
            raise JudgedFailure("invalid", f"the evaluator began with {header['type']!r}")
        self._since = time.monotonic()
        self.role.channel.send({"type": "load", "artefact": artefact, "train": train, "ipc": ipc})
        header, _ = self._timed(0)
        self._fail(header)
        if header["type"] != "ready":
            raise JudgedFailure("invalid", f"the evaluator answered {header['type']!r} to load")
        info = header.get("info") if isinstance(header.get("info"), dict) else {}
        self.info = {k: v for k, v in info.items() if k in ("num_params", "depth", "flops_per_token")
                     and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        return self.info

    def logits(self, x):
        """float32 logits [B, T, V] on the referee's device (numpy where it is None) for input
        rows x [B, T].

        On CUDA the logits stay on the device (a CUDA IPC handle); where the handle cannot be
        opened (another PID namespace, no shared /dev/shm) they come through host memory, once
        said in the log: correct, slower.
        """
        from scoring import InvalidModel, host_array, shape_problem

        batch, seq = x.shape
        host = np.ascontiguousarray(host_array(x), dtype=np.int64)
        want = [batch, seq, self.vocab_size]
        tokens = batch * seq  # counted once, though a failed CUDA handle asks again
        while True:
            self.role.channel.send({"type": "rows", "shape": [batch, seq], "ipc": self.ipc},
                                   memoryview(host).cast("B"))
            header, payload = self._timed(tokens, batch * seq * self.vocab_size * 4)
            tokens = 0
            self._fail(header)
            if header["type"] == "badoutput":
                got = header.get("shape")
                got = tuple(got) if isinstance(got, list) else str(got)[:80]
                raise InvalidModel(shape_problem(got, batch, seq, self.vocab_size))
            if header.get("shape") != want:
                raise JudgedFailure("invalid", f"the evaluator sent logits of shape "
                                    f"{str(header.get('shape'))[:80]}, not {want}")
            if header["type"] != "logits_ipc":
                break
            try:
                logits = self._from_ipc(header, want)  # waits for its GPU work: its time too
                self.busy_s = time.monotonic() - self._since
                self._check()
                return logits
            except OSError as exc:
                self.ipc = False
                self.ipc_note = f"CUDA IPC unavailable ({exc}); logits travel through host memory"
                print(f"referee: {self.ipc_note}", flush=True)
        if payload is None or len(payload) != batch * seq * self.vocab_size * 4:
            raise JudgedFailure("invalid", "the evaluator's logits payload has the wrong size")
        if self.device is None:  # the host's numpy maths (a CPU profile)
            return np.frombuffer(payload, dtype=np.float32).reshape(want)
        import torch

        return torch.frombuffer(payload, dtype=torch.float32).view(*want).to(self.device)

    def _from_ipc(self, header: dict, want: list[int]):
        """Open a CUDA IPC handle from plain, validated values (never an unpickled object)."""
        import torch
        from torch.multiprocessing.reductions import rebuild_cuda_tensor

        if not self.ipc:
            raise JudgedFailure("invalid", "the evaluator sent a CUDA handle it was not asked for")
        stride = [want[1] * want[2], want[2], 1]
        nbytes = want[0] * want[1] * want[2] * 4
        fields = (header.get("stride"), header.get("offset"), header.get("device"),
                  header.get("storage_size"), header.get("storage_offset"))
        if fields[0] != stride or fields[1] != 0 or fields[2] != self.device.index \
                or not isinstance(fields[3], int) or fields[3] < nbytes \
                or not isinstance(fields[4], int) or fields[4] < 0:
            raise JudgedFailure("invalid", "the evaluator's CUDA logits handle is malformed")
        try:
            tensor = rebuild_cuda_tensor(
                torch.Tensor, tuple(want), tuple(stride), 0, torch.storage.UntypedStorage,
                torch.float32, fields[2], bytes.fromhex(str(header["handle"])), fields[3],
                fields[4], False, bytes.fromhex(str(header["ref_handle"])),
                int(header["ref_offset"]), bytes.fromhex(str(header["event_handle"])),
                bool(header["event_sync"]))
        except RuntimeError as exc:  # the handle does not open here: fall back to host memory
            raise OSError(str(exc).splitlines()[0][:200]) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise JudgedFailure("invalid", f"the evaluator's CUDA logits handle is malformed: "
                                f"{exc}") from exc
        return tensor.clone()  # ours now: the evaluator may reuse its memory after this

    def bye(self) -> None:
        try:
            self.role.channel.send({"type": "bye"})
        except OSError:
            pass
