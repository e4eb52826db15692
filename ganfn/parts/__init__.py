"""Parts: the pieces a GAN step is built from, in the spirit of optax.

Design
------
An optax ``GradientTransformation`` is a pair of pure functions with explicit
state; ``adam`` is a chain of them and ``MultiSteps`` is a wrapper, not a flag.
A ganfn :class:`Part` is the same idea for one GAN step: a NamedTuple of a
``name``, per-member ``hparams`` and optional pure hooks (``None``: no-op).
``GAN`` knows nothing about any particular feature: it calls each part's hooks,
in the order the parts were given, at fixed points of the step::

    draw_noise:  z_d, each part's noise_d(Draw) ...,  z_g, each part's noise_g(Draw) ...
    D update:    fake = G(g_latents(z)) (style mixing) -> fake_for_d (replay)
                 real, fake   -> d_inputs (instance noise, augmentation)
                 D weights    -> d_weights (spectral norm), on D and G updates
                 D loss       =  loss(D(real), D(fake)) + sum of d_term(DTerm(d_fn, real, fake, D(real), D(fake)))
                 grads -> reduce (identity / all-reduce) -> skip_d? -> optimizer
                       -> after_d (clip, power iteration, replay write)
    G update:    fake = G(g_latents(z))  -> g_inputs (augmentation) -> D
                 G loss       =  loss(D(fake)) + sum of g_term(GTerm(z, fake, D input, D(fake)))
                 grads -> reduce -> skip_g? -> optimizer -> after_g (EMA)
    sample:      sample_weights (EMA)

Every hook gets a :class:`Ctx`: the part's own ``state`` (made by ``init`` and
kept in ``TrainState.parts[name]``), its hyperparameters ``hp`` (0-d tensors
from ``TrainState.hparams``, so each stacked member has its own values), its
``noise`` for this update and the train ``step``. Hooks must be pure and free of
data-dependent Python control flow (use ``torch.where``): then a part works
under ``vmap``, ``torch.compile``, in ensembles, in the data-parallel step and in
checkpoints, exactly like the built-in ones. A lazy regulariser that acts every
k updates keeps a counter in its state and multiplies its term by
``k * (count % k == 0)``. ``GAN`` checks every hook's output structure and
shapes (metadata only) and names the part when they are wrong.

Combinators return parts: :func:`every` (lazy, StyleGAN2's weighting),
:func:`starting_at` (off before a step) and :func:`named` (one part used twice,
hyperparameters namespaced ``"<name>/<key>"``). Any hyperparameter may be a
:mod:`ganfn.schedules` value.

Built-in parts: :func:`diffaugment`, :func:`ada`, :func:`dragan`,
:func:`one_sided_gp`, :func:`bcr`, :func:`top_k`, :func:`path_length`, :func:`ema`,
:func:`ema_half_life`, :func:`instance_noise`, :func:`replay`,
:func:`balance`, :func:`spectral_norm`, :func:`style_mixing`, and every penalty through
:func:`ganfn.penalties.as_part` (``GAN(parts=[...])`` takes a penalty as
its part). :mod:`ganfn.recipes` returns part lists for known setups; write any
others (see ``examples/custom_part.py``).
"""
from .augment import ada, diffaugment
from .balance import balance
from .base import (
    Ctx,
    Draw,
    DTerm,
    GTerm,
    Hyper,
    InitCtx,
    Part,
    PartError,
    check_like,
    check_part,
)
from .combinators import every, named, starting_at, wrap
from .ema import ema, ema_decay
from .ema_half_life import ema_half_life
from .instance_noise import instance_noise, instance_noise_level
from .path_length import path_length
from .regularisers import bcr, dragan, one_sided_gp, top_k
from .replay import replay
from .spectral_norm import spectral_norm
from .style_mixing import style_mixing

__all__ = [
    "Part", "Hyper", "Ctx", "InitCtx", "Draw", "DTerm", "GTerm", "PartError", "check_part", "check_like",
    "every", "starting_at", "named", "wrap",
    "diffaugment", "ada", "dragan", "one_sided_gp", "bcr", "top_k", "ema", "ema_decay", "ema_half_life",
    "instance_noise", "instance_noise_level", "path_length", "replay", "balance", "spectral_norm",
    "style_mixing",
]
