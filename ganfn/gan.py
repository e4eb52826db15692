"""The GAN specification and its pure training steps.

A :class:`GAN` describes a training setup (networks, loss, optimizers, penalty,
update counts) and holds no tensor that changes during training. The state is a
:class:`TrainState` pytree; every method is a pure function of its arguments::

    gan = GAN(G, D, latent_dim=64, loss="hinge", penalty=penalties.r1(1.0))
    state = gan.init(seed=0)
    rng = torch.Generator().manual_seed(0)
    for real in batches:
        noise = gan.draw_noise(rng, real.shape[-len(gan.sample_shape) - 1])
        state, metrics = gan.train_step(state, real, noise)

One ``train_step`` is ``n_critic`` D updates followed by ``n_gen`` G updates. With
``n_critic > 1`` the real data has a leading axis, ``[n_critic, B, *sample]``:
D update ``i`` sees ``real[i]`` (use ``real.expand(n_critic, ...)`` to reuse one
batch). With ``n_critic == 1`` it is a plain ``[B, *sample]`` batch.

Two differentiation paths give the same numbers: outside any ``torch.func``
transform and outside ``torch.compile`` gradients come from
``torch.autograd.grad`` on fresh leaf copies of the parameters (pure: it never
touches ``.grad``, and is cheaper per call on CPU); under ``vmap``/``grad``/
``compile`` they come from ``torch.func.grad_and_value``.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import Tensor, nn

from . import losses as _losses
from . import optim as _optim
from . import diagnose
from . import penalties as _penalties
from .functional import Buffers, Params, extract, has_batch_stats, make_apply
from .spectral import sn_apply, sn_init, sn_step
from .tree import global_norm, in_transform, tree_index, tree_map, tree_where
from .tree import replace as _nt_replace

__all__ = ["GAN", "TrainState", "in_transform", "grad_norm_metrics"]

Noise = dict[str, Any]


class TrainState(NamedTuple):
    """The whole training state: a pytree of tensors (dicts of tensors inside).

    ``g_ema`` is ``{}`` without EMA and ``d_sn`` is ``{}`` without spectral
    normalisation; ``replay`` is ``{}`` without a replay buffer. ``diverged_at``
    is -1 while training is healthy; ensemble steps set it to the step at which a
    member's loss became non-finite and freeze that member. ``hparams``
    holds the loss/penalty/EMA hyperparameters as 0-d tensors (optimizer
    hyperparameters live in ``g_opt["hp"]`` / ``d_opt["hp"]``) so each stacked
    member can carry its own values.
    """

    step: Tensor
    g_params: Params
    g_buffers: Buffers
    d_params: Params
    d_buffers: Buffers
    g_opt: dict
    d_opt: dict
    g_ema: Params
    d_sn: dict
    replay: dict
    hparams: dict
    diverged_at: Tensor


def _scaled(fn: Callable, opt_state: dict) -> Callable:
    """``fn`` with its loss multiplied by the optimizer state's ``loss_scale``
    (``optim.loss_scaled``); the optimizer divides the gradients again."""
    if "loss_scale" not in opt_state:
        return fn
    scale = opt_state["loss_scale"]

    def scaled(params, *args):
        loss, aux = fn(params, *args)
        return loss * scale.to(loss.dtype), {**aux, "unscaled_loss": loss.detach()}

    return scaled


def _value_and_grad(fn: Callable, params: Params, *args: Any) -> tuple[Tensor, Params, Any]:
    """``(loss, grads, aux)`` of ``fn(params, *args) -> (loss, aux)`` w.r.t. ``params``.

    With loss scaling (see :func:`_scaled`) the returned loss is the unscaled one."""
    leaf = next(iter(params.values()), None)
    if leaf is not None and in_transform(leaf):
        grads, (loss, aux) = torch.func.grad_and_value(fn, has_aux=True)(params, *args)
        return aux.pop("unscaled_loss", loss) if isinstance(aux, dict) else loss, grads, aux
    # Fresh leaves: the caller's tensors never get requires_grad or .grad.
    leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
    with torch.enable_grad():
        loss, aux = fn(leaves, *args)
        gs = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
    grads = {k: (g if g is not None else torch.zeros_like(v)) for (k, v), g in zip(leaves.items(), gs)}
    aux = tree_map(lambda t: t.detach(), aux)
    return aux.pop("unscaled_loss", loss.detach()) if isinstance(aux, dict) else loss.detach(), grads, aux


def grad_norm_metrics(net: str, grads: Params, opt_state: dict) -> dict[str, Tensor]:
    """``{net}_grad_norm``; with loss scaling the norm of the unscaled gradients,
    0 on an overflow step (which the optimizer skips), plus ``{net}_loss_scale``."""
    norm = global_norm(grads)
    if "loss_scale" not in opt_state:
        return {f"{net}_grad_norm": norm}
    scale = opt_state["loss_scale"]
    norm = norm / scale.to(norm.dtype)
    return {f"{net}_grad_norm": torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm)), f"{net}_loss_scale": scale}


def _mean(xs: Sequence[dict]) -> dict:
    if len(xs) == 1:
        return dict(xs[0])
    return {k: torch.stack([x[k] for x in xs]).mean(0) for k in xs[0]}


class GAN:
    """A GAN training setup; all methods are pure functions of their arguments.

    Args:
        generator, discriminator: the user's ``nn.Module``s, used only as
            templates (never modified). D returns one score per sample
            ([B] or [B, 1]; logits for the BCE losses).
        latent_dim: an int, or the shape of one latent sample (e.g. ``(128, 1, 1)``).
        loss: a ``ganfn.losses`` name or :class:`~ganfn.losses.LossPair`.
        g_optimizer, d_optimizer: ``ganfn.optim`` optimizers (default Adam 2e-4,
            betas (0.5, 0.999)); different learning rates give TTUR.
        penalty: a :class:`~ganfn.penalties.Penalty`, a name, or a sequence of them.
        n_critic, n_gen: D updates and G updates per ``train_step``.
        ema_decay: keep an exponential moving average of G's parameters.
        spectral_norm: normalise D's weights (Miyato et al.) with u-vectors kept
            in the state; ``sn_iters`` power iterations per D update.
        real_label, fake_label, g_target: targets for the BCE / least-squares
            losses (``real_label=0.9`` is one-sided label smoothing).
        accumulation_steps: D and G gradients are summed over this many
            micro-batches of each batch (equal to one full-batch gradient for
            networks without batch statistics).
        instance_noise: std of Gaussian noise added to D's real and fake inputs.
        replay_size, replay_fraction: keep a buffer of past generated samples and
            replace this fraction of each fake batch seen by D with samples drawn
            from it (Shrivastava et al., 2017).
        d_skip_accuracy: skip a D update while D's accuracy on the batch, measured
            before the update, is above this (reference 002 uses 0.8).
        g_skip_accuracy: skip a G update while D's accuracy is below this.
        weight_init: ``fn(module, generator)`` applied after each submodule's
            ``reset_parameters()`` when ``init`` re-draws parameters per seed.
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
        penalty: str | _penalties.Penalty | Sequence[str | _penalties.Penalty] | None = None,
        n_critic: int = 1,
        n_gen: int = 1,
        ema_decay: float | None = None,
        spectral_norm: bool = False,
        sn_iters: int = 1,
        real_label: float = 1.0,
        fake_label: float = 0.0,
        g_target: float = 1.0,
        accumulation_steps: int = 1,
        instance_noise: float = 0.0,
        replay_size: int = 0,
        replay_fraction: float = 0.5,
        d_skip_accuracy: float | None = None,
        g_skip_accuracy: float | None = None,
        weight_init: Callable[[nn.Module, torch.Generator], None] | None = None,
    ) -> None:
        if not isinstance(generator, nn.Module) or not isinstance(discriminator, nn.Module):
            raise TypeError("generator and discriminator must be torch.nn.Module instances")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_shape: tuple[int, ...] = (int(latent_dim),) if isinstance(latent_dim, int) else tuple(int(d) for d in latent_dim)
        if not self.latent_shape or any(d <= 0 for d in self.latent_shape):
            raise ValueError(f"latent_dim must be a positive int or shape, got {latent_dim!r}")
        self.loss = _losses.get(loss)
        self.g_optimizer = g_optimizer or _optim.adam(2e-4, (0.5, 0.999))
        self.d_optimizer = d_optimizer or _optim.adam(2e-4, (0.5, 0.999))
        for name, opt in (("g_optimizer", self.g_optimizer), ("d_optimizer", self.d_optimizer)):
            if not isinstance(opt, _optim.Optimizer):
                raise TypeError(f"{name} must be a ganfn.optim.Optimizer (e.g. ganfn.optim.adam(2e-4)), got {type(opt).__name__}")
        if penalty is None:
            pens: list = []
        elif isinstance(penalty, (str, _penalties.Penalty)):
            pens = [penalty]
        else:
            pens = list(penalty)
        self.penalties: tuple[_penalties.Penalty, ...] = tuple(_penalties.get(p) for p in pens)
        for name, v in (("n_critic", n_critic), ("n_gen", n_gen), ("accumulation_steps", accumulation_steps), ("sn_iters", sn_iters)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.n_critic, self.n_gen, self.accumulation_steps = n_critic, n_gen, accumulation_steps
        self.spectral_norm, self.sn_iters = bool(spectral_norm), sn_iters
        _check("real_label", real_label, 0.0, 1.0) if self.loss.name in ("minimax", "non_saturating") else _check("real_label", real_label)
        _check("fake_label", fake_label)
        _check("g_target", g_target)
        if ema_decay is not None:
            _check("ema_decay", ema_decay, 0.0, 1.0)
        _check("instance_noise", instance_noise, 0.0)
        _check("replay_fraction", replay_fraction, 0.0, 1.0)
        if not isinstance(replay_size, int) or replay_size < 0:
            raise ValueError(f"replay_size must be an int >= 0, got {replay_size!r}")
        for name, v in (("d_skip_accuracy", d_skip_accuracy), ("g_skip_accuracy", g_skip_accuracy)):
            if v is not None:
                _check(name, v, 0.0, 1.0)
        self.ema_decay = ema_decay
        self.instance_noise = float(instance_noise)
        self.replay_size, self.replay_fraction = replay_size, float(replay_fraction)
        self.d_skip_accuracy, self.g_skip_accuracy = d_skip_accuracy, g_skip_accuracy
        self.weight_init = weight_init
        self.defaults: dict[str, float] = {"real_label": float(real_label), "fake_label": float(fake_label), "g_target": float(g_target)}
        self.defaults.update({k: float(v) for k, v in self.loss.hparams.items()})
        for p in self.penalties:
            self.defaults[p.weight_key] = float(p.weight)
        if ema_decay is not None:
            self.defaults["ema_decay"] = float(ema_decay)
        if instance_noise > 0:
            self.defaults["instance_noise"] = float(instance_noise)

        self._g = make_apply(generator)
        self._d = make_apply(discriminator)
        self._d_batch_stats = has_batch_stats(discriminator)
        if self._d_batch_stats and any(p.term is not None for p in self.penalties):
            raise ValueError(
                "gradient penalties (gp, r1, r2) need per-sample input gradients, but the discriminator "
                "has batch-normalisation layers whose batch statistics mix samples; use LayerNorm, "
                "InstanceNorm or no normalisation in D (as WGAN-GP recommends)"
            )
        self._needs_eps = any(p.needs_eps for p in self.penalties)
        self._sample_shape: tuple[int, ...] | None = None

    # -- construction -----------------------------------------------------------

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """The shape of one generated sample (found once by running G on 2 latents)."""
        if self._sample_shape is None:
            p = next(self.generator.parameters(), None)
            z = torch.zeros(2, *self.latent_shape, device=p.device if p is not None else None,
                            dtype=p.dtype if p is not None else None)
            params, buffers = extract(self.generator)
            with torch.no_grad():
                out, _ = self._g(params, buffers, z, train=False)
            self._sample_shape = tuple(out.shape[1:])
        return self._sample_shape

    def _fresh_modules(self, seed: int) -> tuple[nn.Module, nn.Module]:
        g, d = copy.deepcopy(self.generator), copy.deepcopy(self.discriminator)
        devices = sorted({t.device.index or 0 for m in (g, d) for t in m.parameters() if t.device.type == "cuda"})
        # fork_rng restores the global RNG afterwards: init reads no hidden state,
        # and the caller's RNG stream is left exactly as it was.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            for net in (g, d):
                for m in net.modules():
                    if hasattr(m, "reset_parameters") and callable(m.reset_parameters):
                        m.reset_parameters()
                if self.weight_init is not None:
                    self.weight_init(net, gen)
        return g, d

    def init(self, seed: int, *, reinit: bool = True, **hparams: float | Tensor) -> TrainState:
        """The initial training state for ``seed``.

        With ``reinit`` (default) parameters are re-drawn from ``seed`` (each
        submodule's ``reset_parameters()``, then ``weight_init``); otherwise the
        modules' current parameters are copied. ``hparams`` override
        hyperparameters for this state: ``lr_g``, ``lr_d``, ``b1_g``, ``b2_d``,
        ``weight_decay_d``, ... (any optimizer hyperparameter suffixed ``_g``/``_d``),
        ``real_label``, ``fake_label``, ``g_target``, ``ema_decay``,
        ``instance_noise`` and the penalties' keys (``gp_weight``, ``r1_weight``,
        ``r2_weight``, ``clip_value``).

        Raises ``ValueError`` if D cannot take G's output, or on unknown or
        out-of-range hyperparameters.
        """
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        g_mod, d_mod = self._fresh_modules(seed) if reinit else (self.generator, self.discriminator)
        g_params, g_buffers = extract(g_mod)
        d_params, d_buffers = extract(d_mod)
        self._check_compatible(g_params, g_buffers, d_params, d_buffers)
        like = next(iter(d_params.values()))
        g_opt = self.g_optimizer.init(g_params)
        d_opt = self.d_optimizer.init(d_params)
        hp = {k: torch.tensor(v, dtype=torch.float64, device=like.device) for k, v in self.defaults.items()}
        for key, value in hparams.items():
            _check(key, value)
            t = torch.as_tensor(value, dtype=torch.float64, device=like.device).clone()
            if key in hp:
                hp[key] = t
            elif key.endswith(("_g", "_d")) and key[:-2] in _HP_ALIASES:
                opt = g_opt if key.endswith("_g") else d_opt
                name = _HP_ALIASES[key[:-2]]
                if name not in opt["hp"]:
                    raise ValueError(f"hyperparameter {key!r}: the {'G' if key.endswith('_g') else 'D'} optimizer has no {name!r} (it has {sorted(opt['hp'])})")
                fixed_by = self.g_optimizer if key.endswith("_g") else self.d_optimizer
                if name in fixed_by.fixed and float(t) != float(opt["hp"][name]):
                    raise ValueError(
                        f"hyperparameter {key!r}: the optimizer was built with {name}=0.0, which removes its "
                        f"arithmetic; build it with a tensor (e.g. {name}=torch.tensor(0.0)) to sweep {name}")
                if name == "lr" and float(t) < 0:
                    raise ValueError(f"hyperparameter {key}={float(t)} must be >= 0")
                opt["hp"][name] = t
            else:
                known = sorted(set(hp) | {f"{a}_{n}" for a in _HP_ALIASES for n in "gd"})
                raise ValueError(f"unknown hyperparameter {key!r}; known: {known}")
        gen = torch.Generator().manual_seed(seed)
        d_sn = {k: u.to(like.device) for k, u in sn_init(d_params, gen).items()} if self.spectral_norm else {}
        replay: dict = {}
        if self.replay_size:
            replay = {
                "samples": torch.zeros(self.replay_size, *self.sample_shape, dtype=like.dtype, device=like.device),
                "count": torch.zeros((), dtype=torch.int64, device=like.device),
            }
        return TrainState(
            step=torch.zeros((), dtype=torch.int64, device=like.device),
            g_params=g_params,
            g_buffers=g_buffers,
            d_params=d_params,
            d_buffers=d_buffers,
            g_opt=g_opt,
            d_opt=d_opt,
            g_ema={k: v.clone() for k, v in g_params.items()} if self.ema_decay is not None else {},
            d_sn=d_sn,
            replay=replay,
            hparams=hp,
            diverged_at=torch.full((), -1, dtype=torch.int64, device=like.device),
        )

    def _check_compatible(self, g_params, g_buffers, d_params, d_buffers) -> None:
        like = next(iter(g_params.values()), None)
        z = torch.zeros(2, *self.latent_shape, dtype=like.dtype if like is not None else None,
                        device=like.device if like is not None else None)
        try:
            with torch.no_grad():
                fake, _ = self._g(g_params, g_buffers, z, train=False)
        except Exception as e:  # noqa: BLE001 - re-raised with the shapes named
            raise ValueError(f"the generator cannot take latents of shape {tuple(z.shape)} (latent_dim={self.latent_shape}): {e}") from e
        try:
            with torch.no_grad():
                out, _ = self._d(d_params, d_buffers, fake, train=False)
        except Exception as e:  # noqa: BLE001
            raise ValueError(
                f"the discriminator cannot take the generator's output of shape {tuple(fake.shape)} "
                f"(sample shape {tuple(fake.shape[1:])}): {e}"
            ) from e
        if out.dim() == 0 or out.shape[0] != 2:
            raise ValueError(f"the discriminator must return scores with a leading batch axis ([B] or [B, 1]), got shape {tuple(out.shape)} for a batch of 2")
        diagnose.check_discriminator(self.discriminator, lambda x: self._d(d_params, d_buffers, x, train=False)[0], fake, self.loss.name)
        self._sample_shape = tuple(fake.shape[1:])

    # -- randomness ---------------------------------------------------------------

    def draw_latents(self, rng: torch.Generator, n: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
        """``n`` standard normal latents [n, *latent_shape] from ``rng``."""
        z = torch.randn(n, *self.latent_shape, generator=rng, dtype=dtype, device=rng.device)
        return z if device is None else z.to(device)

    def draw_noise(self, rng: torch.Generator, batch_size: int, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Noise:
        """Every random tensor one ``train_step`` needs, drawn from ``rng`` only.

        Returns ``{"d": {...}, "g": {"z": [n_gen, B, *latent]}}`` where ``"d"`` has
        ``"z"`` [n_critic, B, *latent] and, when the setup uses them, ``"eps"``
        [n_critic, B] (penalty interpolation weights), ``"inst_real"`` /
        ``"inst_fake"`` [n_critic, B, *sample] (instance noise) and ``"replay_u"``
        [n_critic, B] (replay-buffer draws). Draw order is fixed, so a seed
        determines the noise exactly.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        if not isinstance(rng, torch.Generator):
            raise TypeError(f"rng must be a torch.Generator, got {type(rng).__name__}")
        nc, B = self.n_critic, batch_size
        kw = dict(generator=rng, dtype=dtype, device=rng.device)
        d: dict[str, Tensor] = {"z": torch.randn(nc, B, *self.latent_shape, **kw)}
        if self._needs_eps:
            d["eps"] = torch.rand(nc, B, **kw)
        if self.instance_noise > 0:
            d["inst_real"] = torch.randn(nc, B, *self.sample_shape, **kw)
            d["inst_fake"] = torch.randn(nc, B, *self.sample_shape, **kw)
        if self.replay_size:
            d["replay_u"] = torch.rand(nc, B, **kw)
        g = {"z": torch.randn(self.n_gen, B, *self.latent_shape, **kw)}
        noise = {"d": d, "g": g}
        return noise if device is None else tree_map(lambda t: t.to(device), noise)

    # -- the D side -------------------------------------------------------------------

    def _d_loss(self, d_params: Params, state: TrainState, real: Tensor, fake: Tensor, eps: Tensor | None):
        p = sn_apply(d_params, state.d_sn)
        hp = state.hparams
        if self._d_batch_stats:
            out_r, buf = self._d(p, state.d_buffers, real)
            out_f, buf = self._d(p, buf, fake)
        else:
            # One forward over [real; fake] halves D's launches; valid only
            # because no layer of D mixes samples.
            out, buf = self._d(p, state.d_buffers, torch.cat([real, fake]))
            out_r, out_f = out[: real.shape[0]], out[real.shape[0]:]
        lr_, lf_ = self.loss.d_parts(out_r, out_f, real_target=hp["real_label"], fake_target=hp["fake_label"], **self._loss_hp(hp))
        pen = torch.zeros((), dtype=lr_.dtype, device=lr_.device)
        for pn in self.penalties:
            if pn.term is not None:
                d_fn = lambda x: self._d(p, state.d_buffers, x)[0]  # noqa: E731
                pen = pen + pn.term(d_fn, real, fake, eps, hp[pn.weight_key])
        acc_r, acc_f = diagnose.d_accuracy(self.loss, out_r, out_f, hp["real_label"], hp["fake_label"])
        aux = {
            "d_buffers": buf,
            "d_loss_real": lr_.detach(),
            "d_loss_fake": lf_.detach(),
            "penalty": pen.detach(),
            "d_acc_real": acc_r.to(lr_.dtype),
            "d_acc_fake": acc_f.to(lr_.dtype),
        }
        return lr_ + lf_ + pen, aux

    def _loss_hp(self, hp: dict) -> dict:
        return {k: hp[k] for k in self.loss.hparams}

    def _fake_for_d(self, state: TrainState, z: Tensor, noise_d: Noise) -> tuple[Tensor, Buffers]:
        with torch.no_grad():
            fake, g_buf = self._g(state.g_params, state.g_buffers, z)
        fake = fake.detach()
        if self.replay_size:
            rep = state.replay
            B = fake.shape[0]
            filled = torch.clamp(rep["count"], max=self.replay_size)
            idx = torch.clamp((noise_d["replay_u"] * filled).long(), max=self.replay_size - 1)
            # Only the first replay_fraction of the batch is replaced, and only
            # once the buffer holds samples.
            use = (torch.arange(B, device=fake.device) < int(round(self.replay_fraction * B))) & (filled > 0)
            old = rep["samples"][idx]
            fake = torch.where(use.reshape(B, *([1] * (fake.dim() - 1))), old, fake)
        return fake, g_buf

    def d_grads(self, state: TrainState, real: Tensor, noise_d: Noise) -> tuple[Tensor, Params, dict]:
        """D's loss and gradient for one D update (pure).

        Args:
            state: the training state.
            real: real samples [B, *sample].
            noise_d: one D update's noise: ``{"z": [B, *latent], "eps": [B], ...}``
                (``tree_index(noise["d"], i)`` of a ``draw_noise`` result).

        Returns ``(loss, grads, aux)``: ``grads`` has exactly the keys of
        ``state.d_params``; ``aux`` has the new D/G buffers, the generated fake
        batch and the loss parts / accuracies. With ``accumulation_steps = k``
        the batch is split into k micro-batches whose gradients are averaged.
        """
        self._check_batch(state, real, noise_d["z"], "d")
        k = self.accumulation_steps
        B = real.shape[0]
        fake, g_buf = self._fake_for_d(state, noise_d["z"], noise_d)
        if self.instance_noise > 0:
            s = state.hparams["instance_noise"].to(real.dtype)
            real_in, fake_in = real + s * noise_d["inst_real"], fake + s * noise_d["inst_fake"]
        else:
            real_in, fake_in = real, fake
        eps = noise_d.get("eps")
        if k == 1:
            loss, grads, aux = _value_and_grad(_scaled(self._d_loss, state.d_opt), state.d_params, state, real_in, fake_in, eps)
        else:
            m = B // k
            results, st = [], state
            for j in range(k):
                sl = slice(j * m, (j + 1) * m)
                out = _value_and_grad(_scaled(self._d_loss, state.d_opt), state.d_params, st, real_in[sl], fake_in[sl], None if eps is None else eps[sl])
                results.append(out)
                st = _nt_replace(st, d_buffers=out[2]["d_buffers"])
            loss = torch.stack([r[0] for r in results]).mean()
            grads = tree_map(lambda *gs: torch.stack(gs).mean(0), *[r[1] for r in results])
            aux = {**_mean([{kk: v for kk, v in r[2].items() if kk != "d_buffers"} for r in results]), "d_buffers": st.d_buffers}
        aux = {**aux, "g_buffers": g_buf, "fake": fake}
        return loss, grads, aux

    def d_update(self, state: TrainState, grads: Params, aux: dict) -> TrainState:
        """Apply D gradients: optimizer step, projections (weight clipping), power
        iteration of spectral norm, new buffers, replay-buffer write. Pure."""
        new_p, new_opt = self.d_optimizer.update(grads, state.d_opt, state.d_params)
        for pn in self.penalties:
            if pn.project is not None:
                new_p = pn.project(new_p, state.hparams[pn.weight_key])
        d_sn = sn_step(new_p, state.d_sn, self.sn_iters) if state.d_sn else state.d_sn
        replay = state.replay
        if self.replay_size:
            fake = aux["fake"]
            n = min(fake.shape[0], self.replay_size)
            pos = (replay["count"] + torch.arange(n, device=fake.device)) % self.replay_size
            replay = {"samples": replay["samples"].index_copy(0, pos, fake[:n].to(replay["samples"].dtype)), "count": replay["count"] + n}
        return _nt_replace(state, d_params=new_p, d_opt=new_opt, d_buffers=aux["d_buffers"], g_buffers=aux["g_buffers"], d_sn=d_sn, replay=replay)

    # -- the G side -------------------------------------------------------------------

    def _g_loss(self, g_params: Params, state: TrainState, z: Tensor):
        fake, g_buf = self._g(g_params, state.g_buffers, z)
        out, d_buf = self._d(sn_apply(state.d_params, state.d_sn), state.d_buffers, fake)
        loss = self.loss.g(out, g_target=state.hparams["g_target"], **self._loss_hp(state.hparams))
        return loss, {"g_buffers": g_buf, "d_buffers": d_buf}

    def g_grads(self, state: TrainState, noise_g: Noise) -> tuple[Tensor, Params, dict]:
        """G's loss and gradient for one G update (pure).

        ``noise_g`` is ``{"z": [B, *latent]}``. ``grads`` has exactly the keys of
        ``state.g_params``: D's parameters are constants here, so the
        classic bug (G's backward leaving gradients on D) cannot happen.
        ``aux`` holds the new G and D buffers.
        """
        z = noise_g["z"]
        self._check_batch(state, None, z, "g")
        k = self.accumulation_steps
        if k == 1:
            return _value_and_grad(_scaled(self._g_loss, state.g_opt), state.g_params, state, z)
        m = z.shape[0] // k
        results, st = [], state
        for j in range(k):
            out = _value_and_grad(_scaled(self._g_loss, state.g_opt), state.g_params, st, z[j * m:(j + 1) * m])
            results.append(out)
            st = _nt_replace(st, g_buffers=out[2]["g_buffers"], d_buffers=out[2]["d_buffers"])
        loss = torch.stack([r[0] for r in results]).mean()
        grads = tree_map(lambda *gs: torch.stack(gs).mean(0), *[r[1] for r in results])
        return loss, grads, {"g_buffers": st.g_buffers, "d_buffers": st.d_buffers}

    def g_update(self, state: TrainState, grads: Params, aux: dict) -> TrainState:
        """Apply G gradients: optimizer step, new buffers, EMA of G's parameters. Pure."""
        new_p, new_opt = self.g_optimizer.update(grads, state.g_opt, state.g_params)
        ema = state.g_ema
        if self.ema_decay is not None:
            w = 1.0 - state.hparams["ema_decay"]
            ema = {k: torch.lerp(e, new_p[k], w.to(e.dtype)) for k, e in ema.items()}
        return _nt_replace(state, g_params=new_p, g_opt=new_opt, g_buffers=aux["g_buffers"], d_buffers=aux["d_buffers"], g_ema=ema)

    # -- the full step -------------------------------------------------------------------

    def train_step(self, state: TrainState, real: Tensor, noise: Noise) -> tuple[TrainState, dict[str, Tensor]]:
        """One full update: ``n_critic`` D updates, then ``n_gen`` G updates. Pure.

        Args:
            state: the training state (never modified).
            real: ``[B, *sample]`` if ``n_critic == 1``, else ``[n_critic, B, *sample]``.
            noise: ``draw_noise(rng, B)``.

        Returns ``(new_state, metrics)``; metrics are 0-d tensors (no host sync):
        ``d_loss``, ``d_loss_real``, ``d_loss_fake``, ``penalty``, ``g_loss``,
        ``d_acc_real``, ``d_acc_fake``, ``d_grad_norm``, ``g_grad_norm``, ``lr_d``,
        ``lr_g`` (means over the step's D / G updates), plus ``d_skipped`` /
        ``g_skipped`` with accuracy-based balancing.
        """
        self._check_step_inputs(state, real, noise)
        d_metrics = []
        for i in range(self.n_critic):
            r = real if self.n_critic == 1 else real[i]
            nd = tree_index(noise["d"], i)
            loss, grads, aux = self.d_grads(state, r, nd)
            new = self.d_update(state, grads, aux)
            m = {"d_loss": loss, **{k: aux[k] for k in ("d_loss_real", "d_loss_fake", "penalty", "d_acc_real", "d_acc_fake")},
                 **grad_norm_metrics("d", grads, state.d_opt)}
            acc = 0.5 * (aux["d_acc_real"] + aux["d_acc_fake"])
            if self.d_skip_accuracy is not None:
                skip = acc > self.d_skip_accuracy
                # Buffers still advance as in the imperative loop (the forward ran);
                # parameters and optimizer state are kept.
                new = _nt_replace(new, **{f: tree_where(skip, getattr(state, f), getattr(new, f)) for f in ("d_params", "d_opt", "d_sn")})
                m["d_skipped"] = skip.to(loss.dtype)
            d_metrics.append(m)
            state = new
        g_metrics = []
        for j in range(self.n_gen):
            loss, grads, aux = self.g_grads(state, tree_index(noise["g"], j))
            new = self.g_update(state, grads, aux)
            m = {"g_loss": loss, **grad_norm_metrics("g", grads, state.g_opt)}
            if self.g_skip_accuracy is not None:
                acc = 0.5 * (d_metrics[-1]["d_acc_real"] + d_metrics[-1]["d_acc_fake"])
                skip = acc < self.g_skip_accuracy
                new = _nt_replace(new, **{f: tree_where(skip, getattr(state, f), getattr(new, f)) for f in ("g_params", "g_opt", "g_ema")})
                m["g_skipped"] = skip.to(loss.dtype)
            g_metrics.append(m)
            state = new
        metrics = {**_mean(d_metrics), **_mean(g_metrics)}
        metrics["lr_d"] = self.d_optimizer.lr(state.d_opt)
        metrics["lr_g"] = self.g_optimizer.lr(state.g_opt)
        return _nt_replace(state, step=state.step + 1), metrics

    def sample(self, state: TrainState, noise: Tensor, *, ema: bool | None = None, train: bool = False) -> Tensor:
        """Generated samples ``[N, *sample]`` for latents ``noise`` [N, *latent].

        Uses G's EMA parameters when the setup keeps them (``ema=None``), and G in
        eval mode (``train=False``: BatchNorm uses running statistics).
        """
        if tuple(noise.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents must have shape [N, {', '.join(map(str, self.latent_shape))}], got {tuple(noise.shape)}")
        use_ema = bool(state.g_ema) if ema is None else ema
        if use_ema and not state.g_ema:
            raise ValueError("ema=True but this GAN keeps no EMA (pass ema_decay= to GAN)")
        params = state.g_ema if use_ema else state.g_params
        out, _ = self._g(params, state.g_buffers, noise, train=train)
        return out

    # -- input checks (metadata only: valid under vmap and compile) ------------------------

    def _check_batch(self, state: TrainState, real: Tensor | None, z: Tensor, which: str) -> None:
        if tuple(z.shape[1:]) != self.latent_shape:
            raise ValueError(f"{which}-noise latents must have shape [B, {', '.join(map(str, self.latent_shape))}], got {tuple(z.shape)}")
        B = z.shape[0]
        if B % self.accumulation_steps:
            raise ValueError(f"batch size {B} is not divisible by accumulation_steps={self.accumulation_steps}")
        if real is None:
            return
        like = next(iter(state.d_params.values()))
        if tuple(real.shape[1:]) != self.sample_shape:
            raise ValueError(f"real batch has sample shape {tuple(real.shape[1:])} but the generator makes {self.sample_shape} (real batch shape {tuple(real.shape)})")
        if real.shape[0] != B:
            raise ValueError(f"real batch size {real.shape[0]} does not match the noise batch size {B}")
        if real.dtype != like.dtype:
            raise TypeError(f"real data has dtype {real.dtype} but the parameters are {like.dtype}")
        if real.device != like.device:
            raise ValueError(f"real data is on {real.device} but the parameters are on {like.device}")

    def _check_step_inputs(self, state: TrainState, real: Tensor, noise: Noise) -> None:
        if not isinstance(state, TrainState):
            raise TypeError(f"state must be a ganfn.TrainState (from gan.init), got {type(state).__name__}")
        if not isinstance(real, Tensor):
            raise TypeError(f"real must be a tensor, got {type(real).__name__}")
        if not isinstance(noise, dict) or "d" not in noise or "g" not in noise:
            raise TypeError("noise must be the dict returned by gan.draw_noise(rng, batch_size)")
        want = 1 + len(self.sample_shape) + (self.n_critic > 1)
        if real.dim() != want:
            lead = f"[{self.n_critic}, B, " if self.n_critic > 1 else "[B, "
            raise ValueError(f"real must have shape {lead}{', '.join(map(str, self.sample_shape))}] (n_critic={self.n_critic}), got {tuple(real.shape)}")
        if self.n_critic > 1 and real.shape[0] != self.n_critic:
            raise ValueError(f"real has {real.shape[0]} batches on its leading axis but n_critic={self.n_critic}")
        if noise["d"]["z"].shape[0] != self.n_critic or noise["g"]["z"].shape[0] != self.n_gen:
            raise ValueError("noise was drawn for a different n_critic/n_gen: use this GAN's draw_noise")
        if self._needs_eps and "eps" not in noise["d"]:
            raise ValueError("this GAN's penalty needs interpolation weights: noise lacks 'eps' (use gan.draw_noise)")


_HP_ALIASES = {"lr": "lr", "b1": "b1", "b2": "b2", "beta1": "b1", "beta2": "b2", "eps": "eps",
               "weight_decay": "weight_decay", "momentum": "momentum", "alpha": "alpha",
               "dampening": "dampening", "max_norm": "max_norm"}


def _check(name: str, value: float | Tensor, low: float = -math.inf, high: float = math.inf) -> None:
    if isinstance(value, Tensor):
        if in_transform(value) or value.numel() != 1:
            return
        value = float(value)
    if not isinstance(value, (int, float)) or not math.isfinite(value) or not (low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
