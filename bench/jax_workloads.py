"""The benchmark's GAN update in JAX + optax under ``jax.jit`` (the functional anchor).

The torch modules of a :class:`bench.workloads.Workload` are translated layer by
layer (Linear, Conv2d, ConvTranspose2d, BatchNorm2d, ReLU, LeakyReLU, Tanh) into
a pure JAX function, and their parameters copied, so the JAX step starts from the
same point and computes the same update as the torch variants (checked by
``tests/test_bench_smoke.py`` when JAX is installed). Optional dependency.
"""
from __future__ import annotations

import importlib.util
import os
import time

import torch
from torch import nn

from bench.workloads import Variant

__all__ = ["JaxVariant", "jax_available", "configure_threads"]


def configure_threads(n: int) -> None:
    """Match XLA's CPU threads to ``torch.set_num_threads(n)``; must run before
    jax is imported. With ``n == 1`` the whole process is also pinned to one
    core: XLA's CPU runtime keeps helper threads whatever its flags say, and on
    a 2-core machine they gave JAX both cores against torch's one (003 at
    S = 16 in ``bench/vmap.py``: JAX 29.7 ms unpinned, 43.3 ms pinned)."""
    if n != 1:
        return
    if "jax" not in __import__("sys").modules:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1").strip()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


def jax_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("jax", "optax"))


def _translate(seq: nn.Sequential, prefix: str):
    """A list of (kind, param-name prefix, attrs) for the layers of ``seq``."""
    layers = []
    for name, m in seq.named_children():
        p = f"{prefix}{name}"
        if isinstance(m, nn.Linear):
            layers.append(("linear", p, {"bias": m.bias is not None}))
        elif isinstance(m, nn.ConvTranspose2d):
            layers.append(("convT", p, {"stride": m.stride[0], "pad": m.padding[0],
                                        "k": m.kernel_size[0], "bias": m.bias is not None}))
        elif isinstance(m, nn.Conv2d):
            layers.append(("conv", p, {"stride": m.stride[0], "pad": m.padding[0], "bias": m.bias is not None}))
        elif isinstance(m, nn.BatchNorm2d):
            layers.append(("bn", p, {"eps": m.eps, "momentum": m.momentum}))
        elif isinstance(m, nn.ReLU):
            layers.append(("relu", p, {}))
        elif isinstance(m, nn.LeakyReLU):
            layers.append(("lrelu", p, {"slope": m.negative_slope}))
        elif isinstance(m, nn.Tanh):
            layers.append(("tanh", p, {}))
        elif isinstance(m, nn.Identity):
            continue
        else:
            raise TypeError(f"no JAX translation for {type(m).__name__}")
    return layers


def _forward(layers, params, buffers, x):
    """Training-mode forward; returns (output, new BatchNorm running stats)."""
    import jax
    import jax.numpy as jnp

    new_buf = dict(buffers)
    for kind, p, a in layers:
        if kind == "linear":
            x = x @ params[p + ".weight"].T
            if a["bias"]:
                x = x + params[p + ".bias"]
        elif kind == "conv":
            s, pad = a["stride"], a["pad"]
            x = jax.lax.conv_general_dilated(x, params[p + ".weight"], (s, s), [(pad, pad)] * 2,
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            if a["bias"]:
                x = x + params[p + ".bias"][None, :, None, None]
        elif kind == "convT":
            # torch ConvTranspose2d == a stride-1 conv of the stride-dilated input
            # with the flipped, in/out-swapped kernel and padding k - 1 - p.
            s, pad, k = a["stride"], a["pad"], a["k"]
            w = jnp.flip(jnp.swapaxes(params[p + ".weight"], 0, 1), (2, 3))
            x = jax.lax.conv_general_dilated(x, w, (1, 1), [(k - 1 - pad, k - 1 - pad)] * 2, lhs_dilation=(s, s),
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
            if a["bias"]:
                x = x + params[p + ".bias"][None, :, None, None]
        elif kind == "bn":
            mean = x.mean((0, 2, 3))
            var = x.var((0, 2, 3))
            n = x.shape[0] * x.shape[2] * x.shape[3]
            x = (x - mean[None, :, None, None]) / jnp.sqrt(var[None, :, None, None] + a["eps"])
            x = x * params[p + ".weight"][None, :, None, None] + params[p + ".bias"][None, :, None, None]
            mom = a["momentum"]
            new_buf[p + ".running_mean"] = (1 - mom) * buffers[p + ".running_mean"] + mom * jax.lax.stop_gradient(mean)
            new_buf[p + ".running_var"] = ((1 - mom) * buffers[p + ".running_var"]
                                           + mom * jax.lax.stop_gradient(var) * n / (n - 1))
            new_buf[p + ".num_batches_tracked"] = buffers[p + ".num_batches_tracked"] + 1
        elif kind == "relu":
            x = jnp.maximum(x, 0)
        elif kind == "lrelu":
            x = jnp.where(x >= 0, x, a["slope"] * x)
        elif kind == "tanh":
            x = jnp.tanh(x)
    return x, new_buf


class _Net:
    """A torch G or D from ganfn.models as a pure JAX function (params, buffers, x)."""

    def __init__(self, module: nn.Module, kind: str, is_g: bool):
        self.layers = _translate(module.net, "net.")
        self.kind, self.is_g = kind, is_g
        self.latent = getattr(module, "latent_dim", None)
        self.sample_shape = tuple(module.sample_shape)

    def __call__(self, params, buffers, x):
        B = x.shape[0]
        if self.is_g and self.kind == "dcgan":
            x = x.reshape(B, self.latent, 1, 1)
        if not self.is_g and self.kind == "mlp":
            x = x.reshape(B, -1)
        out, buf = _forward(self.layers, params, buffers, x)
        return (out.reshape(B, *self.sample_shape) if self.is_g else out.reshape(B)), buf


def _to_jax(t: torch.Tensor):
    import jax.numpy as jnp
    return jnp.asarray(t.detach().cpu().numpy())




class JaxVariant(Variant):
    """The update as one ``jax.jit``-ed pure function (state donated, optax Adam)."""

    name = "jax"

    def setup(self) -> "JaxVariant":
        import jax
        import jax.numpy as jnp
        import optax

        if self.dtype == torch.float64:
            jax.config.update("jax_enable_x64", True)
        wl = self.wl
        G, D = wl.models()
        G, D = G.to(self.dtype).train(), D.to(self.dtype).train()
        g, d = _Net(G, wl.kind, True), _Net(D, wl.kind, False)
        d_batch_stats = any(isinstance(m, nn.BatchNorm2d) for m in D.modules())
        opt = optax.adam(wl.lr, b1=wl.betas[0], b2=wl.betas[1], eps=1e-8)
        to = lambda mod, f: {k: _to_jax(v) for k, v in getattr(mod, f)()}
        gp_, gb = to(G, "named_parameters"), to(G, "named_buffers")
        dp, db = to(D, "named_parameters"), to(D, "named_buffers")
        self.state = (gp_, gb, dp, db, opt.init(gp_), opt.init(dp))
        nc, wass, gpw = wl.n_critic, wl.loss == "wasserstein", wl.gp

        def d_loss(dp, db, real, fake, eps):
            if d_batch_stats:
                out_r, db = d(dp, db, real)
                out_f, db = d(dp, db, fake)
            else:  # one forward over [real; fake], as ganfn does (no sample mixing in D)
                out, db = d(dp, db, jnp.concatenate([real, fake]))
                out_r, out_f = out[: real.shape[0]], out[real.shape[0]:]
            if wass:
                loss = out_f.mean() - out_r.mean()
            else:
                loss = (jax.nn.softplus(out_r) - out_r).mean() + jax.nn.softplus(out_f).mean()
            if gpw is not None:
                e = eps.reshape(-1, *([1] * (real.ndim - 1)))
                x_hat = e * real + (1 - e) * fake
                gr = jax.grad(lambda x: d(dp, db, x)[0].sum())(x_hat)
                norms = jnp.sqrt(jnp.sum(jnp.square(gr.reshape(gr.shape[0], -1)), axis=1) + 1e-12)
                loss = loss + gpw * jnp.mean(jnp.square(norms - 1.0))
            return loss, db

        def step(state, real, zd, eps, zg):
            gp_, gb, dp, db, og, od = state
            for k in range(nc):
                fake, gb = g(gp_, gb, zd[k])
                fake = jax.lax.stop_gradient(fake)
                r = real if nc == 1 else real[k]
                (ld, db), grads = jax.value_and_grad(d_loss, has_aux=True)(dp, db, r, fake,
                                                                           None if eps is None else eps[k])
                upd, od = opt.update(grads, od, dp)
                dp = optax.apply_updates(dp, upd)

            def g_loss(gp_):
                fake, gb2 = g(gp_, gb, zg[0])
                out, db2 = d(dp, db, fake)
                loss = -out.mean() if wass else jax.nn.softplus(-out).mean()
                return loss, (gb2, db2)

            (lg, (gb, db)), gg = jax.value_and_grad(g_loss, has_aux=True)(gp_)
            upd, og = opt.update(gg, og, gp_)
            gp_ = optax.apply_updates(gp_, upd)
            return (gp_, gb, dp, db, og, od), {"d_loss": ld, "g_loss": lg}

        self.fn = jax.jit(step, donate_argnums=0)
        self.jpool = [(_to_jax(r), _to_jax(n.d.z),
                       _to_jax(n.d.parts["gp"]["eps"]) if "gp" in n.d.parts else None, _to_jax(n.g.z))
                      for r, n in self.pool]
        self.note = "jax.jit(step, donate_argnums=0) + optax.adam"
        init = self.state
        t0 = time.perf_counter()
        self.state = jax.tree_util.tree_map(jnp.copy, init)
        self.step(0)
        self.compile_s = time.perf_counter() - t0
        self.state = init
        return self

    def step(self, i: int) -> None:
        self.state, self.metrics = self.fn(self.state, *self.jpool[i % len(self.jpool)])
        self.metrics["d_loss"].block_until_ready()

    def memory(self, i: int) -> tuple[int, str]:
        import jax

        stats = jax.devices()[0].memory_stats()
        if not stats or "peak_bytes_in_use" not in stats:
            return -1, "n/a (XLA CPU client reports no allocator statistics)"
        base = stats.get("bytes_in_use", 0)
        self.step(i)
        return jax.devices()[0].memory_stats()["peak_bytes_in_use"] - base, "XLA peak_bytes_in_use (not reset per step)"

    def params(self):
        import numpy as np

        gp_, _, dp, *_ = self.state
        return {**{f"G.{k}": torch.from_numpy(np.array(v)) for k, v in gp_.items()},
                **{f"D.{k}": torch.from_numpy(np.array(v)) for k, v in dp.items()}}
