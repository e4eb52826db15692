"""Pure optimizers over parameter pytrees, in the style of optax.

An :class:`Optimizer` is a pair of pure functions::

    opt_state = opt.init(params)
    new_params, new_opt_state = opt.update(grads, opt_state, params)

Nothing is written in place. Hyperparameters live *in the optimizer state*
(``opt_state["hp"]``) as 0-d float64 tensors, so stacking the states of several
ensemble members gives each member its own learning rate, betas, ... and a
vmapped update reads them as ordinary tensors (optax's ``inject_hyperparams``
idea). Constructors accept Python floats or 0-d tensors.

Any hyperparameter may also be a :mod:`ganfn.schedules` value (``lr``, a beta,
...): it is stored as its fields (``hp["lr.start"]``, ...) and evaluated at the
update count on each update. The ``schedule=`` argument is a multiplier of the
base learning rate (:func:`exponential_decay`, :func:`linear_warmup`,
:func:`linear_decay`); :func:`clip_by_global_norm` wraps any optimizer. Results match ``torch.optim``
(see ``tests/test_optim.py``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import optree
import torch
from torch import Tensor

from . import schedules as _sched
from .tree import PyTree, global_norm, in_transform, tree_map, tree_where
from .validate import Range, check_range

Schedule = Callable[[Tensor], Tensor]
Hyper = float | Tensor

__all__ = ["Optimizer", "sgd", "adam", "adamw", "rmsprop", "clip_by_global_norm", "loss_scaled", "constant",
           "exponential_decay", "linear_warmup", "linear_decay", "get"]


class Optimizer(NamedTuple):
    """``init(params) -> state``; ``update(grads, state, params) -> (params, state)``;
    ``lr(state) -> Tensor``, the learning rate the next update will use."""

    init: Callable[[PyTree], dict]
    update: Callable[[PyTree, dict, PyTree], tuple[PyTree, dict]]
    lr: Callable[[dict], Tensor]
    name: str = "optimizer"
    fixed: frozenset = frozenset()
    """Hyperparameters whose zero value was fixed at construction (a Python 0.0
    removes their arithmetic); changing them in the state has no effect, so
    ``GAN.init`` refuses to. Pass a tensor to make one sweepable."""
    loss_scale: Callable[[dict], Tensor] | None = None
    """``loss_scale(state)``: the factor the loss is multiplied by before it is
    differentiated (:func:`loss_scaled`); ``None``: no loss scaling. ``GAN``
    reads this declaration, never the state's keys."""


# -- schedules ---------------------------------------------------------------------


def constant() -> Schedule:
    """Multiplier 1 at every step."""
    return lambda count: torch.ones((), dtype=torch.float64, device=count.device)


def exponential_decay(gamma: float, every: int = 1) -> Schedule:
    """``gamma ** (count // every)``: ``torch.optim.lr_scheduler.ExponentialLR``
    stepped once every ``every`` updates (e.g. once per epoch)."""
    check_range("gamma", gamma, Range(0.0, 1.0, low_open=True))
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    return lambda count: torch.pow(
        torch.tensor(gamma, dtype=torch.float64, device=count.device),
        torch.div(count, every, rounding_mode="floor").to(torch.float64),
    )


def linear_warmup(steps: int) -> Schedule:
    """Rises linearly from 1/steps at the first update to 1 at update ``steps``, then 1."""
    if steps < 1:
        raise ValueError(f"warm-up steps must be >= 1, got {steps}")
    return lambda count: torch.clamp((count.to(torch.float64) + 1.0) / steps, max=1.0)


def linear_decay(total_steps: int, end: float = 0.0) -> Schedule:
    """Falls linearly from 1 at update 0 to ``end`` at update ``total_steps``, then
    ``end``: :func:`ganfn.schedules.linear` ``(1, end, total_steps)`` as a multiplier."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    # mypy does not see a NamedTuple's __call__ as making it callable; Schedule.__call__ takes a step tensor.
    return _sched.linear(1.0, end, total_steps)  # type: ignore[return-value]


# -- hyperparameter handling ----------------------------------------------------------


def _is_zero(x: Hyper) -> bool:
    return not isinstance(x, Tensor) and x == 0


def _hp(value: Hyper, like: Tensor | None) -> Tensor:
    device = like.device if like is not None else None
    if isinstance(value, Tensor):
        return value.detach().to(device=device, dtype=torch.float64).clone()
    return torch.tensor(float(value), dtype=torch.float64, device=device)


def _first_leaf(params: PyTree) -> Tensor | None:
    import optree

    ls = optree.tree_leaves(params)
    return ls[0] if ls else None


def _make(name: str, hypers: dict[str, Hyper], slots: tuple[str, ...], step: Callable, schedule: Schedule | None,
          fixed: frozenset = frozenset()) -> Optimizer:

    scheduled = {k: v for k, v in hypers.items() if _sched.is_schedule(v)}

    def init(params: PyTree) -> dict:
        like = _first_leaf(params)
        state = {
            "count": torch.zeros((), dtype=torch.int64, device=like.device if like is not None else None),
            "hp": {k: _hp(v, like) for key, value in hypers.items() for k, v in _sched.flat(key, value).items()},
        }
        for s in slots:
            state[s] = tree_map(torch.zeros_like, params)
        return state

    def values(state: dict) -> dict[str, Tensor]:
        # The hyperparameters at this update: each scheduled one evaluated from its stored fields.
        if not scheduled:
            return dict(state["hp"])
        return _sched.resolve(state["hp"], scheduled, tuple(hypers), state["count"])

    def lr(state: dict) -> Tensor:
        base = state["hp"]["lr"] if "lr" not in scheduled else values(state)["lr"]
        # No schedule: the base rate itself (a constant() schedule gives the same numbers, with two more ops).
        return base if schedule is None else base * schedule(state["count"])

    def update(grads: PyTree, state: dict, params: PyTree) -> tuple[PyTree, dict]:
        hp = values(state)
        hp["lr"] = hp["lr"] if schedule is None else hp["lr"] * schedule(state["count"])
        new_params, new_slots = step(grads, params, {s: state[s] for s in slots}, hp, state["count"])
        new_state = {"count": state["count"] + 1, "hp": state["hp"], **new_slots}
        return new_params, new_state

    return Optimizer(init, update, lr, name, fixed)


def _no_0d(leaf: Callable) -> Callable:
    """``leaf`` applied to 0-d tensors as 1-element tensors.

    With 0-d leaves every operand would be 0-d, and then the 0-d float64
    hyperparameters would promote the result to float64.
    """

    def wrapped(*xs: Tensor):
        if xs[0].dim() != 0:
            return leaf(*xs)
        return tuple(o.reshape(()) for o in leaf(*(x.reshape(1) for x in xs)))

    return wrapped


def _unzip(tree_of_tuples: PyTree, like: PyTree, n: int) -> list[PyTree]:
    import optree

    treedef = optree.tree_structure(like)
    flat = treedef.flatten_up_to(tree_of_tuples)
    return [optree.tree_unflatten(treedef, [t[i] for t in flat]) for i in range(n)]


def _computed_once(scalars: dict[str, Tensor]) -> dict[str, Tensor]:
    """``scalars`` (0-d, or [S] under vmap) with the same values, computed into
    one buffer: what the Adam update does with them under ``torch.compile``.

    Inductor inlines a cheap 0-d computation into every kernel that reads it,
    and the C++ compiler cannot hoist it out of the loop (the loads may alias
    the outputs), so each vector of every parameter leaf recomputed Adam's
    bias corrections: two float64 ``pow`` calls per 16 elements, most of the
    update's time. A reduction is always written to a buffer, and the maximum
    of a value and itself is that value (a NaN stays NaN).
    """
    keys = list(scalars)
    v = torch.stack([scalars[k] for k in keys])
    return dict(zip(keys, torch.stack([v, v]).amax(0).unbind(0), strict=True))


# Set False to force the per-leaf path everywhere (tests compare the two).
FOREACH = True


def _foreach_lists(params: PyTree, others: tuple[PyTree, ...], hp: dict):
    """``(treedef, param_leaves, [leaves of each of others])`` when the foreach fast
    path applies, else None.

    It applies outside torch.func transforms and torch.compile (which want the
    per-leaf path: compile fuses it anyway), when every leaf shares one dtype and
    device and every hyperparameter is 0-d. Eagerly it removes the per-tensor
    Python and dispatch cost, which dominated a small model's update on CPU
    (Adam on the 784-128 MLP: ~1.3 ms per-leaf vs ~0.2 ms foreach).
    """
    import optree

    if not FOREACH or in_transform():
        return None
    ps, treedef = optree.tree_flatten(params)
    if not ps:
        return None
    lists = [treedef.flatten_up_to(o) for o in others]
    first = ps[0]
    # Outside every transform (checked above) no tensor is a transform's wrapper.
    every = [*ps, *(t for lst in lists for t in lst), *hp.values()]
    dev = first.device
    if any(not isinstance(x, Tensor) or x.device != dev for x in every):
        return None
    # 0-d leaves are left to the per-leaf path: there a 0-d float64 hyperparameter
    # times a 0-d leaf promotes the leaf to float64, which foreach would not copy.
    if (any(x.dtype != first.dtype or x.dim() == 0 for lst in (ps, *lists) for x in lst)
            or any(v.dim() != 0 for v in hp.values())):
        return None
    return treedef, ps, lists


# -- the optimizers ----------------------------------------------------------------------


def sgd(lr: Hyper, momentum: Hyper = 0.0, *, nesterov: bool = False, dampening: Hyper = 0.0, weight_decay: Hyper = 0.0,
        schedule: Schedule | None = None) -> Optimizer:
    """SGD with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    The momentum buffer starts as the first gradient, as in torch.
    """
    check_range("lr", lr, Range(0.0))
    check_range("momentum", momentum, Range(0.0, 1.0))
    check_range("dampening", dampening, Range(0.0, 1.0))
    check_range("weight_decay", weight_decay, Range(0.0))
    if nesterov and not isinstance(momentum, Tensor) and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov momentum requires momentum > 0 and dampening = 0")
    use_momentum = isinstance(momentum, Tensor) or momentum != 0

    def step(grads, params, slots, hp, count):
        def leaf(g, p, buf):
            g = g + hp["weight_decay"] * p
            if use_momentum:
                buf = torch.where(count == 0, g, hp["momentum"] * buf + (1 - hp["dampening"]) * g)
                d = g + hp["momentum"] * buf if nesterov else buf
                # A tensor momentum of 0 (a sweep member without momentum) must be
                # plain SGD as in torch, where dampening then has no effect.
                g = torch.where(hp["momentum"] == 0, g, d)
            return p - hp["lr"] * g, buf

        bufs = slots.get("momentum_buffer", tree_map(lambda p: p, params))
        out = tree_map(_no_0d(leaf), grads, params, bufs)
        new_p, new_b = _unzip(out, params, 2)
        return new_p, ({"momentum_buffer": new_b} if use_momentum else {})

    hypers = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay}
    fixed = frozenset(k for k in ("momentum",) if _is_zero(hypers[k]))
    return _make("sgd", hypers, ("momentum_buffer",) if use_momentum else (), step, schedule, fixed)


def _adam_scalars(hp: dict, t: Any, sqrt: Callable, use_wd: bool) -> dict:
    """Adam's per-update coefficients from the hyperparameters ``hp`` at update ``t = count + 1``."""
    # From 0-d float64 tensors (t as float64, sqrt = torch.sqrt) or from the same values as Python floats (math.sqrt):
    # both are IEEE float64 arithmetic, op for op, so they agree to the bit (tests/test_optim_foreach.py).
    # torch.optim.Adam's p -= s * m / (sqrt(v) / c + eps), with s = lr / (1 - b1^t) and c = sqrt(1 - b2^t), rewritten
    # as p += (-s c) * m / (sqrt(v) + eps c), which is one addcdiv, and v = b2 v + (1 - b2) g^2 as lerp(v, g^2, 1 - b2):
    # equal up to round-off, and 6 passes over the parameters (8 off the CPU) instead of 11.
    bc2_sqrt = sqrt(1 - hp["b2"] ** t)
    return {
        **({"decay": 1 - hp["lr"] * hp["weight_decay"], "wd": hp["weight_decay"]} if use_wd else {}),
        "w1": 1 - hp["b1"],
        "w2": 1 - hp["b2"],
        "eps_c": hp["eps"] * bc2_sqrt,
        "neg_step_c": -(hp["lr"] / (1 - hp["b1"] ** t) * bc2_sqrt),
    }


def _adam_foreach(flat: tuple, hp: dict, count: Tensor, use_wd: bool, decoupled: bool) -> tuple[PyTree, dict]:
    """One Adam update of a whole leaf list (``flat`` from :func:`_foreach_lists`) as foreach calls: the per-leaf
    path's arithmetic op for op (bit-identical: tests/test_optim_foreach.py). The new parameters and slots."""
    # In-place ops touch only fresh temporaries, never an input.
    treedef, p, (g, m, v) = flat
    n, dtype = len(p), p[0].dtype
    host = p[0].device.type == "cpu" and dtype in (torch.float32, torch.float64)
    if host:
        # Reading a CPU scalar costs no synchronisation: the coefficients as Python floats save ~30 tensor
        # dispatches per update, and make the last pass one addcdiv (whose value must be a number). Each op casts
        # a float to the parameters' dtype as the tensor path does below.
        c = _adam_scalars({k: x.item() for k, x in hp.items()}, count.item() + 1.0, math.sqrt, use_wd)
        w = lambda x: x
    else:
        # Other dtypes would cast a number to float32 (their op math), not to their own dtype as the per-leaf path
        # does; CUDA would synchronise.
        c = {k: x.to(dtype) for k, x in _adam_scalars(hp, (count + 1).to(torch.float64), torch.sqrt, use_wd).items()}
        w = lambda x: [x] * n
    if use_wd and decoupled:
        p = torch._foreach_mul(p, c["decay"])
    elif use_wd:
        g = torch._foreach_add(g, torch._foreach_mul(p, c["wd"]))
    m = torch._foreach_lerp(m, g, w(c["w1"]))
    v = torch._foreach_lerp(v, torch._foreach_mul(g, g), w(c["w2"]))
    denom = torch._foreach_sqrt(v)
    torch._foreach_add_(denom, c["eps_c"])
    if host:
        # addcdiv computes p + (value * m) / denom, as the per-leaf path does.
        new_p = torch._foreach_addcdiv(p, m, denom, c["neg_step_c"])
    else:
        upd = torch._foreach_mul(m, c["neg_step_c"])
        torch._foreach_div_(upd, denom)
        new_p = torch._foreach_add(p, upd)
    unflat = lambda xs: optree.tree_unflatten(treedef, xs)
    return unflat(new_p), {"mu": unflat(m), "nu": unflat(v)}


def _adam_like(name: str, lr, b1, b2, eps, weight_decay, decoupled: bool, schedule) -> Optimizer:
    check_range("lr", lr, Range(0.0))
    check_range("beta1", b1, Range(0.0, 1.0, high_open=True))
    check_range("beta2", b2, Range(0.0, 1.0, high_open=True))
    check_range("eps", eps, Range(0.0))
    check_range("weight_decay", weight_decay, Range(0.0))
    use_wd = not _is_zero(weight_decay)

    def step(grads, params, slots, hp, count):
        flat = _foreach_lists(params, (grads, slots["mu"], slots["nu"]), hp)
        if flat is not None:
            return _adam_foreach(flat, hp, count, use_wd, decoupled)
        sc = _adam_scalars(hp, (count + 1).to(torch.float64), torch.sqrt, use_wd)
        if torch.compiler.is_compiling():
            sc = _computed_once(sc)

        def leaf(g, p, m, v):
            # Scalars are derived in float64, then cast to the parameters' dtype once:
            # the cast a float64 0-d operand would get inside each op anyway.
            c = {k: x.to(p.dtype) for k, x in sc.items()}
            if use_wd and decoupled:
                p = p * c["decay"]
            elif use_wd:
                g = g + c["wd"] * p
            m = torch.lerp(m, g, c["w1"])
            v = torch.lerp(v, g * g, c["w2"])
            denom = torch.sqrt(v) + c["eps_c"]
            return p + (c["neg_step_c"] * m) / denom, m, v

        out = tree_map(_no_0d(leaf), grads, params, slots["mu"], slots["nu"])
        new_p, mu, nu = _unzip(out, params, 3)
        return new_p, {"mu": mu, "nu": nu}

    hypers = {"lr": lr, "b1": b1, "b2": b2, "eps": eps, "weight_decay": weight_decay}
    return _make(name, hypers, ("mu", "nu"), step, schedule, frozenset() if use_wd else frozenset({"weight_decay"}))


def adam(lr: Hyper = 2e-4, betas: tuple[Hyper, Hyper] = (0.5, 0.999), eps: Hyper = 1e-8, weight_decay: Hyper = 0.0, *,
         schedule: Schedule | None = None) -> Optimizer:
    """Adam (Kingma & Ba, 2015) as ``torch.optim.Adam`` (L2 weight decay added to
    the gradient). Defaults are the DCGAN setting, betas (0.5, 0.999)."""
    return _adam_like("adam", lr, betas[0], betas[1], eps, weight_decay, False, schedule)


def adamw(lr: Hyper = 2e-4, betas: tuple[Hyper, Hyper] = (0.5, 0.999), eps: Hyper = 1e-8, weight_decay: Hyper = 1e-2, *,
          schedule: Schedule | None = None) -> Optimizer:
    """AdamW (Loshchilov & Hutter, 2019) as ``torch.optim.AdamW``: decoupled decay
    ``p *= 1 - lr * weight_decay`` before the Adam step."""
    return _adam_like("adamw", lr, betas[0], betas[1], eps, weight_decay, True, schedule)


def rmsprop(lr: Hyper = 5e-5, alpha: Hyper = 0.99, eps: Hyper = 1e-8, weight_decay: Hyper = 0.0, momentum: Hyper = 0.0,
            *, centered: bool = False, schedule: Schedule | None = None) -> Optimizer:
    """RMSprop as ``torch.optim.RMSprop``. Default lr 5e-5 is WGAN's (Arjovsky et al.)."""
    check_range("lr", lr, Range(0.0))
    check_range("alpha", alpha, Range(0.0, 1.0))
    check_range("eps", eps, Range(0.0))
    check_range("weight_decay", weight_decay, Range(0.0))
    check_range("momentum", momentum, Range(0.0, 1.0))
    use_momentum = isinstance(momentum, Tensor) or momentum != 0
    slots = ("square_avg",) + (("grad_avg",) if centered else ()) + (("momentum_buffer",) if use_momentum else ())

    def step(grads, params, st, hp, count):
        def leaf(g, p, sq, ga, buf):
            g = g + hp["weight_decay"] * p
            sq = sq * hp["alpha"] + (1 - hp["alpha"]) * g * g
            if centered:
                ga = torch.lerp(ga, g, (1 - hp["alpha"]).to(ga.dtype))
                avg = torch.sqrt(sq - ga * ga) + hp["eps"]
            else:
                avg = torch.sqrt(sq) + hp["eps"]
            if use_momentum:
                buf = buf * hp["momentum"] + g / avg
                p = p - hp["lr"] * buf
            else:
                p = p - hp["lr"] * (g / avg)
            return p, sq, ga, buf

        ga = st.get("grad_avg", params)
        buf = st.get("momentum_buffer", params)
        out = tree_map(_no_0d(leaf), grads, params, st["square_avg"], ga, buf)
        new_p, sq, ga2, buf2 = _unzip(out, params, 4)
        new = {"square_avg": sq}
        if centered:
            new["grad_avg"] = ga2
        if use_momentum:
            new["momentum_buffer"] = buf2
        return new_p, new

    hypers = {"lr": lr, "alpha": alpha, "eps": eps, "weight_decay": weight_decay, "momentum": momentum}
    return _make("rmsprop", hypers, slots, step, schedule, frozenset(k for k in ("momentum",) if _is_zero(momentum)))


def clip_by_global_norm(opt: Optimizer, max_norm: Hyper) -> Optimizer:
    """``opt`` applied to gradients rescaled so their global norm is at most
    ``max_norm`` (``torch.nn.utils.clip_grad_norm_``'s rule: scale by
    ``min(1, max_norm / (norm + 1e-6))``)."""
    check_range("max_norm", max_norm, Range(0.0, low_open=True))

    def init(params):
        state = opt.init(params)
        like = _first_leaf(params)
        return {**state, "hp": {**state["hp"], "max_norm": _hp(max_norm, like)}}

    def update(grads, state, params):
        norm = global_norm(grads)
        scale = torch.clamp(state["hp"]["max_norm"] / (norm + 1e-6), max=1.0)
        grads = tree_map(lambda g: g * scale.to(g.dtype), grads)
        inner = {**state, "hp": {k: v for k, v in state["hp"].items() if k != "max_norm"}}
        new_params, new_state = opt.update(grads, inner, params)
        return new_params, {**new_state, "hp": state["hp"]}

    return Optimizer(init, update, opt.lr, f"clip({opt.name})", opt.fixed, opt.loss_scale)


def loss_scaled(opt: Optimizer, init_scale: float = 2.0**16, *, growth_interval: int = 2000,
                growth_factor: float = 2.0, backoff_factor: float = 0.5) -> Optimizer:
    """Dynamic loss scaling for fp16 training, as a pure wrapper (``torch.amp.GradScaler``'s rule).

    The state gains ``loss_scale`` (float32) and ``good_steps`` (int64). The
    optimizer declares it (``Optimizer.loss_scale``), and ``GAN`` multiplies the
    loss by it before differentiating, so small fp16 gradients do not flush to
    zero; ``update`` divides the gradients by it again. If any gradient is
    non-finite the update is skipped (parameters and inner state kept) and the
    scale is multiplied by ``backoff_factor``; after ``growth_interval``
    finite updates in a row it is multiplied by ``growth_factor``. All of it
    is ``torch.where``: no host sync, valid under vmap and compile.
    """
    check_range("init_scale", init_scale, Range(0.0, low_open=True))
    check_range("growth_factor", growth_factor, Range(1.0))
    check_range("backoff_factor", backoff_factor, Range(0.0, 1.0, low_open=True))
    if growth_interval < 1:
        raise ValueError(f"growth_interval must be >= 1, got {growth_interval}")

    def init(params):
        state = opt.init(params)
        like = _first_leaf(params)
        device = like.device if like is not None else None
        return {**state, "loss_scale": torch.tensor(float(init_scale), dtype=torch.float32, device=device),
                "good_steps": torch.zeros((), dtype=torch.int64, device=device)}

    def update(grads, state, params):
        scale = state["loss_scale"]
        grads = tree_map(lambda g: g / scale.to(g.dtype), grads)
        finite = torch.stack([torch.isfinite(g).all() for g in optree.tree_leaves(grads)]).all()
        inner = {k: v for k, v in state.items() if k not in ("loss_scale", "good_steps")}
        # Non-finite gradients would poison the inner state: zero them, then keep the old values.
        safe = tree_map(lambda g: torch.where(finite, g, torch.zeros_like(g)), grads)
        new_params, new_inner = opt.update(safe, inner, params)
        new_params = tree_where(finite, new_params, params)
        new_inner = tree_where(finite, new_inner, inner)
        good = torch.where(finite, state["good_steps"] + 1, torch.zeros_like(state["good_steps"]))
        grow = good >= growth_interval
        new_scale = torch.where(finite, torch.where(grow, scale * growth_factor, scale), scale * backoff_factor)
        good = torch.where(grow, torch.zeros_like(good), good)
        return new_params, {**new_inner, "loss_scale": new_scale, "good_steps": good}

    return Optimizer(init, update, opt.lr, f"loss_scaled({opt.name})", opt.fixed, lambda state: state["loss_scale"])


_BUILDERS: dict[str, Callable[..., Optimizer]] = {"sgd": sgd, "adam": adam, "adamw": adamw, "rmsprop": rmsprop}


def get(name: str | Optimizer, **kwargs: Any) -> Optimizer:
    """An optimizer by name (``sgd``, ``adam``, ``adamw``, ``rmsprop``) or itself."""
    if isinstance(name, Optimizer):
        return name
    if name not in _BUILDERS:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {sorted(_BUILDERS)}")
    return _BUILDERS[name](**kwargs)
