"""Spectral normalisation (Miyato et al., 2018) as a pure parameter transform.

``torch.nn.utils.spectral_norm`` keeps its power-iteration vector ``u`` in the
module and updates it with an ``out=`` write, which fails under ``vmap``. Here
``u`` is part of the training state: :func:`sn_init` draws it, :func:`sn_step`
advances the power iteration on the *detached* weights and returns the new
vectors, and :func:`sn_apply` divides each weight by ``u^T W v``, which is
differentiable in ``W`` with ``u``, ``v`` held fixed, as in torch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Params = dict[str, Tensor]
SNState = dict[str, Tensor]

__all__ = ["sn_init", "sn_step", "sn_apply", "sn_names"]


def sn_names(params: Params) -> list[str]:
    """Parameters normalised by default: every weight of 2 or more dimensions."""
    return [k for k, v in params.items() if v.dim() >= 2 and k.rsplit(".", 1)[-1] == "weight"]


def _mat(w: Tensor) -> Tensor:
    return w.reshape(w.shape[0], -1)


def sn_init(params: Params, generator: torch.Generator, names: list[str] | None = None) -> SNState:
    """A unit vector ``u`` of length ``out_features`` per normalised weight."""
    names = sn_names(params) if names is None else names
    state = {}
    for k in names:
        w = params[k]
        u = torch.randn(w.shape[0], generator=generator, dtype=w.dtype, device=generator.device).to(w.device)
        state[k] = F.normalize(u, dim=0, eps=1e-12)
    return state


def _v_of(w: Tensor, u: Tensor) -> Tensor:
    return F.normalize(_mat(w).mT @ u, dim=0, eps=1e-12)


def sn_step(params: Params, state: SNState, n_iter: int = 1) -> SNState:
    """``n_iter`` power iterations on the detached weights; returns the new ``u``s."""
    new = {}
    for k, u in state.items():
        w = _mat(params[k].detach())
        for _ in range(n_iter):
            v = F.normalize(w.mT @ u, dim=0, eps=1e-12)
            u = F.normalize(w @ v, dim=0, eps=1e-12)
        new[k] = u
    return new


def sn_apply(params: Params, state: SNState) -> Params:
    """Parameters with each normalised weight divided by its spectral-norm estimate
    ``sigma = u^T W v`` (``v = normalize(W^T u)``, both treated as constants)."""
    if not state:
        return params
    out = dict(params)
    for k, u in state.items():
        w = params[k]
        v = _v_of(w.detach(), u)
        sigma = torch.dot(u, _mat(w) @ v)
        out[k] = w / sigma
    return out
