"""The typed pytrees of a GAN step: training state, noise and the gradients' aux.

All are NamedTuples of tensors and dicts of tensors, which both optree and
``torch.utils._pytree`` (used by ``torch.func.vmap``) understand, so a stacked
state, stacked noise or vmapped aux is the same type with a leading member axis.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from .functional import Buffers, Params

__all__ = ["NetState", "TrainState", "UpdateNoise", "Noise", "DAux", "GAux"]


class NetState(NamedTuple):
    """One network's trainable state, kept together (Flax's ``TrainState``):
    skipping its update or freezing it is one ``tree_where`` over this subtree."""

    params: Params
    buffers: Buffers
    opt: dict


class TrainState(NamedTuple):
    """The whole training state.

    ``g`` / ``d``: each network's parameters, buffers and optimizer state.
    ``parts``: each part's own state under the part's name (EMA parameters,
    spectral-norm vectors, replay buffer, ...; parts without state are absent).
    ``hparams``: the loss's and the parts' hyperparameters as 0-d float64
    tensors, so each stacked member can carry its own values (optimizer
    hyperparameters live in ``g.opt["hp"]`` / ``d.opt["hp"]``).
    ``step``: completed train steps. ``diverged_at``: -1 while healthy; the step
    at which the member's numbers turned non-finite once it was frozen.
    """

    step: Tensor
    g: NetState
    d: NetState
    parts: dict[str, Any]
    hparams: dict[str, Tensor]
    diverged_at: Tensor

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts of tensors (what a checkpoint stores)."""
        return {**self._asdict(), "g": self.g._asdict(), "d": self.d._asdict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainState":
        """The inverse of :meth:`to_dict`; ``ValueError`` naming missing fields."""
        missing = sorted(set(cls._fields) - set(d))
        if missing:
            raise ValueError(f"state lacks fields {missing} (written by an incompatible ganfn?)")
        return cls(**{**{k: d[k] for k in cls._fields}, "g": NetState(**d["g"]), "d": NetState(**d["d"])})


class UpdateNoise(NamedTuple):
    """The random tensors of one D or G update: latents ``z`` [B, *latent],
    each part's declared draws under the part's name (e.g. ``parts["gp"]["eps"]``)
    and the fake batch's class labels: ``(y [B],)`` in a conditional setup,
    ``()`` otherwise."""

    z: Tensor
    parts: dict[str, dict[str, Tensor]] = {}
    labels: tuple[Tensor, ...] = ()


class Noise(NamedTuple):
    """Everything random in one ``train_step``: ``d`` holds the D updates' noise
    with a leading axis of ``n_critic`` (leaves ``[n_critic, B, ...]``), ``g`` the
    G updates' with ``n_gen``. Index one update with ``ganfn.tree_index(noise.d, i)``."""

    d: UpdateNoise
    g: UpdateNoise


class DAux(NamedTuple):
    """What ``GAN.d_grads`` returns besides the loss and gradients.

    ``d_buffers`` / ``g_buffers``: the networks' buffers after the forward passes.
    ``fake``: the fake batch D saw (after replay, before D-input transforms).
    ``d_loss_real`` / ``d_loss_fake``: the loss's two halves; ``penalty``: the sum
    of the parts' D loss terms; ``d_acc_real`` / ``d_acc_fake``: D's accuracy
    (all 0-d). ``parts``: each D-term part's aux (batch means, 0-d or small)."""

    d_buffers: Buffers
    g_buffers: Buffers
    fake: Tensor
    d_loss_real: Tensor
    d_loss_fake: Tensor
    penalty: Tensor
    d_acc_real: Tensor
    d_acc_fake: Tensor
    parts: dict[str, Any]


class GAux(NamedTuple):
    """What ``GAN.g_grads`` returns besides the loss and gradients: the buffers
    after G's forward and D's forward on the fakes, and each G-term part's aux."""

    g_buffers: Buffers
    d_buffers: Buffers
    parts: dict[str, Any]
