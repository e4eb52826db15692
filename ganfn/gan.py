"""The GAN specification and its pure training steps.

A :class:`GAN` describes a training setup (networks, loss, optimizers, update
counts and the parts the step is built from) and holds no tensor that changes
during training. The state is a :class:`~ganfn.state.TrainState` pytree; every
method is a pure function of its arguments::

    gan = GAN(G, D, latent_dim=64, loss="hinge", parts=[penalties.r1(1.0), parts.ema(0.999)])
    state = gan.init(seed=0)
    rng = torch.Generator().manual_seed(0)
    for real in batches:
        noise = gan.draw_noise(rng, real.shape[-len(gan.sample_shape) - 1])
        state, metrics = gan.train_step(state, real, noise)

One ``train_step`` is ``n_critic`` D updates followed by ``n_gen`` G updates
(:func:`ganfn.step.run`). With ``n_critic > 1`` the real data has a leading axis,
``[n_critic, B, *sample]``: D update ``i`` sees ``real[i]``. With ``n_critic == 1``
it is a plain ``[B, *sample]`` batch.

Two differentiation paths give the same numbers: outside any ``torch.func``
transform and outside ``torch.compile`` gradients come from
``torch.autograd.grad`` on fresh leaf copies of the parameters (pure: it never
touches ``.grad``, and is cheaper per call on CPU); under ``vmap``/``grad``/
``compile`` they come from ``torch.func.grad_and_value``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn

from . import diagnose
from . import losses as _losses
from . import noise as _noise
from . import optim as _optim
from . import penalties as _penalties
from . import sampling as _sampling
from . import schedules as _schedules
from . import step as _step
from .accumulation import accumulate, tree_mean
from .functional import Params, extract, fresh_copies, has_batch_stats, make_apply
from .gan_parts import (
    PartInfo,
    check_counts,
    check_optimizer,
    check_spectral_norm,
    latent_shape_of,
    loss_hparams,
    refuse_removed,
    validate_parts,
)
from .grads import value_and_grad
from .hparams import aliases, apply_overrides, expand, make_hparams
from .inputs import check_batch, check_compatible, check_step_inputs, how_called
from .labels import Labelling, check_setup, class_labels
from .parts.base import Ctx, DTerm, GTerm, InitCtx, Part, PartError, check_like
from .parts.table import Hooks, hook_table
from .state import DAux, GAux, NetState, Noise, TrainState, UpdateNoise
from .tree import in_transform, tree_map
from .tree import replace as _replace

__all__ = ["GAN", "TrainState", "Noise", "UpdateNoise", "in_transform"]


class GAN:
    """A GAN training setup; all methods are pure functions of their arguments.

    Args:
        generator, discriminator: the user's ``nn.Module``s, used only as
            templates (never modified). D returns one score per sample
            ([B] or [B, 1]; logits for the BCE losses).
        latent_dim: an int, or the shape of one latent sample (e.g. ``(128, 1, 1)``).
        loss: a ``ganfn.losses`` name or :class:`~ganfn.losses.LossPair`.
        g_optimizer, d_optimizer: ``ganfn.optim`` optimizers (default Adam 2e-4,
            betas (0.5, 0.999)); different learning rates give TTUR. Wrap them
            in ``optim.loss_scaled`` for fp16 training.
        n_critic, n_gen: D updates and G updates per ``train_step``.
        accumulation_steps: D and G gradients are *averaged* over this many
            micro-batches of each batch (equal to one full-batch gradient for
            networks without batch statistics).
        parts: the :class:`ganfn.parts.Part` s the step is built from, run in
            the order given (see :mod:`ganfn.parts`; :mod:`ganfn.recipes` gives
            lists for known setups). A :class:`~ganfn.penalties.Penalty` is
            taken as its part (:func:`ganfn.penalties.as_part`).
        weight_init: ``fn(module, generator)`` applied after each submodule's
            ``reset_parameters()`` when ``init`` re-draws parameters per seed.
        num_classes: a class-conditional setup with this many classes: G is
            called as ``G(z, y)`` and D as ``D(x, y)`` with int64 labels ``y``
            [B]; the real batch is an ``(images, labels)`` pair; ``draw_noise``
            also draws the fake batches' labels and ``sample(state, z, y)``
            takes the classes to generate. Penalties differentiate with respect
            to the images only (labels fixed).
        class_probs: frequencies of the fake batches' labels (one per class,
            normalised; default uniform), e.g. the data set's class frequencies.

    A loss owns its targets (``losses.bce(real_label=0.9)`` is one-sided label
    smoothing; :func:`ganfn.losses.with_targets`). Every feature is a part:
    ``GAN`` has no short-hand options, and a removed one (``ema_decay=``,
    ``penalty=``, ...) raises a ``TypeError`` naming the part to use.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        latent_dim: int | Sequence[int],
        loss: str | _losses.LossPair = "non_saturating",
        g_optimizer: _optim.Optimizer | None = None,
        d_optimizer: _optim.Optimizer | None = None,
        parts: Sequence[Part | _penalties.Penalty] = (),
        n_critic: int = 1,
        n_gen: int = 1,
        accumulation_steps: int = 1,
        num_classes: int | None = None,
        class_probs: Sequence[float] | Tensor | None = None,
        weight_init: Callable[[nn.Module, torch.Generator], None] | None = None,
        **removed: Any,
    ) -> None:
        refuse_removed(removed)
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise TypeError("generator and discriminator must be torch.nn.Module instances")
        self.generator, self.discriminator = generator, discriminator
        self.latent_shape: tuple[int, ...] = latent_shape_of(latent_dim)
        self.loss = _losses.get(loss)
        self.labels: Labelling = class_labels(num_classes, class_probs)  # how G and D get labels (none, or classes)
        self.num_classes: int | None = self.labels.num_classes
        self.g_optimizer = check_optimizer("g_optimizer", g_optimizer or _optim.adam(2e-4, (0.5, 0.999)))
        self.d_optimizer = check_optimizer("d_optimizer", d_optimizer or _optim.adam(2e-4, (0.5, 0.999)))
        self.n_critic, self.n_gen, self.accumulation_steps = check_counts(
            n_critic=n_critic, n_gen=n_gen, accumulation_steps=accumulation_steps)
        loss_hp = loss_hparams(self.loss)
        self.weight_init = weight_init
        self.g_apply = make_apply(generator)
        self.d_apply = make_apply(discriminator)
        self._d_batch_stats = has_batch_stats(discriminator)
        self.parts: tuple[Part, ...] = validate_parts(parts, loss_hp, PartInfo(self._d_batch_stats, self.latent_shape))
        check_setup(self.labels, self.loss, self.parts)
        check_spectral_norm(discriminator, self.parts)
        # A scheduled hyperparameter is stored as its fields (ganfn.schedules) and evaluated at the step in _hp_at.
        self._hp, self._scheduled = expand({**loss_hp, **{k: h for p in self.parts for k, h in p.defaults().items()}})
        self._loss_keys: tuple[str, ...] = tuple(loss_hp)
        self.defaults: dict[str, float | Tensor] = {k: h.value for k, h in self._hp.items()}
        self.aliases: dict[str, str] = aliases(self._hp)
        self._sample_shape: tuple[int, ...] = self._probe_sample_shape()  # fixed at construction
        self.table: Hooks = hook_table(self.parts)  # built once, typed: the step calls hook functions directly
        self.gates_d, self.gates_g = bool(self.table.skip_d), bool(self.table.skip_g)
        self._ops = _step.ops(self)

    # -- construction -----------------------------------------------------------

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one generated sample (found at construction by running G on 2 latents)."""
        return self._sample_shape

    def _probe_sample_shape(self) -> tuple[int, ...]:
        p = next(self.generator.parameters(), None)
        z = torch.zeros(2, *self.latent_shape, device=p.device if p is not None else None,
                        dtype=p.dtype if p is not None else None)
        params, buffers = extract(self.generator)
        try:
            with torch.no_grad():
                out, _ = self.g_apply(params, buffers, z, *self.labels.probe(2, z.device), train=False)
        except Exception as e:  # re-raised naming the shapes and how G is called
            raise ValueError(f"the generator cannot take latents of shape {tuple(z.shape)} "
                             f"(latent_dim={self.latent_shape}) ({how_called(self.num_classes)}): {e}") from e
        return tuple(out.shape[1:])

    def hooks(self, hook: str) -> tuple[Part, ...]:
        """The parts that implement ``hook`` (a :class:`~ganfn.parts.Part` field such
        as ``"noise_d"`` or ``"sample_weights"``), in the order they run."""
        if hook not in Hooks._fields:
            raise KeyError(f"a part has no hook {hook!r}; the hooks are {list(Hooks._fields)}")
        return tuple(p for p, _ in getattr(self.table, hook))

    def part(self, name: str) -> Part:
        """The part called ``name`` (``KeyError`` naming the parts there are)."""
        for p in self.parts:
            if p.name == name:
                return p
        raise KeyError(f"this GAN has no part {name!r}; it has {[p.name for p in self.parts]}")

    def init(self, seed: int, *, reinit: bool = True, **hparams: float | Tensor) -> TrainState:
        """The initial training state for ``seed``.

        With ``reinit`` (default) parameters are re-drawn from ``seed`` (each
        submodule's ``reset_parameters()``, then ``weight_init``); otherwise the
        modules' current parameters are copied. ``hparams`` override
        hyperparameters for this state: any optimizer hyperparameter suffixed
        ``_g``/``_d`` (``lr_g``, ``b1_d``, ``weight_decay_d``, ...) and any key of
        ``gan.defaults`` (the loss's and the parts': ``real_label``,
        ``gp_weight``, ``ema_decay``, ...).

        Raises ``ValueError`` if D cannot take G's output, or on unknown or
        out-of-range hyperparameters.
        """
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        g_mod, d_mod = (fresh_copies((self.generator, self.discriminator), seed, self.weight_init) if reinit
                        else (self.generator, self.discriminator))
        g_params, g_buffers = extract(g_mod)
        d_params, d_buffers = extract(d_mod)
        check_compatible(self, g_params, g_buffers, d_params, d_buffers)
        like = next(iter(d_params.values()))
        g_opt, d_opt = self.g_optimizer.init(g_params), self.d_optimizer.init(d_params)
        hp = make_hparams(self._hp, like.device)
        hparams = {self.aliases.get(k, k): v for k, v in hparams.items()}
        apply_overrides(hparams, self._hp, hp, g_opt, d_opt, self.g_optimizer, self.d_optimizer)
        ctx = InitCtx(g_params, d_params, self.sample_shape, self.latent_shape, torch.Generator().manual_seed(seed),
                      like.dtype, like.device)
        return TrainState(
            step=torch.zeros((), dtype=torch.int64, device=like.device),
            g=NetState(g_params, g_buffers, g_opt),
            d=NetState(d_params, d_buffers, d_opt),
            parts={p.name: init(ctx) for p, init in self.table.init},
            hparams=hp,
            diverged_at=torch.full((), -1, dtype=torch.int64, device=like.device),
        )

    # -- randomness ---------------------------------------------------------------

    def draw_latents(self, rng: torch.Generator, n: int, *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> Tensor:
        """``n`` standard normal latents [n, *latent_shape] from ``rng``."""
        z = torch.randn(n, *self.latent_shape, generator=rng, dtype=dtype, device=rng.device)
        return z if device is None else z.to(device)

    def draw_noise(self, rng: torch.Generator, batch_size: int, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> Noise:
        """Every random tensor one ``train_step`` needs, drawn from ``rng`` only, in a
        fixed order (:func:`ganfn.noise.draw_noise`): a seed determines the noise exactly."""
        return _noise.draw_noise(self, rng, batch_size, dtype=dtype, device=device)

    # -- hooks --------------------------------------------------------------------------

    def ctx(self, p: Part, state: TrainState, noise: dict | None = None) -> Ctx:
        """The :class:`~ganfn.parts.Ctx` the step passes to part ``p``'s hooks: its
        state, its hyperparameters and ``noise[p.name]`` (one update's part noise,
        e.g. ``tree_index(noise.d, 0).parts``). For calling a hook by hand in a test."""
        return Ctx(state.parts.get(p.name), self._hp_at(state, p.hparams),
                   noise.get(p.name, {}) if noise else {}, state.step)

    def scalars(self, state: TrainState) -> dict[str, Tensor]:
        """The parts' declared scalars (:class:`~ganfn.parts.Part` ``scalars``)
        read from ``state``: ``{"<part>/<key>": 0-d tensor}`` (ADA's ``ada/p``).
        ``train_step`` reports them among its metrics, read after the step."""
        out = {}
        for p, fn in self.table.scalars:
            vals = fn(self.ctx(p, state))
            if not isinstance(vals, dict) or any(not isinstance(v, Tensor) or v.dim() != 0 for v in vals.values()):
                got = ({k: tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__ for k, v in vals.items()}
                       if isinstance(vals, dict) else type(vals).__name__)
                raise PartError(f"part {p.name!r}: scalars must return a dict of 0-d tensors, got {got}")
            out.update({f"{p.name}/{k}": v for k, v in vals.items()})
        return out

    def _hp_at(self, state: TrainState, keys: Any) -> dict[str, Tensor]:
        """The hyperparameters ``keys`` at ``state.step``: a schedule evaluated from this member's fields."""
        if not self._scheduled:
            return {k: state.hparams[k] for k in keys}
        return _schedules.resolve(state.hparams, self._scheduled, tuple(keys), state.step)

    def _g_latents(self, z: Tensor, state: TrainState, noise: dict) -> Tensor:
        for p, fn in self.table.g_latents:  # training only: GAN.sample never comes here
            out = fn(z, self.ctx(p, state, noise))
            if not isinstance(out, Tensor) or out.shape[0] != z.shape[0] or out.dtype != z.dtype:
                got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise PartError(f"part {p.name!r}: g_latents must return latents [{z.shape[0]}, ...] of dtype "
                                f"{z.dtype}, got {got}")
            z = out
        return z

    def _d_weights(self, d_params: Params, state: TrainState) -> Params:
        for p, fn in self.table.d_weights:
            out = fn(d_params, self.ctx(p, state))
            check_like(p.name, "d_weights", out, d_params)
            d_params = out
        return d_params

    def _after(self, hook: str, params: Params, state: TrainState, aux: Any) -> tuple[Params, dict]:
        parts = dict(state.parts)
        for p, fn in getattr(self.table, hook):
            ctx = self.ctx(p, state)._replace(aux=aux.parts.get(p.name))
            new_p, new_s = fn(params, ctx, aux)
            check_like(p.name, f"{hook} (parameters)", new_p, params)
            check_like(p.name, f"{hook} (state)", new_s, ctx.state)
            params = new_p
            if p.name in parts:
                parts[p.name] = new_s
        return params, parts

    # -- the D side -------------------------------------------------------------------

    def _d_loss(self, d_params: Params, state: TrainState, buffers: dict, real: Tensor, fake: Tensor, noise: dict,
                yr: tuple, yf: tuple):
        # yr / yf: the real and fake batches' labels, () for an unconditional GAN.
        p = self._d_weights(d_params, state)
        hp = self._hp_at(state, self._loss_keys)
        if self._d_batch_stats:
            out_r, buf = self.d_apply(p, buffers, real, *yr)
            out_f, buf = self.d_apply(p, buf, fake, *yf)
        else:
            # One forward over [real; fake] halves D's launches; valid only
            # because no layer of D mixes samples.
            both = tuple(torch.cat([a, b]) for a, b in zip(yr, yf, strict=True))
            out, buf = self.d_apply(p, buffers, torch.cat([real, fake]), *both)
            n = real.shape[0]
            out_r, out_f = tree_map(lambda o: o[:n], out), tree_map(lambda o: o[n:], out)
        lr_, lf_ = self.loss.d_parts(out_r, out_f, real_target=hp["real_label"], fake_target=hp["fake_label"],
                                     **self._loss_hp(hp), **self._loss_labels(yr, yf))
        pen, part_aux, scores = torch.zeros((), dtype=lr_.dtype, device=lr_.device), {}, self.loss.scores
        if self.table.d_term:
            term = DTerm(lambda x: scores(self.d_apply(p, buffers, x, *yr)[0]), real, fake,
                         scores(out_r), scores(out_f),
                         lambda x: scores(self.d_apply(p, buffers, x, *yf)[0]),
                         lambda z: self.g_apply(state.g.params, state.g.buffers, z, *yf)[0].detach())
            for pt, fn in self.table.d_term:
                val, a = fn(term, self.ctx(pt, state, noise))
                check_like(pt.name, "d_term (loss)", val, pen, dtype=False)
                pen, part_aux[pt.name] = pen + val, a
        acc_r, acc_f = diagnose.d_accuracy(self.loss, scores(out_r), scores(out_f), hp["real_label"], hp["fake_label"])
        aux = (buf, lr_.detach(), lf_.detach(), pen.detach(), acc_r.to(lr_.dtype), acc_f.to(lr_.dtype), part_aux)
        return lr_ + lf_ + pen, aux

    def _loss_hp(self, hp: dict) -> dict:
        return {k: hp[k] for k in self.loss.hparams}

    def _loss_labels(self, yr: tuple, yf: tuple) -> dict:
        # Only a loss that classifies (ACGAN) reads the labels; the others score D's outputs alone.
        return {"real_labels": yr[0], "fake_labels": yf[0]} if self.loss.takes_labels else {}

    def _d_batch(self, state: TrainState, real: Tensor, nd: UpdateNoise) -> tuple[Tensor, Tensor, Tensor, dict]:
        with torch.no_grad():
            fake, g_buf = self.g_apply(state.g.params, state.g.buffers, self._g_latents(nd.z, state, nd.parts),
                                       *nd.labels)
        fake = fake.detach()
        for p, fn in self.table.fake_for_d:
            out = fn(fake, self.ctx(p, state, nd.parts))
            check_like(p.name, "fake_for_d", out, fake)
            fake = out
        real_in, fake_in = real, fake
        for p, both in self.table.d_inputs:
            pair = both(real_in, fake_in, self.ctx(p, state, nd.parts))
            check_like(p.name, "d_inputs", pair, (real_in, fake_in))
            real_in, fake_in = pair
        return fake, real_in, fake_in, g_buf

    def d_grads(self, state: TrainState, real: Tensor, noise_d: UpdateNoise) -> tuple[Tensor, Params, DAux]:
        """D's loss and gradient for one D update (pure).

        Args:
            state: the training state.
            real: real samples [B, *sample] (conditional: an ``(images, labels [B])`` pair).
            noise_d: one D update's noise (``ganfn.tree_index(noise.d, i)``).

        Returns ``(loss, grads, aux)``: ``grads`` has exactly the keys of
        ``state.d.params``; ``aux`` is a :class:`~ganfn.state.DAux`. With
        ``accumulation_steps = k`` the batch is split into k micro-batches whose
        gradients are averaged.
        """
        real, yr = self.labels.split(real)
        check_batch(self, state, real, noise_d.z, "d")
        fake, real_in, fake_in, g_buf = self._d_batch(state, real, noise_d)
        scale = self.d_optimizer.loss_scale(state.d.opt) if self.d_optimizer.loss_scale is not None else None

        def one(cut: Callable, buf: dict) -> tuple[tuple, dict]:
            out = value_and_grad(self._d_loss, state.d.params, state, buf,
                                 *cut((real_in, fake_in, noise_d.parts, yr, noise_d.labels)),
                                 scale=scale)
            return out, out[2][0]

        outs, buf = accumulate(self.accumulation_steps, real.shape[0], one, state.d.buffers)
        loss, grads = tree_mean([o[0] for o in outs]), tree_mean([o[1] for o in outs])
        return loss, grads, DAux(buf, g_buf, fake, *tree_mean([o[2][1:] for o in outs]))

    def d_skip(self, state: TrainState, aux: DAux) -> Tensor:
        """Whether a part gates this D update off (a bool tensor), given ``d_grads``' aux."""
        flags = [fn(aux, self.ctx(p, state)) for p, fn in self.table.skip_d]
        return torch.stack(flags).any(0)

    def d_update(self, state: TrainState, grads: Params, aux: DAux) -> TrainState:
        """Apply D gradients (pure): the optimizer step, then every part's
        ``after_d`` (projections, power iteration, replay write) and the new buffers.
        Gates (``d_skip``) are applied by ``train_step``, not here."""
        new_p, new_opt = self.d_optimizer.update(grads, state.d.opt, state.d.params)
        new_p, parts = self._after("after_d", new_p, state, aux)
        return _replace(state, d=NetState(new_p, aux.d_buffers, new_opt),
                        g=NetState(state.g.params, aux.g_buffers, state.g.opt), parts=parts)

    # -- the G side -------------------------------------------------------------------

    def _g_loss(self, g_params: Params, state: TrainState, g_buffers: dict, d_buffers: dict, z: Tensor, noise: dict,
                y: tuple, real_out: Tensor | None = None):
        z = self._g_latents(z, state, noise)
        fake, g_buf = self.g_apply(g_params, g_buffers, z, *y)
        d_in = fake
        for p, fn in self.table.g_inputs:
            out = fn(d_in, self.ctx(p, state, noise))
            check_like(p.name, "g_inputs", out, d_in)
            d_in = out
        d_w = self._d_weights(state.d.params, state)
        out, d_buf = self.d_apply(d_w, d_buffers, d_in, *y)
        rel = {"real_out": real_out} if self.loss.g_needs_real else {}
        hp = self._hp_at(state, self._loss_keys)
        loss = self.loss.g(out, g_target=hp["g_target"], **self._loss_hp(hp), **rel, **self._loss_labels(y, y))
        part_aux = {}
        if self.table.g_term:
            term = GTerm(z, fake, d_in, self.loss.scores(out), lambda z2: self.g_apply(g_params, g_buffers, z2, *y)[0],
                         lambda x: self.loss.scores(self.d_apply(d_w, d_buffers, x, *y)[0]))
        for p, g_term in self.table.g_term:
            val, a = g_term(term, self.ctx(p, state, noise))
            check_like(p.name, "g_term (loss)", val, loss, dtype=False)
            loss, part_aux[p.name] = loss + val, a
        return loss, GAux(g_buf, d_buf, part_aux)

    def _real_out(self, state: TrainState, real: Tensor | None) -> Tensor | None:
        """D's (detached) outputs on ``real`` for a loss whose G part needs them."""
        if not self.loss.g_needs_real:
            return None
        if real is None:
            raise ValueError(f"loss {self.loss.name!r} compares G's samples with real data: pass g_grads(state, "
                             "noise_g, real) (train_step passes the last D update's batch)")
        real, yr = self.labels.split(real)
        with torch.no_grad():
            out, _ = self.d_apply(self._d_weights(state.d.params, state), state.d.buffers, real, *yr)
        return self.loss.scores(out).detach()

    def g_grads(self, state: TrainState, noise_g: UpdateNoise,
                real: Tensor | None = None) -> tuple[Tensor, Params, GAux]:
        """G's loss and gradient for one G update (pure).

        ``noise_g`` is one G update's noise (``ganfn.tree_index(noise.g, j)``).
        ``real`` [B, *sample] is needed only by losses that compare with real data
        (``loss.g_needs_real``: RpGAN, RaGAN); D scores it as it is (no input hook).
        ``grads`` has exactly the keys of ``state.g.params``: D's parameters are
        constants here, so the classic bug (G's backward leaving gradients on D)
        cannot happen. ``aux`` is a :class:`~ganfn.state.GAux`.
        """
        z = noise_g.z
        real_out = self._real_out(state, real)
        check_batch(self, state, self.labels.split(real)[0] if real_out is not None else None, z, "g")
        scale = self.g_optimizer.loss_scale(state.g.opt) if self.g_optimizer.loss_scale is not None else None

        def one(cut: Callable, bufs: tuple[dict, dict]) -> tuple[tuple, tuple[dict, dict]]:
            out = value_and_grad(self._g_loss, state.g.params, state, *bufs,
                                 *cut((z, noise_g.parts, noise_g.labels, real_out)),
                                 scale=scale)
            return out, (out[2].g_buffers, out[2].d_buffers)

        outs, (gb, db) = accumulate(self.accumulation_steps, z.shape[0], one, (state.g.buffers, state.d.buffers))
        loss, grads = tree_mean([o[0] for o in outs]), tree_mean([o[1] for o in outs])
        return loss, grads, GAux(gb, db, tree_mean([o[2].parts for o in outs]))

    def g_skip(self, state: TrainState, d_aux: DAux) -> Tensor:
        """Whether a part gates this G update off, given the last D update's aux."""
        return torch.stack([fn(d_aux, self.ctx(p, state)) for p, fn in self.table.skip_g]).any(0)

    def g_update(self, state: TrainState, grads: Params, aux: GAux) -> TrainState:
        """Apply G gradients (pure): the optimizer step, every part's ``after_g``
        (EMA) and the new buffers."""
        new_p, new_opt = self.g_optimizer.update(grads, state.g.opt, state.g.params)
        new_p, parts = self._after("after_g", new_p, state, aux)
        return _replace(state, g=NetState(new_p, aux.g_buffers, new_opt),
                        d=NetState(state.d.params, aux.d_buffers, state.d.opt), parts=parts)

    # -- the full step -------------------------------------------------------------------

    def train_step(self, state: TrainState, real: Tensor | tuple[Tensor, Tensor],
                   noise: Noise) -> tuple[TrainState, dict[str, Tensor]]:
        """One full update: ``n_critic`` D updates, then ``n_gen`` G updates. Pure.

        Args:
            state: the training state (never modified).
            real: ``[B, *sample]`` if ``n_critic == 1``, else ``[n_critic, B, *sample]``;
                in a conditional setup an ``(images, labels)`` pair, labels int64
                ``[B]`` (``[n_critic, B]``) in ``[0, num_classes)``.
            noise: ``draw_noise(rng, B)``.

        Returns ``(new_state, metrics)``; metrics are 0-d tensors (no host sync):
        ``d_loss``, ``d_loss_real``, ``d_loss_fake``, ``penalty``, ``g_loss``,
        ``d_acc_real``, ``d_acc_fake``, ``d_grad_norm``, ``g_grad_norm``, ``lr_d``,
        ``lr_g`` (means over the step's D / G updates), plus ``d_skipped`` /
        ``g_skipped`` when a part gates updates.
        """
        check_step_inputs(self, state, real, noise)
        return _step.run(self._ops, state, real, noise)

    def sample_params(self, state: TrainState, *, ema: bool | None = None) -> Params:
        """The G weights :meth:`sample` uses; see :func:`ganfn.sampling.sample_params`."""
        return _sampling.sample_params(self, state, ema=ema)

    def sample(self, state: TrainState, z: Tensor, y: Tensor | None = None, *, ema: bool | None = None,
               train: bool = False, standing: int = 0) -> Tensor:
        """Generated samples ``[N, *sample]`` for latents ``z`` ``[N, *latent]``
        (conditional: classes ``y`` int64 [N]); ``standing > 0``: BatchNorm
        statistics recomputed for the EMA weights. See :func:`ganfn.sampling.sample`.
        No part's input hook runs here: augmentation never reaches samples."""
        return _sampling.sample(self, state, z, y, ema=ema, train=train, standing=standing)
