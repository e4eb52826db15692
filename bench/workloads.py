"""The benchmark workloads and the five ways of running one GAN update.

Every variant performs *the same* update from the same initial parameters, on
the same real batches and the same noise (``tests/test_bench_smoke.py`` checks
that the parameters agree after two steps):

- ``n_critic`` D updates, each: fake = G(z_d[i]) (G in training mode, no
  gradient to G), D loss on real[i] and fake, plus the WGAN-GP term when the
  workload has one, Adam step on D;
- one G update on fresh latents z_g: G loss through D (D's parameters fixed),
  Adam step on G.

Variants:

- ``imperative``: the hand-written loop of reference 003 (``zero_grad``,
  ``backward``, ``torch.optim.Adam.step``; D called on real and fake separately;
  the fake batch made with autograd on and ``.detach()``-ed, as in the reference).
- ``lightning``: a ``LightningModule`` with ``automatic_optimization = False``
  in the style of reference 000 (``self.optimizers()``, ``manual_backward``,
  ``self.log``), driven by ``Trainer.fit``. Optional (``pip install lightning``).
- ``ganfn``: ``gan.train_step`` eager.
- ``ganfn_compiled``: ``torch.compile(gan.train_step, fullgraph=True)`` (default mode).
- ``ganfn_cudagraphs``: the same with ``mode="reduce-overhead"`` (CUDA graphs; CUDA only).
- ``jax``: the same update written in JAX + optax under ``jax.jit``, parameters
  copied from the torch modules. Optional (``pip install jax optax``).

No data set is read: real batches are seeded uniform noise in [-1, 1] of the
workload's sample shape (speed does not depend on the pixel values).
"""
from __future__ import annotations

import contextlib
import importlib.util
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

import ganfn
from ganfn import models as M
from ganfn.tree import tree_map

__all__ = ["Workload", "WORKLOADS", "make_pool", "VARIANTS", "Variant", "variant_class", "available", "peak_bytes"]


# ----------------------------------------------------------------- workloads --


@dataclass(frozen=True)
class Workload:
    """One benchmark setting: models, batch, loss, penalty, n_critic, Adam settings."""

    name: str
    kind: str  # "mlp" or "dcgan"
    batch: int
    loss: str = "non_saturating"  # or "wasserstein"
    gp: float | None = None
    n_critic: int = 1
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    latent: int = 100
    size: int = 784  # MLP: sample dim; DCGAN: image side
    hidden: int = 128  # MLP hidden width / DCGAN base width
    channels: int = 3

    def models(self, seed: int = 0) -> tuple[nn.Module, nn.Module]:
        g = torch.Generator().manual_seed(seed)
        if self.kind == "mlp":
            return (M.MLPGenerator(self.latent, self.size, hidden=self.hidden, generator=g),
                    M.MLPDiscriminator(self.size, hidden=self.hidden, generator=g))
        return (M.DCGANGenerator(self.latent, size=self.size, channels=self.channels, width=self.hidden, generator=g),
                M.DCGANDiscriminator(size=self.size, channels=self.channels, width=self.hidden, generator=g))

    def gan(self, G: nn.Module, D: nn.Module) -> ganfn.GAN:
        opt = lambda: ganfn.optim.adam(self.lr, self.betas)
        return ganfn.GAN(G, D, latent_dim=self.latent, loss=self.loss, g_optimizer=opt(), d_optimizer=opt(),
                         parts=[] if self.gp is None else ganfn.recipes.wgan_gp(self.gp),
                         n_critic=self.n_critic)


WORKLOADS: dict[str, Workload] = {w.name: w for w in [
    # Reference 003: 784-128 MLP G and D, Adam 2e-4 (0.5, 0.999), BCE.
    Workload("mlp_b64", "mlp", 64),
    Workload("mlp_b256", "mlp", 256),
    # Reference 004's DCGAN (BatchNorm in G and D, width 64), RGB.
    Workload("dcgan32_b128", "dcgan", 128, size=32, hidden=64),
    Workload("dcgan64_b64", "dcgan", 64, size=64, hidden=64),
    # WGAN-GP (Gulrajani et al.): critic x5 per G step, Adam 1e-4 (0.5, 0.9), gp 10, on the 003 MLP.
    Workload("wgangp_mlp_b64", "mlp", 64, loss="wasserstein", gp=10.0, n_critic=5, lr=1e-4, betas=(0.5, 0.9)),
]}


def make_pool(
    wl: Workload, gan: ganfn.GAN, n: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> list[tuple[torch.Tensor, dict]]:
    """``n`` (real, noise) pairs: real [B, *sample] (or [n_critic, B, *sample]) in [-1, 1],
    noise from ``gan.draw_noise``; all variants cycle through the same pool."""
    rng = torch.Generator().manual_seed(seed)
    lead = (wl.n_critic,) if wl.n_critic > 1 else ()
    pool = []
    for _ in range(n):
        real = (torch.rand(*lead, wl.batch, *gan.sample_shape, generator=rng, dtype=torch.float64) * 2 - 1)
        noise = gan.draw_noise(rng, wl.batch, dtype=torch.float64)
        pool.append((real.to(device, dtype), tree_map(lambda t: t.to(device, dtype), noise)))
    return pool


# ------------------------------------------------------------------ helpers --


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def _cpu_alloc_trace(out: list):
    """Record every CPU allocation/free (bytes, time) made inside the block via
    ``torch.profiler(profile_memory=True)``; ``out`` gets the peak of the running
    sum, i.e. the most bytes the block held at once beyond what it started with."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        yield
    evs: list[tuple[int, int]] = []

    def walk(nodes):
        for e in nodes:
            if e.tag == _EventType.Allocation:
                evs.append((e.start_time_ns, int(e.extra_fields.alloc_size)))
            walk(e.children)

    walk(prof.profiler.kineto_results.experimental_event_tree())
    evs.sort()
    cur = peak = 0
    for _, b in evs:
        cur += b
        peak = max(peak, cur)
    out.append(peak)


def peak_bytes(fn: Callable[[], Any], device: torch.device) -> tuple[int, str]:
    """Peak bytes allocated by one call of ``fn`` above the level before it, and how measured."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base, "torch.cuda.max_memory_allocated"
    out: list = []
    with _cpu_alloc_trace(out):
        fn()
    return out[0], "torch.profiler(profile_memory=True) running sum"


def _named_params(G: nn.Module, D: nn.Module) -> dict[str, torch.Tensor]:
    return {**{f"G.{k}": v.detach().clone() for k, v in G.named_parameters()},
            **{f"D.{k}": v.detach().clone() for k, v in D.named_parameters()}}


# ----------------------------------------------------------------- variants --


@dataclass
class Variant:
    """One way of running the update. ``setup`` builds models/state; ``run(idx)``
    performs one step per pool index and returns the per-step seconds."""

    wl: Workload
    pool: list
    device: torch.device
    dtype: torch.dtype
    compile_s: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    name = "?"

    def step(self, i: int) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def run(self, idx: list[int]) -> list[float]:
        times = []
        for i in idx:
            t0 = time.perf_counter()
            self.step(i)
            sync(self.device)
            times.append(time.perf_counter() - t0)
        return times

    def memory(self, i: int) -> tuple[int, str]:
        return peak_bytes(lambda: self.step(i), self.device)

    def params(self) -> dict[str, torch.Tensor]:  # pragma: no cover - overridden
        raise NotImplementedError


def _modules(wl: Workload, device, dtype) -> tuple[nn.Module, nn.Module]:
    G, D = wl.models()
    return G.to(device, dtype).train(), D.to(device, dtype).train()


class Imperative(Variant):
    """Reference 003's loop, extended with n_critic and WGAN-GP in the usual way."""

    name = "imperative"

    def setup(self) -> "Imperative":
        wl = self.wl
        self.G, self.D = _modules(wl, self.device, self.dtype)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=wl.lr, betas=wl.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=wl.lr, betas=wl.betas)
        self.crit = nn.BCEWithLogitsLoss()
        return self

    def d_loss(self, real, fake, eps):
        D, wl = self.D, self.wl
        if wl.loss == "wasserstein":
            loss = D(fake).mean() - D(real).mean()
        else:
            out_r, out_f = D(real), D(fake)
            loss = self.crit(out_r, torch.ones_like(out_r)) + self.crit(out_f, torch.zeros_like(out_f))
        if wl.gp is not None:
            e = eps.reshape(-1, *([1] * (real.dim() - 1)))
            x_hat = (e * real + (1 - e) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
            loss = loss + wl.gp * ((g.flatten(1).norm(dim=1) - 1) ** 2).mean()
        return loss

    def g_loss(self, z):
        out = self.D(self.G(z))
        if self.wl.loss == "wasserstein":
            return -out.mean()
        return self.crit(out, torch.ones_like(out))

    def step(self, i: int) -> None:
        real, noise = self.pool[i % len(self.pool)]
        nc = self.wl.n_critic
        for k in range(nc):
            r = real if nc == 1 else real[k]
            self.opt_d.zero_grad()
            fake = self.G(noise.d.z[k])
            loss_d = self.d_loss(r, fake.detach(), noise.d.parts["gp"]["eps"][k] if self.wl.gp is not None else None)
            loss_d.backward()
            self.opt_d.step()
        self.opt_g.zero_grad()
        loss_g = self.g_loss(noise.g.z[0])
        loss_g.backward()
        self.opt_g.step()

    def params(self):
        return _named_params(self.G, self.D)


class GanfnEager(Variant):
    name = "ganfn"

    def setup(self) -> "GanfnEager":
        G, D = _modules(self.wl, self.device, self.dtype)
        self.gan = self.wl.gan(G, D)
        self.state = self.gan.init(0, reinit=False)
        self.fn = self.gan.train_step
        return self

    def step(self, i: int) -> None:
        real, noise = self.pool[i % len(self.pool)]
        self.state, self.metrics = self.fn(self.state, real, noise)

    def params(self):
        s = self.state
        return {**{f"G.{k}": v for k, v in s.g.params.items()}, **{f"D.{k}": v for k, v in s.d.params.items()}}


class GanfnCompiled(GanfnEager):
    name = "ganfn_compiled"
    mode: str | None = None
    options: dict | None = None

    def setup(self) -> "GanfnCompiled":
        super().setup()
        mode, options = self.mode, self.options
        self.fn = torch.compile(self.gan.train_step, mode=mode, fullgraph=True, options=options)
        self.note = f"torch.compile(fullgraph=True, {f'options={options!r}' if options else f'mode={mode!r}'})"
        # The first calls compile (and, with CUDA graphs, record): timed apart.
        t0 = time.perf_counter()
        for j in range(3 if mode == "reduce-overhead" else 1):
            self.step(j)
        sync(self.device)
        self.compile_s = time.perf_counter() - t0
        # Back to the initial state so every variant starts from the same point.
        self.state = self.gan.init(0, reinit=False)
        return self

    def step(self, i: int) -> None:
        real, noise = self.pool[i % len(self.pool)]
        state, self.metrics = self.fn(self.state, real, noise)
        if self.mode == "reduce-overhead":
            # CUDA-graph outputs live in a static pool the next replay overwrites:
            # the state fed back in must be our own copy (cheap device copies).
            state = tree_map(torch.clone, state)
        self.state = state


class GanfnCudaGraphs(GanfnCompiled):
    name = "ganfn_cudagraphs"
    mode = "reduce-overhead"


class GanfnCompiledCpuOptions(GanfnCompiled):
    """Two inductor options for the CPU, both off by default in torch: the
    graph's wrapper generated in C++ (no Python per kernel call), and ``tanh``
    as exp arithmetic instead of Sleef's (about twice as fast, less accurate
    near 0: pytorch/pytorch#148241)."""

    name = "ganfn_compiled_cpu_options"
    options = {"cpp_wrapper": True, "cpp.use_decompose_tanh": True}


# ----------------------------------------------------------------- lightning --


def lightning_available() -> bool:
    return importlib.util.find_spec("lightning") is not None


class LightningVariant(Variant):
    """Reference 000's manual-optimization ``LightningModule``, run by ``Trainer.fit``.

    Per-step time is the interval between consecutive ``on_train_batch_start``
    hooks, so it includes all of Lightning's per-batch work (hooks, logging,
    optimizer wrappers), but not the Trainer's per-``fit`` set-up.
    """

    name = "lightning"

    def setup(self) -> "LightningVariant":
        import lightning as L

        imp = Imperative(self.wl, self.pool, self.device, self.dtype).setup()
        pool, wl = self.pool, self.wl

        class GANModule(L.LightningModule):
            def __init__(self):
                super().__init__()
                self.automatic_optimization = False
                self.generator, self.discriminator = imp.G, imp.D
                self.mem: list | None = None

            def configure_optimizers(self):
                # Kept across fit() calls so Adam's moments carry over, as in one long fit.
                return [imp.opt_g, imp.opt_d]

            def training_step(self, batch, batch_idx):
                ctx = _cpu_alloc_trace(self.mem) if self.mem is not None else contextlib.nullcontext()
                with ctx:
                    g_opt, d_opt = self.optimizers()
                    real, noise = pool[int(batch) % len(pool)]
                    for k in range(wl.n_critic):
                        r = real if wl.n_critic == 1 else real[k]
                        fake = self.generator(noise.d.z[k])
                        disc_loss = imp.d_loss(r, fake.detach(),
                                               noise.d.parts["gp"]["eps"][k] if wl.gp is not None else None)
                        self.log("disc_loss", disc_loss)
                        d_opt.zero_grad()
                        self.manual_backward(disc_loss)
                        d_opt.step()
                    gen_loss = imp.g_loss(noise.g.z[0])
                    self.log("gen_loss", gen_loss)
                    g_opt.zero_grad()
                    self.manual_backward(gen_loss)
                    g_opt.step()

        self.imp, self.module, self.L = imp, GANModule(), L
        return self

    def _fit(self, idx: list[int], callbacks=()) -> None:
        import logging
        import warnings

        logging.getLogger("lightning").setLevel(logging.ERROR)
        logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
        acc = "gpu" if self.device.type == "cuda" else "cpu"
        trainer = self.L.Trainer(accelerator=acc, devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                                 enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                                 callbacks=list(callbacks),
                                 precision="64-true" if self.dtype == torch.float64 else "32-true")
        loader = torch.utils.data.DataLoader(idx, batch_size=None, shuffle=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(self.module, loader)

    def run(self, idx: list[int]) -> list[float]:
        stamps: list[float] = []
        dev = self.device

        class Clock(self.L.Callback):
            def on_train_batch_start(self, *a):
                sync(dev)
                stamps.append(time.perf_counter())

            def on_train_end(self, *a):
                sync(dev)
                stamps.append(time.perf_counter())

        self._fit(list(idx), [Clock()])
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]

    def memory(self, i: int) -> tuple[int, str]:
        if self.device.type == "cuda":
            return peak_bytes(lambda: self._fit([i]), self.device)
        self.module.mem = []
        try:
            self._fit([i])
            return self.module.mem[0], "torch.profiler(profile_memory=True) running sum, inside training_step"
        finally:
            self.module.mem = None

    def params(self):
        return self.imp.params()


VARIANTS: dict[str, type[Variant]] = {
    "imperative": Imperative,
    "lightning": LightningVariant,
    "ganfn": GanfnEager,
    "ganfn_compiled": GanfnCompiled,
    "ganfn_cudagraphs": GanfnCudaGraphs,
    "ganfn_compiled_cpu_options": GanfnCompiledCpuOptions,
    "jax": None,  # bench.jax_workloads.JaxVariant, imported on demand
}


def variant_class(name: str) -> type[Variant]:
    """The class of a variant (``jax`` is imported only when asked for)."""
    if name == "jax":
        from bench.jax_workloads import JaxVariant

        return JaxVariant
    return VARIANTS[name]


def available(name: str, device: str = "cpu") -> tuple[bool, str]:
    """Whether a variant can run on ``device`` here, and why not."""
    if name == "ganfn_cudagraphs" and not str(device).startswith("cuda"):
        return False, "CUDA graphs need --device cuda"
    if name == "ganfn_compiled_cpu_options" and not str(device).startswith("cpu"):
        return False, "inductor's CPU options need --device cpu"
    if name == "lightning" and not lightning_available():
        return False, "lightning not installed (pip install lightning)"
    if name == "jax":
        from bench.jax_workloads import jax_available

        if not jax_available():
            return False, "jax/optax not installed (pip install jax optax)"
    return True, ""
