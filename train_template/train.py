"""A compact modern GPT, sized for one H100: the seed that evolve mutates on gpu-* profiles.

The harness (prepare.py) calls train(ctx) and scores the model this returns; only the
training budget (ctx.batches stops when it is spent) bounds what happens here.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# ---- hyperparameters and structural choices (a research move is often one line here) ----
DEPTH = 8                 # transformer blocks
MODEL_DIM = 512           # residual width (a multiple of HEAD_DIM)
HEAD_DIM = 128            # attention head size
MLP_RATIO = 4             # MLP hidden width = MLP_RATIO * MODEL_DIM
BATCH_SIZE = 64           # sequences per step (x 2048 tokens of context)
EMBED_LR = 0.2            # AdamW, token and value embeddings
UNEMBED_LR = 0.004        # AdamW, output head
MATRIX_LR = 0.02          # Muon, every 2-D matrix in the blocks
SCALAR_LR = 0.02          # AdamW, per-layer residual and value-embedding scalars
WEIGHT_DECAY = 0.0        # decoupled, on the Muon matrices
ADAM_BETA1 = 0.8
ADAM_BETA2 = 0.95
MUON_MOMENTUM = 0.95
WARMUP_FRAC = 0.0         # of the budget: LR ramps up from 0
WARMDOWN_FRAC = 0.4       # of the budget: LR decays linearly at the end
FINAL_LR_FRAC = 0.0       # LR at the end of warmdown, as a fraction of peak
GRAD_CLIP = 0.0           # max gradient norm; 0 disables
ACTIVATION = "relu2"      # "relu2" | "gelu" | "silu" | "swiglu"
NORM_PLACEMENT = "pre"    # "pre" | "post" | "sandwich"
INIT_SCHEME = "zero_out"  # "normal" | "scaled" | "zero_out" (output projections start at 0)
TIE_EMBEDDINGS = False    # share the embedding and output head
LOGIT_SOFTCAP = 15.0      # cap * tanh(logits / cap); 0 disables
QK_NORM = True            # RMS-normalise queries and keys per head
ROPE_BASE = 10000.0       # rotary embedding base
VALUE_EMBEDS = True       # every other block (the last included) adds a token embedding to its values
WINDOW_PATTERN = "L"      # per block, repeated: "L" full causal context, "S" sliding window (e.g. "SSSL")
SHORT_WINDOW = 512        # tokens an "S" block attends to (itself included)
COMPILE = True            # torch.compile the model where the profile allows it (CUDA)


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def rotary(x, cos, sin):
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def window_of(layer):
    """Tokens block `layer` attends to; None means the full causal context."""
    kind = WINDOW_PATTERN[layer % len(WINDOW_PATTERN)]
    if kind not in "SL":
        raise ValueError(f"WINDOW_PATTERN may hold only 'S' and 'L', got {WINDOW_PATTERN!r}")
    return SHORT_WINDOW if kind == "S" else None


class Attention(nn.Module):
    def __init__(self, window):
        super().__init__()
        self.n_head = MODEL_DIM // HEAD_DIM
        self.window = window
        self.qkv = nn.Linear(MODEL_DIM, 3 * MODEL_DIM, bias=False)
        self.proj = nn.Linear(MODEL_DIM, MODEL_DIM, bias=False)

    def forward(self, x, cos, sin, ve=None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, HEAD_DIM).unbind(2)
        if ve is not None:
            v = v + ve.view(B, T, self.n_head, HEAD_DIM)
        q, k = rotary(q, cos, sin), rotary(k, cos, sin)
        if QK_NORM:
            q, k = norm(q), norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.window is None or self.window >= T:  # flash attention path
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # causal band: each token sees itself and the window - 1 before it
            i = torch.arange(T, device=x.device)
            band = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=band)
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
    def __init__(self, layer):
        super().__init__()
        self.attn, self.mlp = Attention(window_of(layer)), MLP()

    def forward(self, x, cos, sin, ve=None):
        if NORM_PLACEMENT == "pre":
            x = x + self.attn(norm(x), cos, sin, ve)
            return x + self.mlp(norm(x))
        if NORM_PLACEMENT == "post":
            x = norm(x + self.attn(x, cos, sin, ve))
            return norm(x + self.mlp(x))
        if NORM_PLACEMENT == "sandwich":
            x = x + norm(self.attn(norm(x), cos, sin, ve))
            return x + norm(self.mlp(norm(x)))
        raise ValueError(f"unknown NORM_PLACEMENT {NORM_PLACEMENT!r}")


class GPT(nn.Module):
    def __init__(self, vocab_size, seq_len):
        super().__init__()
        assert MODEL_DIM % HEAD_DIM == 0, "MODEL_DIM must be a multiple of HEAD_DIM"
        self.embed = nn.Embedding(vocab_size, MODEL_DIM)
        self.blocks = nn.ModuleList(Block(i) for i in range(DEPTH))
        # value embeddings: extra token embeddings mixed into the values of alternate blocks
        self.ve_layers = [i for i in range(DEPTH) if VALUE_EMBEDS and i % 2 == (DEPTH - 1) % 2]
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vocab_size, MODEL_DIM) for i in self.ve_layers})
        self.ve_lambdas = nn.Parameter(torch.full((DEPTH,), 0.5))
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
        for ve in self.value_embeds.values():
            nn.init.normal_(ve.weight, std=1.0)
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
        T = idx.size(1)
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = x0 = norm(self.embed(idx))
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.ve_lambdas[i] * self.value_embeds[str(i)](idx) if i in self.ve_layers else None
            x = block(x, cos, sin, ve)
        logits = self.head(norm(x)).float()
        if LOGIT_SOFTCAP > 0:
            logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        return logits


@torch.no_grad()
def orthogonalize(g, steps=5):
    """Newton-Schulz iteration towards the nearest semi-orthogonal matrix (Muon's update).

    g is one matrix [rows, cols] or a stack of same-shape matrices [n, rows, cols]: a stack
    runs as batched matmuls, a few kernels for all of them instead of a few per matrix.
    """
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.bfloat16() if g.is_cuda else g.float()
    single = x.dim() == 2
    if single:
        x = x.unsqueeze(0)
    transpose = x.size(-2) > x.size(-1)
    if transpose:
        x = x.mT
    x = x / (x.norm(dim=(-2, -1), keepdim=True) + 1e-7)
    for _ in range(steps):
        s = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(s, s, s, beta=b, alpha=c), x, beta=a)  # a x + (b s + c s s) x
    if transpose:
        x = x.mT
    return (x[0] if single else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum, then orthogonalised updates for 2-D matrices (Nesterov, shape-scaled).

    Matrices of one shape are updated together (foreach ops, one batched Newton-Schulz).
    """

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            lr, momentum, decay = group["lr"], group["momentum"], group["weight_decay"]
            by_shape = {}
            for p in group["params"]:
                if p.grad is not None:
                    by_shape.setdefault(tuple(p.shape), []).append(p)
            for (rows, cols), params in by_shape.items():
                grads = [p.grad for p in params]
                bufs = [self.state[p].setdefault("momentum", torch.zeros_like(p)) for p in params]
                torch._foreach_lerp_(bufs, grads, 1 - momentum)
                updates = orthogonalize(torch.stack(torch._foreach_lerp(grads, bufs, momentum)))
                if lr * decay != 0:
                    torch._foreach_mul_(params, 1 - lr * decay)
                scale = max(1.0, rows / cols) ** 0.5
                torch._foreach_add_(params, list(updates.unbind(0)), alpha=-lr * scale)


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
        dict(params=[model.resid_lambdas, model.x0_lambdas, model.ve_lambdas], lr=SCALAR_LR),
        dict(params=[model.head.weight], lr=UNEMBED_LR),
    ]
    if model.ve_layers:
        adam_groups.append(dict(params=list(model.value_embeds.parameters()), lr=EMBED_LR))
    if not TIE_EMBEDDINGS:
        adam_groups.append(dict(params=[model.embed.weight], lr=EMBED_LR))
    adam = torch.optim.AdamW(adam_groups, betas=(ADAM_BETA1, ADAM_BETA2), eps=1e-10,
                             weight_decay=0.0)
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY)
    optimizers = [adam, muon]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]

    def loss_of(x, y):  # the loss inside the compiled graph: softcap and cross-entropy fuse
        logits = model(x)
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.reshape(-1))

    step_loss = torch.compile(loss_of) if COMPILE and ctx.compile else loss_of
    limit = 3 * math.log(ctx.vocab_size)  # far above the loss of uniform guessing: diverged
    check_every = 10  # steps between divergence checks: reading the loss waits for the GPU
    loss = None
    for step, (x, y) in enumerate(ctx.batches(BATCH_SIZE)):
        mult = lr_multiplier(ctx.progress())
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * mult
        with ctx.autocast():
            loss = step_loss(x, y)
        loss.backward()
        if step % check_every == 0:
            value = checked(loss, step, limit)
        if GRAD_CLIP > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        if step % 100 == 0:
            ctx.log(f"step {step} loss {value:.4f} lr x{mult:.2f} progress {ctx.progress():.2f}")
    if loss is not None:
        checked(loss, step, limit)
    return model


def checked(loss, step, limit):
    """The loss as a float; raises when training diverged (not finite, or far above chance)."""
    value = loss.item()
    if not math.isfinite(value) or value > limit:
        raise FloatingPointError(f"training diverged: loss {value:.4g} at step {step}")
    return value
