"""The catalogue of research moves the heuristic mutator makes on a constants block.

A move kind lists every concrete edit it could make to the current constants (e.g. the
matrix LR x0.5, x0.7, x1.5, x2), keeping values in their valid ranges (docs/contracts.md
section 2). A kind whose constants are missing or of an unexpected type raises
`NotApplicable` with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from evolve.mutate.constants import Constant, LiteralValue, format_literal, round_sig

LEARNING_RATES = ("EMBED_LR", "UNEMBED_LR", "MATRIX_LR", "SCALAR_LR")
CHOICES: Mapping[str, tuple[str, ...]] = {
    "ACTIVATION": ("relu2", "gelu", "silu", "swiglu"),
    "NORM_PLACEMENT": ("pre", "post", "sandwich"),
    "INIT_SCHEME": ("normal", "scaled", "zero_out"),
}


class NotApplicable(Exception):
    """A move cannot be made on this source; the message says why."""


@dataclass(frozen=True)
class Edit:
    """One concrete change of one or more constants."""

    changes: tuple[tuple[str, LiteralValue], ...]
    description: str
    rationale: str


Constants = Mapping[str, Constant]


@dataclass(frozen=True)
class Move:
    """A kind of research move: all the edits it offers on the given constants."""

    kind: str
    weight: float
    edits: Callable[[Constants], list[Edit]]


# ---------------------------------------------------------------------------------------
# Reading constants


def _value(c: Constants, name: str, kinds: tuple[type, ...]) -> LiteralValue:
    if name not in c:
        raise NotApplicable(f"{name} is not defined")
    value = c[name].value
    if value is None:
        raise NotApplicable(f"{name} is `{c[name].source_text}`, not a literal")
    if isinstance(value, bool) != (bool in kinds) or not isinstance(value, kinds):
        wanted = " or ".join(k.__name__ for k in kinds)
        raise NotApplicable(f"{name} is {value!r} ({type(value).__name__}), expected {wanted}")
    return value


def _number(c: Constants, name: str, *, low: float = 0.0) -> int | float:
    value = _value(c, name, (int, float))
    assert not isinstance(value, (bool, str))
    if value < low:
        raise NotApplicable(f"{name} is {value!r}, outside its range (>= {low:g})")
    return value


def _like(old: int | float, new: float) -> int | float:
    """`new` rounded for printing; an int stays an int while the new value is whole
    (ROPE_BASE 10000 -> 5000), so `GRAD_CLIP = 1` x0.5 is 0.5, never 0."""
    value = round_sig(float(new))
    return int(value) if isinstance(old, int) and value.is_integer() else value


def _show(value: LiteralValue) -> str:
    return format_literal(value)


def _collect(names: Sequence[str], make: Callable[[str], list[Edit]]) -> list[Edit]:
    """Edits over several constants; fails only when none of them allows any edit."""
    edits: list[Edit] = []
    reasons: list[str] = []
    for name in names:
        try:
            edits.extend(make(name))
        except NotApplicable as exc:
            reasons.append(str(exc))
    if not edits:
        raise NotApplicable(", ".join(reasons) or "nothing to change")
    return edits


def _set(name: str, old: LiteralValue, new: LiteralValue, note: str, why: str) -> Edit:
    suffix = f" ({note})" if note else ""
    return Edit(((name, new),), f"{name} {_show(old)} -> {_show(new)}{suffix}", why)


def _choices(
    c: Constants,
    name: str,
    values: Sequence[float],
    why_up: str,
    why_down: str,
    *,
    low: float = 0.0,
    high: float = float("inf"),
) -> list[Edit]:
    """Set a number to each of `values` (other than its current value) inside [low, high]."""
    old = _number(c, name, low=low)
    edits = []
    for value in dict.fromkeys(_like(old, v) for v in values):
        if value != old and low <= value <= high:
            edits.append(_set(name, old, value, "", why_up if value > old else why_down))
    return edits


# ---------------------------------------------------------------------------------------
# The catalogue


def _scale_lr(c: Constants) -> list[Edit]:
    def make(name: str) -> list[Edit]:
        old = _number(c, name)
        if old == 0:
            raise NotApplicable(f"{name} is 0; scaling it changes nothing")
        return [
            _set(
                name,
                old,
                _like(old, old * f),
                f"x{f:g}",
                f"A {'higher' if f > 1 else 'lower'} {name} may "
                + (
                    "learn faster within the fixed budget."
                    if f > 1
                    else "train more stably; the current value may be past the edge of stability."
                ),
            )
            for f in (0.5, 0.7, 1.5, 2.0)
        ]

    return _collect(LEARNING_RATES, make)


def _scale_all_lrs(c: Constants) -> list[Edit]:
    present = [n for n in LEARNING_RATES if n in c]
    values = {n: _number(c, n) for n in present}
    if len(values) < 2:
        raise NotApplicable("fewer than two learning-rate constants are defined")
    edits = []
    for f in (0.7, 1.4):
        changes = tuple((n, _like(v, v * f)) for n, v in values.items())
        parts = ", ".join(f"{n} {_show(values[n])} -> {_show(v)}" for n, v in changes)
        why = (
            "The overall step size may be too small for this budget."
            if f > 1
            else "The overall step size may be too large; lower it everywhere together."
        )
        edits.append(Edit(changes, f"all learning rates x{f:g} ({parts})", why))
    return edits


def _depth(c: Constants) -> list[Edit]:
    old = _value(c, "DEPTH", (int,))
    assert isinstance(old, int)
    if old < 1:
        raise NotApplicable(f"DEPTH is {old}, outside its range (>= 1)")
    edits = [
        _set(
            "DEPTH",
            old,
            old + 1,
            "+1 block",
            "A deeper model has more capacity per token, if the budget allows the steps.",
        )
    ]
    if old > 1:
        edits.append(
            _set(
                "DEPTH",
                old,
                old - 1,
                "-1 block",
                "A shallower model takes more steps in the same budget.",
            )
        )
    return edits


def _width(c: Constants) -> list[Edit]:
    dim = _value(c, "MODEL_DIM", (int,))
    head = _value(c, "HEAD_DIM", (int,))
    assert isinstance(dim, int) and isinstance(head, int)
    if head < 1 or dim % head:
        raise NotApplicable(f"MODEL_DIM {dim} is not a multiple of HEAD_DIM {head}")
    edits = []
    for heads in (-2, -1, 1, 2):
        new = dim + heads * head
        if new >= head:
            edits.append(
                _set(
                    "MODEL_DIM",
                    dim,
                    new,
                    f"{heads:+d} head{'s' if abs(heads) > 1 else ''} of {head}",
                    "A wider residual stream adds capacity."
                    if heads > 0
                    else "A narrower model is cheaper per step, so it sees more tokens.",
                )
            )
    return edits


def _head_dim(c: Constants) -> list[Edit]:
    dim = _value(c, "MODEL_DIM", (int,))
    head = _value(c, "HEAD_DIM", (int,))
    assert isinstance(dim, int) and isinstance(head, int)
    edits = []
    for new in (head // 2, head * 2):
        if new >= 8 and new % 2 == 0 and dim % new == 0 and new != head:
            edits.append(
                _set(
                    "HEAD_DIM",
                    head,
                    new,
                    f"{dim // new} heads instead of {dim // head}",
                    "More, smaller heads attend to more patterns at once."
                    if new < head
                    else "Fewer, larger heads give each head more room.",
                )
            )
    if not edits:
        raise NotApplicable(f"no other head size divides MODEL_DIM {dim}")
    return edits


def _mlp_ratio(c: Constants) -> list[Edit]:
    old = _number(c, "MLP_RATIO", low=0.5)
    steps = (old - 1, old + 1, old * 2) if isinstance(old, int) else (old * 0.75, old * 1.5)
    return _choices(
        c,
        "MLP_RATIO",
        steps,
        "A wider MLP stores more per layer.",
        "A narrower MLP frees compute for more steps.",
        low=1 if isinstance(old, int) else 0.5,
    )


def _batch_size(c: Constants) -> list[Edit]:
    old = _value(c, "BATCH_SIZE", (int,))
    assert isinstance(old, int)
    return _choices(
        c,
        "BATCH_SIZE",
        (old * 2, old // 2),
        "A larger batch gives less noisy gradients at fewer steps.",
        "A smaller batch takes more optimizer steps in the same budget.",
        low=1,
    )


def _schedule_room(c: Constants, other: str) -> float:
    try:
        return 1.0 - float(_number(c, other))
    except NotApplicable:
        return 1.0


def _warmup(c: Constants) -> list[Edit]:
    old = float(_number(c, "WARMUP_FRAC"))
    values = (0.0, old / 2, old * 2 if old else 0.02, old + 0.05)
    return _choices(
        c,
        "WARMUP_FRAC",
        values,
        "A longer warmup protects the early steps.",
        "A shorter warmup spends more of the budget at full learning rate.",
        high=_schedule_room(c, "WARMDOWN_FRAC"),
    )


def _warmdown(c: Constants) -> list[Edit]:
    old = float(_number(c, "WARMDOWN_FRAC"))
    values = (old - 0.2, old - 0.1, old + 0.1, old + 0.2)
    return _choices(
        c,
        "WARMDOWN_FRAC",
        values,
        "A longer warmdown anneals the loss further.",
        "A shorter warmdown keeps the peak learning rate longer.",
        high=_schedule_room(c, "WARMUP_FRAC"),
    )


def _final_lr(c: Constants) -> list[Edit]:
    return _choices(
        c,
        "FINAL_LR_FRAC",
        (0.0, 0.05, 0.1, 0.2, 0.5),
        "Ending at a higher LR keeps learning until the end.",
        "Annealing lower settles the weights for the evaluation.",
        high=1.0,
    )


def _weight_decay(c: Constants) -> list[Edit]:
    old = float(_number(c, "WEIGHT_DECAY"))
    values = (old * 0.5, old * 2, 0.0) if old else (0.01, 0.1)
    return _choices(
        c,
        "WEIGHT_DECAY",
        values,
        "More weight decay regularises and can speed up late training.",
        "Less weight decay lets a short run fit faster.",
    )


def _adam_betas(c: Constants) -> list[Edit]:
    options = {"ADAM_BETA1": (0.8, 0.85, 0.9, 0.95), "ADAM_BETA2": (0.95, 0.98, 0.99, 0.995, 0.999)}
    return _collect(
        list(options),
        lambda n: _choices(
            c,
            n,
            options[n],
            f"A higher {n} averages over more steps.",
            f"A lower {n} reacts faster in a short run.",
            high=0.9999,
        ),
    )


def _muon_momentum(c: Constants) -> list[Edit]:
    return _choices(
        c,
        "MUON_MOMENTUM",
        (0.85, 0.9, 0.95, 0.98),
        "More momentum smooths the orthogonalised updates.",
        "Less momentum adapts faster in a short budget.",
        high=0.9999,
    )


def _off_or_scale(
    name: str, what: str, on: tuple[float, ...], why_on: str
) -> Callable[[Constants], list[Edit]]:
    """A number where 0 disables a feature: turn it off, tighten or loosen it, or turn it on."""

    def edits(c: Constants) -> list[Edit]:
        old = _number(c, name)
        if not old:
            return [_set(name, old, _like(old, v), "on", why_on) for v in on]
        why_off = f"Without {what} the update is unconstrained; see whether it still helps."
        out = [_set(name, old, _like(old, 0.0), "off", why_off)]
        for f in (0.5, 2.0):
            why = f"A {'tighter' if f < 1 else 'looser'} {what} than the current one."
            out.append(_set(name, old, _like(old, old * f), f"x{f:g}", why))
        return out

    return edits


def _rope_base(c: Constants) -> list[Edit]:
    old = _number(c, "ROPE_BASE")
    if old <= 0:
        raise NotApplicable(f"ROPE_BASE is {old!r}, outside its range (> 0)")
    return _choices(
        c,
        "ROPE_BASE",
        (old * 0.5, old * 2, old * 10),
        "A larger RoPE base resolves longer-range positions.",
        "A smaller RoPE base sharpens attention to nearby tokens.",
        low=1e-9,
    )


def _pick(name: str) -> Callable[[Constants], list[Edit]]:
    def edits(c: Constants) -> list[Edit]:
        old = _value(c, name, (str,))
        return [
            _set(name, old, new, "", f"Try the {new} variant of {name.lower()} instead of {old}.")
            for new in CHOICES[name]
            if new != old
        ]

    return edits


def _flip(name: str, why_on: str, why_off: str) -> Callable[[Constants], list[Edit]]:
    def edits(c: Constants) -> list[Edit]:
        old = _value(c, name, (bool,))
        return [_set(name, old, not old, "", why_off if old else why_on)]

    return edits


MOVES: tuple[Move, ...] = (
    Move("learning_rate", 3.0, _scale_lr),
    Move("all_learning_rates", 1.0, _scale_all_lrs),
    Move("depth", 1.5, _depth),
    Move("width", 1.5, _width),
    Move("head_dim", 0.5, _head_dim),
    Move("mlp_ratio", 1.0, _mlp_ratio),
    Move("batch_size", 1.0, _batch_size),
    Move("warmup", 1.0, _warmup),
    Move("warmdown", 1.0, _warmdown),
    Move("final_lr_frac", 1.0, _final_lr),
    Move("weight_decay", 1.0, _weight_decay),
    Move("adam_betas", 1.0, _adam_betas),
    Move("muon_momentum", 1.0, _muon_momentum),
    Move(
        "grad_clip",
        0.5,
        _off_or_scale(
            "GRAD_CLIP",
            "gradient clipping",
            (0.5, 1.0),
            "Clipping the gradient norm guards against loss spikes.",
        ),
    ),
    Move("activation", 1.0, _pick("ACTIVATION")),
    Move("norm_placement", 1.0, _pick("NORM_PLACEMENT")),
    Move("init_scheme", 1.0, _pick("INIT_SCHEME")),
    Move(
        "tie_embeddings",
        0.7,
        _flip(
            "TIE_EMBEDDINGS",
            "Tying the embedding and the head shares their parameters and their learning.",
            "An untied head is free to learn its own output embedding.",
        ),
    ),
    Move(
        "logit_softcap",
        0.7,
        _off_or_scale(
            "LOGIT_SOFTCAP",
            "logit soft cap",
            (15.0, 30.0),
            "A soft cap keeps the logits from growing overconfident.",
        ),
    ),
    Move(
        "qk_norm",
        0.7,
        _flip(
            "QK_NORM",
            "Normalising queries and keys stabilises attention logits at higher LRs.",
            "Without QK norm attention logits are unconstrained; it saves a little compute.",
        ),
    ),
    Move("rope_base", 0.5, _rope_base),
)
