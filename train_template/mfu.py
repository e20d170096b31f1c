"""Model FLOPs utilisation: an honest FLOPs-per-token estimate and each GPU model's peak.

FLOPs per token follow the PaLM convention (appendix B), as nanochat and autoresearch report
it, so numbers compare: 6 x (parameters used in matrix multiplies) for forward + backward,
plus 12 x layers x attention width x attended context for the attention scores and values.
Embedding lookups are not matrix multiplies and are left out (a tied output head counts).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the referee imports this module and never torch
    import torch


# Dense bf16 tensor-core peak (no sparsity), FLOP/s, by a substring of the CUDA device name.
# Order matters: the first match wins, so more specific names come first.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("GB200", 2.5e15),
    ("B200", 2.25e15),
    ("B100", 1.75e15),
    ("GH200", 989.4e12),
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),  # SXM and NVL
    ("H800", 989.4e12),
    ("H20", 148.0e12),
    ("A100", 312.0e12),
    ("A800", 312.0e12),
    ("L40S", 362.0e12),
    ("L40", 181.0e12),
    ("L4", 121.0e12),
    ("A10G", 70.0e12),
    ("A10", 125.0e12),
    ("RTX 4090", 165.2e12),
    ("RTX 3090", 71.0e12),
    ("V100", 125.0e12),  # fp16 (no bf16 on Volta)
)


def peak_flops(device_name: str) -> float | None:
    """The dense bf16 peak of the named GPU, or None when the model is unknown (MFU then 0)."""
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in device_name), None)


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that take part in matrix multiplies: all of them except embedding tables."""
    import torch

    lookup = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    linear = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return sum(p.numel() for p in model.parameters() if id(p) not in lookup or id(p) in linear)


def attention_context(module: ModuleType | None, depth: int, seq_len: int) -> list[int]:
    """Per-layer attended context: seq_len, or the short window of "S" layers when the train
    script declares WINDOW_PATTERN / SHORT_WINDOW (as the seeds do)."""
    pattern = getattr(module, "WINDOW_PATTERN", "L")
    window = getattr(module, "SHORT_WINDOW", seq_len)
    if not isinstance(pattern, str) or not pattern or not isinstance(window, int):
        return [seq_len] * depth
    return [min(window, seq_len) if pattern[i % len(pattern)] == "S" else seq_len for i in range(depth)]


def flops_per_token(model: torch.nn.Module, module: ModuleType | None, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) of `model` as built by the train script."""
    depth = getattr(module, "DEPTH", 0)
    width = getattr(module, "MODEL_DIM", 0)
    dense = 6.0 * matmul_params(model)
    if not (isinstance(depth, int) and isinstance(width, int)) or depth <= 0 or width <= 0:
        return dense
    return dense + 12.0 * width * sum(attention_context(module, depth, seq_len))


def mfu_percent(model: torch.nn.Module, module: ModuleType | None, seq_len: int, tokens: float,
                seconds: float, device: torch.device) -> float:
    """Achieved FLOP/s over the GPU's bf16 peak, in percent; 0 on CPU or an unknown GPU."""
    if device.type != "cuda":
        return 0.0
    import torch

    return mfu_of(flops_per_token(model, module, seq_len), tokens, seconds,
                  torch.cuda.get_device_name(device))


def mfu_of(flops_token: float, tokens: float, seconds: float, device_name: str) -> float:
    """MFU in percent from FLOPs per token (the referee's tokens and seconds); 0 on CPU."""
    peak = peak_flops(device_name)
    if peak is None or seconds <= 0 or device_name == "cpu":
        return 0.0
    return 100.0 * flops_token * tokens / seconds / peak
