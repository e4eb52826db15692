"""The Part protocol: one piece of a GAN step as pure functions with explicit state."""
from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple

import optree
import torch
from torch import Tensor

from ..functional import Params
from ..validate import UNBOUNDED, Range, check_range

__all__ = ["Part", "Hyper", "Ctx", "InitCtx", "Draw", "DTerm", "GTerm", "PartError", "check_part", "check_like"]

PyTree = Any


class Hyper(NamedTuple):
    """A part's hyperparameter: its default ``value`` and its valid ``range``.
    It lives in ``TrainState.hparams`` under its key, one value per member."""

    value: float | Tensor
    range: Range = UNBOUNDED


class Ctx(NamedTuple):
    """What every hook gets about its own part: its ``state`` (from ``init``),
    its hyperparameters ``hp`` (0-d tensors by key), its ``noise`` for this
    update (the dict its noise hook drew, one update's slice), ``step``,
    the number of completed train steps (a 0-d tensor), and in ``after_d`` /
    ``after_g`` its own ``aux``: what its ``d_term`` / ``g_term`` returned on
    this update (``None`` elsewhere), so no part looks itself up by name."""

    state: PyTree
    hp: dict[str, Tensor]
    noise: dict[str, Tensor]
    step: Tensor
    aux: Any = None


class InitCtx(NamedTuple):
    """What ``init`` gets: the initial parameters, the shapes, and a
    ``torch.Generator`` seeded with the run's seed (the only randomness allowed)."""

    g_params: Params
    d_params: Params
    sample_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    generator: torch.Generator
    dtype: torch.dtype
    device: torch.device


class Draw(NamedTuple):
    """Draws one part's noise for ``n`` updates of batch ``B``: every tensor gets
    the leading shape ``[n, B]``. Use ``normal``/``uniform``/``randint``, never
    the global RNG, so a seed determines every draw."""

    generator: torch.Generator
    n: int
    batch_size: int
    sample_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    dtype: torch.dtype

    def normal(self, *shape: int) -> Tensor:
        return torch.randn(self.n, self.batch_size, *shape, generator=self.generator, dtype=self.dtype,
                           device=self.generator.device)

    def uniform(self, *shape: int) -> Tensor:
        return torch.rand(self.n, self.batch_size, *shape, generator=self.generator, dtype=self.dtype,
                          device=self.generator.device)

    def randint(self, high: int, *shape: int) -> Tensor:
        return torch.randint(high, (self.n, self.batch_size, *shape), generator=self.generator,
                             device=self.generator.device)


class DTerm(NamedTuple):
    """A D loss term's inputs: ``d_fn(x) -> D's scores`` (differentiable in D's
    parameters and in ``x``), the real and fake batches as D saw them, and D's
    outputs on them. In a conditional setup ``d_fn`` runs D with the real
    batch's labels and ``d_fn_fake`` with the fake batch's (both fixed: only
    the images are inputs); unconditionally they are the same function.
    ``g_fn(z) -> G(z)`` runs G (its current weights, constants here: a D update
    never differentiates G) on latents ``[B, *latent]`` with the fake batch's
    labels, for a D term that needs fresh fakes (zCR)."""

    d_fn: Callable[[Tensor], Tensor]
    real: Tensor
    fake: Tensor
    d_real: Tensor
    d_fake: Tensor
    d_fn_fake: Callable[[Tensor], Tensor] | None = None
    g_fn: Callable[[Tensor], Tensor] | None = None


class GTerm(NamedTuple):
    """A G loss term's inputs: the latents, G's output (differentiable in G's
    parameters), the fakes as D saw them and D's output on them; ``g_fn(z) ->
    G(z)`` runs G again on other latents (differentiable in G's parameters:
    path length, zCR) and ``d_fn(x) -> D's scores`` runs D (its weights
    constant) on other inputs."""

    z: Tensor
    fake: Tensor
    d_input: Tensor
    d_fake: Tensor
    g_fn: Callable[[Tensor], Tensor] | None = None
    d_fn: Callable[[Tensor], Tensor] | None = None


class Part(NamedTuple):
    """One piece of a GAN step. Every hook is optional (``None``: no-op); all are
    pure functions of their arguments. ``ctx`` is the part's :class:`Ctx`.

    - ``hparams``: ``{key: Hyper | float}``, stored in ``TrainState.hparams``.
    - ``init(InitCtx) -> state``, kept in ``TrainState.parts[name]``.
    - ``noise_d(Draw) -> {key: [n_critic, B, ...]}``, ``noise_g(Draw) -> {...}``:
      the random tensors the part needs, drawn in the parts' order.
    - ``d_weights(d_params, ctx) -> d_params``: the weights D runs with (on both
      D and G updates; spectral normalisation).
    - ``fake_for_d(fake, ctx) -> fake``: the fake batch a D update uses (replay).
    - ``d_inputs(real, fake, ctx) -> (real, fake)``: what D sees on a D update
      (instance noise, augmentation); shapes must be kept.
    - ``d_term(DTerm, ctx) -> (loss, aux)``: added to D's loss; ``aux`` (a dict
      of batch-mean tensors) comes back in ``after_d``. Its optional entry
      ``"metrics"`` (``{key: 0-d tensor}``) is reported as the step metric
      ``"<name>/<key>"``, averaged over the step's updates ignoring NaN (a NaN
      says "not computed on this update", as a lazy penalty's term).
    - ``skip_d(aux: DAux, ctx) -> bool tensor``: skip this D update (the
      optimizer step and every ``after_d``); buffers still advance.
    - ``after_d(d_params, ctx, aux: DAux) -> (d_params, state)``: after D's
      optimizer step (weight clipping, power iteration, replay write).
    - ``g_inputs(fake, ctx) -> fake``: what D sees on a G update (augmentation).
    - ``g_term(GTerm, ctx) -> (loss, aux)``: added to G's loss (``aux["metrics"]``
      as for ``d_term``).
    - ``skip_g(d_aux: DAux, ctx) -> bool tensor``: skip this G update, given the
      last D update's aux.
    - ``after_g(g_params, ctx, aux: GAux) -> (g_params, state)``: after G's
      optimizer step (EMA).
    - ``sample_weights(g_params, ctx) -> g_params``: the weights ``GAN.sample``
      uses by default (EMA).
    - ``check(info) -> None``: raise at ``GAN`` construction if the part cannot
      work with this setup; ``info`` has ``d_batch_stats`` and ``sample_shape``.
    - ``scalars(ctx) -> {key: 0-d tensor}``: the part's state a person watches
      (ADA's ``p``), read from ``ctx.state`` after each step and reported as the
      step metric ``"<name>/<key>"``: the loop logs it like every metric, to the
      console, ``metrics.json`` and TensorBoard, without knowing the part.
    - ``g_latents(z, ctx) -> z``: the latents G runs on in training (D's fakes
      and G's update; never ``GAN.sample``), with the same batch size; the
      trailing size may change when the generator takes both (style mixing).
    """

    name: str
    hparams: Mapping[str, Hyper | float] = {}
    init: Callable[[InitCtx], PyTree] | None = None
    noise_d: Callable[[Draw], dict[str, Tensor]] | None = None
    noise_g: Callable[[Draw], dict[str, Tensor]] | None = None
    d_weights: Callable[[Params, Ctx], Params] | None = None
    fake_for_d: Callable[[Tensor, Ctx], Tensor] | None = None
    d_inputs: Callable[[Tensor, Tensor, Ctx], tuple[Tensor, Tensor]] | None = None
    d_term: Callable[[DTerm, Ctx], tuple[Tensor, dict]] | None = None
    skip_d: Callable[[Any, Ctx], Tensor] | None = None
    after_d: Callable[[Params, Ctx, Any], tuple[Params, PyTree]] | None = None
    g_inputs: Callable[[Tensor, Ctx], Tensor] | None = None
    g_term: Callable[[GTerm, Ctx], tuple[Tensor, dict]] | None = None
    skip_g: Callable[[Any, Ctx], Tensor] | None = None
    after_g: Callable[[Params, Ctx, Any], tuple[Params, PyTree]] | None = None
    sample_weights: Callable[[Params, Ctx], Params] | None = None
    check: Callable[[Any], None] | None = None
    scalars: Callable[[Ctx], dict[str, Tensor]] | None = None
    g_latents: Callable[[Tensor, Ctx], Tensor] | None = None

    def defaults(self) -> dict[str, Hyper]:
        """``hparams`` with every value as a :class:`Hyper`."""
        return {k: v if isinstance(v, Hyper) else Hyper(v) for k, v in self.hparams.items()}


class PartError(ValueError):
    """A part broke the protocol (a hook's output has the wrong structure or shape)."""


_HOOKS = tuple(f for f in Part._fields if f not in ("name", "hparams"))


def check_part(part: Any) -> Part:
    """``part`` itself if it is a well-formed :class:`Part`, else ``TypeError``/``ValueError``."""
    if not isinstance(part, Part):
        raise TypeError(f"a part must be a ganfn.parts.Part, got {type(part).__name__}")
    if not isinstance(part.name, str) or not part.name.isidentifier():
        raise ValueError(f"a part's name must be an identifier (it keys the state and the noise), got {part.name!r}")
    for f in _HOOKS:
        h = getattr(part, f)
        if h is not None and not callable(h):
            raise TypeError(f"part {part.name!r}: {f} must be a function or None, got {type(h).__name__}")
    for k, v in part.defaults().items():
        check_range(k, v.value, v.range)
    return part


def check_like(part: str, hook: str, got: PyTree, want: PyTree, *, dtype: bool = True) -> None:
    """Raise :class:`PartError` naming ``part`` and ``hook`` unless ``got`` has
    ``want``'s tree structure and every leaf's shape (and dtype, with ``dtype``)
    (metadata only: valid under vmap and compile)."""
    try:
        gl, gdef = optree.tree_flatten(got, none_is_leaf=False)
        wl, wdef = optree.tree_flatten(want, none_is_leaf=False)
    except Exception as e:  # re-raised naming the part
        raise PartError(f"part {part!r}: {hook} returned something that is not a pytree of tensors: {e}") from None
    # torch 2.11's Dynamo cannot trace a treespec comparison: under compile the
    # structure is checked by leaf count (the eager and vmapped paths check it whole).
    same = len(gl) == len(wl) if torch.compiler.is_compiling() else gdef == wdef
    if not same:
        raise PartError(f"part {part!r}: {hook} returned a tree of structure {gdef}, expected {wdef}")
    for i, (g, w) in enumerate(zip(gl, wl, strict=True)):
        if not isinstance(g, Tensor) or g.shape != w.shape or (dtype and g.dtype != w.dtype):
            what = f"shape {tuple(g.shape)} {g.dtype}" if isinstance(g, Tensor) else type(g).__name__
            raise PartError(f"part {part!r}: {hook} returned leaf {i} with {what}, expected shape {tuple(w.shape)} "
                            f"{w.dtype}")
