"""Many GANs as one program: stacked training states and a vmapped train step.

An *ensemble* is a :class:`~ganfn.TrainState` whose every leaf has a leading
member axis of size S. Member i may differ from the others in its seed (its
initial parameters and its noise) and in any per-state hyperparameter
(``lr_d``, ``b1_g``, ``gp_weight``, ``real_label``, ``loss_mix``, ...): stacking
states with different values is a sweep. One call of the step made by
:func:`make_step` updates all S members::

    gan = ganfn.GAN(G, D, latent_dim=64, loss="wasserstein", parts=ganfn.recipes.wgan_gp(10.0), n_critic=5)
    seeds = list(range(8))
    state = ensemble.init_many(gan, seeds, [{"lr_d": lr} for lr in lrs])
    rngs = ensemble.rngs(seeds)
    step = ensemble.make_step(gan, compile=True)
    for real in batches:                        # shared batch: [n_critic, B, ...]
        noise = ensemble.draw_noise_many(gan, rngs, B)
        state, metrics = step(state, real, noise)   # metrics: [S] tensors
    members = ganfn.unstack(state)

Member i draws its noise from its own ``torch.Generator`` (outside the vmapped
region), exactly as a single run seeded with ``seeds[i]`` does, so member i's
trajectory equals that single run's (``torch.func.vmap``'s own
``randomness="different"`` would make member i's draws depend on S).

Divergence isolation: with ``isolate=True`` a member whose losses or gradient
norms turn non-finite keeps its previous state (a ``torch.where`` per leaf, no
host synchronisation), and ``state.diverged_at[i]`` records the step at which it
diverged; it stays frozen from then on. vmap computes each member separately,
so a NaN in one member never reaches the others' numbers.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import optree
import torch
from torch import Tensor

from . import compiling
from .gan import GAN
from .labels import check_labels
from .state import Noise, TrainState
from .step import freeze, freeze_diverged, frozen
from .steps import compile_disabled, with_fallback

__all__ = ["stack", "unstack", "init_many", "rngs", "draw_noise_many", "make_step", "num_members", "frozen", "freeze",
           "Step"]

Step = Callable[[TrainState, Tensor, Noise], tuple[TrainState, dict[str, Tensor]]]


def stack(states: Sequence[Any]) -> Any:
    """One pytree whose leaves are the members' leaves stacked on a new axis 0.

    ``states`` must share one structure (same GAN setup, same hyperparameter
    keys). Works for :class:`TrainState`, noise dicts and metric dicts.
    """
    states = list(states)
    if not states:
        raise ValueError("stack needs at least one state")
    try:
        return optree.tree_map(lambda *xs: torch.stack(xs), *states, none_is_leaf=False)
    except ValueError as e:
        raise ValueError("stack: the states do not share one pytree structure (built by different GAN setups or "
                         f"with different hyperparameter keys?): {e}") from e


def unstack(stacked: Any) -> list[Any]:
    """The inverse of :func:`stack`: a list of S pytrees, member i's leaves ``x[i]``."""
    flat, treedef = optree.tree_flatten(stacked, none_is_leaf=False)
    if not flat:
        raise ValueError("unstack: the pytree has no tensors")
    n = flat[0].shape[0] if flat[0].dim() else None
    if n is None or any(x.dim() == 0 or x.shape[0] != n for x in flat):
        raise ValueError("unstack: every leaf needs the same leading (member) axis; got shapes "
                         f"{sorted({tuple(x.shape) for x in flat})[:4]}")
    return [optree.tree_unflatten(treedef, [x[i] for x in flat]) for i in range(n)]


def num_members(stacked: TrainState) -> int:
    """S, the size of the member axis of a stacked state."""
    if stacked.step.dim() != 1:
        raise ValueError("expected a stacked state (state.step of shape [S]), got state.step of shape "
                         f"{tuple(stacked.step.shape)}: use ganfn.stack or ensemble.init_many")
    return int(stacked.step.shape[0])


def init_many(gan: GAN, seeds: Sequence[int], hparams: Sequence[dict[str, Any]] | None = None) -> TrainState:
    """The stacked state of ``len(seeds)`` members: member i is
    ``gan.init(seeds[i], **hparams[i])``.

    ``hparams`` (one dict per member, e.g. from :func:`ganfn.sweep.grid`) must
    give every member the same keys; a key missing for a member gets the GAN's
    default for that member anyway, since every state carries every key.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("init_many needs at least one seed")
    if hparams is None:
        hparams = [{}] * len(seeds)
    hparams = list(hparams)
    if len(hparams) != len(seeds):
        raise ValueError(f"got {len(seeds)} seeds but {len(hparams)} hyperparameter dicts: give one dict per member")
    return stack([gan.init(s, **hp) for s, hp in zip(seeds, hparams, strict=True)])


def rngs(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator(device).manual_seed(s)`` per seed: the generator a
    single run with seed ``s`` draws its noise from."""
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def draw_noise_many(gan: GAN, rngs: Sequence[torch.Generator], batch_size: int, *, dtype: torch.dtype = torch.float32,
                    device: torch.device | str | None = None) -> Noise:
    """Stacked noise for one ensemble step: leaves ``[S, ...]``; member i's
    slice is exactly ``gan.draw_noise(rngs[i], batch_size)``."""
    if not rngs:
        raise ValueError("draw_noise_many needs at least one generator")
    return stack([gan.draw_noise(r, batch_size, dtype=dtype, device=device) for r in rngs])


def _isolated(gan: GAN) -> Callable:
    """``gan.train_step`` for one member, with a diverged member frozen in-graph
    (``ganfn.step.freeze_diverged``: no host sync, valid under vmap and compile)."""

    def step(state: TrainState, real: Tensor, noise: Noise):
        new, metrics = gan.train_step(state, real, noise)
        return freeze_diverged(state, new, metrics)

    return step


def _plain(gan: GAN) -> Callable:
    def step(state: TrainState, real: Tensor, noise: Noise):
        new, metrics = gan.train_step(state, real, noise)
        return new, {**metrics, "diverged": frozen(new)}

    return step


_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def make_step(gan: GAN, *, shared_data: bool = True, compile: bool | str = False, isolate: bool = True) -> Step:
    """A step ``(stacked_state, real, noise) -> (stacked_state, metrics)`` that
    runs ``gan.train_step`` for every member at once (``torch.func.vmap``).

    Args:
        gan: the setup shared by all members (n_critic, losses, networks).
        shared_data: ``real`` is one batch seen by every member (``[B, *sample]``,
            or ``[n_critic, B, *sample]``); otherwise each member has its own,
            with a leading member axis (``[S, B, ...]`` / ``[S, n_critic, B, ...]``).
        compile: ``True`` compiles the vmapped step with ``torch.compile(...,
            fullgraph=True)`` (compile outermost, vmap inside); a string picks a
            compile mode (``"max-autotune"``, ...) or backend (``"aot_eager"``, ...).
            If compilation fails, the step warns once, naming the error, and runs
            eagerly from then on. The environment variable ``GANFN_NO_COMPILE=1``
            turns compilation off everywhere.
        isolate: freeze members whose losses or gradient norms become non-finite
            (see the module docstring); ``False`` skips the check.

    Returns the step. ``noise`` is :func:`draw_noise_many`'s output; metrics are
    ``gan.train_step``'s metrics as ``[S]`` tensors plus ``diverged`` (bool [S]).
    """
    if not isinstance(gan, GAN):
        raise TypeError(f"make_step needs a ganfn.GAN, got {type(gan).__name__}")
    member = _isolated(gan) if isolate else _plain(gan)
    vmapped = torch.func.vmap(member, in_dims=(0, None if shared_data else 0, 0))
    check = functools.partial(_check_inputs, gan, shared_data)
    if not compile or compile_disabled():
        plain = torch.func.vmap(gan.train_step, in_dims=(0, None if shared_data else 0, 0)) if isolate else None

        def eager_step(state, real, noise):
            check(state, real, noise)
            if plain is not None and state.step.device.type == "cpu":
                # Eager on CPU: the same freeze outside vmap, its leaf-wise select
                # only when some member is unhealthy (saves a copy of the state per step).
                new, metrics = plain(state, real, noise)
                return freeze_diverged(state, new, metrics, lazy=True)
            return vmapped(state, real, noise)

        return eager_step

    kw: dict[str, Any] = {"fullgraph": True}
    if isinstance(compile, str):
        kw["mode" if compile in _COMPILE_MODES else "backend"] = compile
    return with_fallback(compiling.compile(lambda s, r, n: vmapped(s, r, n), **kw), vmapped, "the vmapped step", check)


def _check_inputs(gan: GAN, shared_data: bool, state: TrainState, real: Tensor, noise: Noise) -> None:
    """Clear errors for a stacked step's inputs, checked once outside vmap."""
    want_real_dim = 1 + len(gan.sample_shape) + (gan.n_critic > 1) + (not shared_data)
    if not isinstance(state, TrainState):
        raise TypeError("state must be a stacked ganfn.TrainState (ganfn.stack / ensemble.init_many), got "
                        f"{type(state).__name__}")
    S = num_members(state)
    real, labels = gan.labels.split(real)
    if not isinstance(real, Tensor) or real.dim() != want_real_dim:
        form = ("" if shared_data else "S, ") + ("n_critic, " if gan.n_critic > 1 else "") + "B, *sample"
        got = tuple(real.shape) if isinstance(real, Tensor) else type(real).__name__
        raise ValueError(f"real must have shape [{form}] (shared_data={shared_data}, n_critic={gan.n_critic}), got "
                         f"{got}")
    for y in labels:  # values checked here, once, outside vmap
        assert gan.num_classes is not None  # labels come with classes
        check_labels(y, gan.num_classes, tuple(real.shape[: want_real_dim - len(gan.sample_shape)]), "real labels")
    if not shared_data and real.shape[0] != S:
        raise ValueError(f"per-member real data has {real.shape[0]} members on axis 0 but the state has {S}")
    z = noise.d.z if isinstance(noise, Noise) else None
    if z is None or z.dim() < 2 or z.shape[0] != S:
        raise ValueError(f"noise must be stacked for {S} members (ensemble.draw_noise_many), got d-latents of shape "
                         f"{None if z is None else tuple(z.shape)}")
