"""ganfn: functional GAN training for PyTorch on torch.func.

Models are stateless functions of explicit parameter pytrees; every training
step is a pure function ``(state, real, noise) -> (state, metrics)`` that can be
vmapped over many seeds or hyperparameter settings.
"""
from . import augment, losses, optim, parts, penalties, recipes, regularisers, sampling, schedules
from .ensemble import stack, unstack
from .errors import NonFiniteLossError, check_finite
from .export import load_generator
from .gan import GAN
from .state import DAux, GAux, NetState, Noise, TrainState, UpdateNoise
from .tree import global_norm, tree_index, tree_map

__version__ = "0.1.0"

__all__ = [
    "GAN",
    "TrainState",
    "NetState",
    "Noise",
    "UpdateNoise",
    "DAux",
    "GAux",
    "parts",
    "stack",
    "unstack",
    "load_generator",
    "augment",
    "losses",
    "regularisers",
    "sampling",
    "schedules",
    "recipes",
    "optim",
    "penalties",
    "NonFiniteLossError",
    "check_finite",
    "global_norm",
    "tree_index",
    "tree_map",
]
