"""Many GANs in one program: throughput of the vmapped ensemble step.

    python bench/vmap.py                                # both workloads, S = 1 4 16 64
    python bench/vmap.py --workload ring8 --members 16 --rounds 7
    python bench/vmap.py --device cuda --members 64     # on a GPU

For each workload and member count S, times one training step of S GANs by:

- ``vmap``       : ``ensemble.make_step(gan)`` (plain ``torch.func.vmap`` of
                   ``gan.train_step``, with divergence isolation), eager;
- ``vmap+compile``: the same step with ``compile=True``;
- ``seq ganfn``  : S sequential ``gan.train_step`` calls (eager);
- ``seq torch``  : S sequential hand-written imperative loops (``nn.Module`` +
                   ``torch.optim.Adam`` + ``BCEWithLogitsLoss``, the usual
                   ``zero_grad / backward / step`` code), same models, batch, loss;
- ``jax vmap``   : (003 and ring8, when ``jax`` and ``optax`` are installed) the
                   same ensemble as ``jax.jit(jax.vmap(step))`` with optax Adam.

Every contender draws its noise every step (per-member ``torch.Generator``s;
``jax.random`` inside the jitted step for JAX) and trains on one shared real
batch. Contenders run interleaved, round by round, so machine load hits them
alike; the figure is the median over rounds. Throughput ratios are relative to
``seq torch`` (higher is better).

Peak memory per member: on CUDA, ``torch.cuda.max_memory_allocated`` over
building the S states and two steps, minus what was allocated before, over S.
On CPU, the peak resident set size (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` after ``malloc_trim``) over the same span, minus the
resident size before it, over S: it counts parameters, optimizer state and the
step's transient tensors, but also allocator slack, so treat it as approximate.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import math
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

import ganfn
from ganfn import ensemble
from ganfn.models import MLPDiscriminator, MLPGenerator

WORKLOADS = {
    # name: (latent, sample shape, hidden, batch, out_act)
    "ring8": (8, (2,), 128, 256, None),
    "003": (100, (784,), 128, 64, "tanh"),
}
LR, BETAS = 2e-4, (0.5, 0.999)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- memory ---------------------------------------------------------------------------

_libc = None


def _trim() -> None:
    global _libc
    gc.collect()
    try:
        _libc = _libc or ctypes.CDLL("libc.so.6")
        _libc.malloc_trim(0)
    except OSError:
        pass


def tune_malloc() -> bool:
    """glibc keeps freed memory for reuse (``ganfn.allocator.tune_cpu_allocator``,
    what ``ganfn train`` does on the CPU): without it every op of a pure step
    pays page faults on fresh mmaps (a vmapped 16-member Adam update of the 003
    D: 28 ms untuned, 8 ms tuned)."""
    from ganfn.allocator import tune_cpu_allocator

    return tune_cpu_allocator()


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


class Peak:
    """Peak memory (bytes) above the level at entry: CUDA allocator or CPU RSS."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        _trim()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            self.base = _status("VmRSS")
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
            except OSError:
                pass
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.peak = _status("VmHWM") - self.base


# -- the contenders -------------------------------------------------------------------------


def make_gan(workload: str, device: torch.device) -> ganfn.GAN:
    latent, shape, hidden, _, act = WORKLOADS[workload]
    G = MLPGenerator(latent, shape if len(shape) > 1 else shape[0], hidden=hidden, out_act=act).to(device)
    D = MLPDiscriminator(shape if len(shape) > 1 else shape[0], hidden=hidden).to(device)
    return ganfn.GAN(G, D, latent_dim=latent, loss="non_saturating",
                     g_optimizer=ganfn.optim.adam(LR, BETAS), d_optimizer=ganfn.optim.adam(LR, BETAS))


class Contender:
    name = "?"

    def setup(self, S: int) -> None: ...
    def step(self) -> None: ...
    def teardown(self) -> None: ...


class VmapStep(Contender):
    def __init__(self, gan, real, device, compile: bool):
        self.gan, self.real, self.device, self.compile = gan, real, device, compile
        self.name = "vmap+compile" if compile else "vmap"
        self.fn = ensemble.make_step(gan, compile=compile)

    def setup(self, S):
        seeds = list(range(S))
        self.state = ensemble.init_many(self.gan, seeds)
        self.state = ganfn.tree_map(lambda t: t.to(self.device), self.state)
        self.rngs = ensemble.rngs(seeds, device=self.device)

    def step(self):
        noise = ensemble.draw_noise_many(self.gan, self.rngs, self.real.shape[0])
        self.state, self.metrics = self.fn(self.state, self.real, noise)

    def teardown(self):
        self.state = self.metrics = self.rngs = None


class SeqGanfn(Contender):
    name = "seq ganfn"

    def __init__(self, gan, real, device):
        self.gan, self.real, self.device = gan, real, device

    def setup(self, S):
        self.states = [ganfn.tree_map(lambda t: t.to(self.device), self.gan.init(s)) for s in range(S)]
        self.rngs = ensemble.rngs(range(S), device=self.device)

    def step(self):
        B = self.real.shape[0]
        for i, (st, rng) in enumerate(zip(self.states, self.rngs, strict=True)):
            self.states[i], _ = self.gan.train_step(st, self.real, self.gan.draw_noise(rng, B))

    def teardown(self):
        self.states = self.rngs = None


class SeqTorch(Contender):
    """The hand-written imperative loop a PyTorch user writes, once per member."""

    name = "seq torch"

    def __init__(self, gan, real, device):
        self.gan, self.real, self.device = gan, real, device
        self.bce = nn.BCEWithLogitsLoss()

    def setup(self, S):
        self.members = []
        for s in range(S):
            G = copy.deepcopy(self.gan.generator)
            D = copy.deepcopy(self.gan.discriminator)
            torch.manual_seed(s)  # the usual way a script seeds its modules
            for m in list(G.modules()) + list(D.modules()):
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
            og = torch.optim.Adam(G.parameters(), lr=LR, betas=BETAS)
            od = torch.optim.Adam(D.parameters(), lr=LR, betas=BETAS)
            self.members.append((G, D, og, od, torch.Generator(device=self.device).manual_seed(s)))
        B = self.real.shape[0]
        self.ones = torch.ones(B, device=self.device)
        self.zeros = torch.zeros(B, device=self.device)

    def step(self):
        real, B, latent = self.real, self.real.shape[0], self.gan.latent_shape
        for G, D, og, od, rng in self.members:
            z = torch.randn(B, *latent, generator=rng, device=self.device)
            od.zero_grad()
            fake = G(z).detach()
            d_loss = self.bce(D(real), self.ones) + self.bce(D(fake), self.zeros)
            d_loss.backward()
            od.step()
            og.zero_grad()
            z = torch.randn(B, *latent, generator=rng, device=self.device)
            g_loss = self.bce(D(G(z)), self.ones)
            g_loss.backward()
            og.step()

    def teardown(self):
        self.members = None


class JaxVmap(Contender):
    """The same ensemble in JAX: jit(vmap(step)) with optax Adam."""

    name = "jax vmap"

    def __init__(self, workload, real):
        import jax
        import jax.numpy as jnp
        import optax

        self.jax, self.jnp = jax, jnp
        latent, shape, hidden, B, act = WORKLOADS[workload]
        n_in = math.prod(shape)

        def dense(key, i, o):
            k1, k2 = jax.random.split(key)
            lim = 1 / math.sqrt(i)
            return {"w": jax.random.uniform(k1, (i, o), minval=-lim, maxval=lim),
                    "b": jax.random.uniform(k2, (o,), minval=-lim, maxval=lim)}

        def init(key):
            ks = jax.random.split(key, 4)
            g = [dense(ks[0], latent, hidden), dense(ks[1], hidden, n_in)]
            d = [dense(ks[2], n_in, hidden), dense(ks[3], hidden, 1)]
            return g, d

        def G(p, z):
            h = jax.nn.relu(z @ p[0]["w"] + p[0]["b"])
            x = h @ p[1]["w"] + p[1]["b"]
            return jnp.tanh(x) if act == "tanh" else x

        def D(p, x):
            h = jax.nn.leaky_relu(x @ p[0]["w"] + p[0]["b"], 0.2)
            return (h @ p[1]["w"] + p[1]["b"])[:, 0]

        opt = optax.adam(LR, b1=BETAS[0], b2=BETAS[1])

        def d_loss(dp, gp, real, z):
            fake = jax.lax.stop_gradient(G(gp, z))
            return jnp.mean(jax.nn.softplus(-D(dp, real))) + jnp.mean(jax.nn.softplus(D(dp, fake)))

        def g_loss(gp, dp, z):
            return jnp.mean(jax.nn.softplus(-D(dp, G(gp, z))))

        def step(st, real):
            (gp, dp), (go, do), key = st
            key, k1, k2 = jax.random.split(key, 3)
            z = jax.random.normal(k1, (B, latent))
            gd = jax.grad(d_loss)(dp, gp, real, z)
            upd, do = opt.update(gd, do, dp)
            dp = optax.apply_updates(dp, upd)
            z = jax.random.normal(k2, (B, latent))
            gg = jax.grad(g_loss)(gp, dp, z)
            upd, go = opt.update(gg, go, gp)
            gp = optax.apply_updates(gp, upd)
            return (gp, dp), (go, do), key

        def make(key):
            g, d = init(key)
            return (g, d), (opt.init(g), opt.init(d)), key

        self.make = jax.jit(jax.vmap(make))
        self.fn = jax.jit(jax.vmap(step, in_axes=(0, None)))
        self.real = jnp.asarray(real.reshape(B, -1).cpu().numpy())

    def setup(self, S):
        self.st = self.make(self.jax.random.split(self.jax.random.PRNGKey(0), S))

    def step(self):
        self.st = self.fn(self.st, self.real)
        self.jax.block_until_ready(self.st)

    def teardown(self):
        self.st = None


# -- the run ----------------------------------------------------------------------------------


def bench(workload: str, S: int, args, device: torch.device) -> dict[str, tuple[float, float]]:
    latent, shape, hidden, B, _ = WORKLOADS[workload]
    torch._dynamo.reset()  # a fresh compile per S (no automatic dynamic shapes)
    gan = make_gan(workload, device)
    real = (torch.randn(B, *shape, generator=torch.Generator().manual_seed(0))
            * (2.0 if workload == "ring8" else 0.5)).clamp(-3, 3).to(device)
    cs: list[Contender] = [SeqTorch(gan, real, device), SeqGanfn(gan, real, device), VmapStep(gan, real, device, False)]
    if not args.no_compile:
        cs.append(VmapStep(gan, real, device, True))
    if args.jax and device.type == "cpu":
        try:
            cs.append(JaxVmap(workload, real))
        except ImportError:
            print("  (jax/optax not installed: pip install jax optax to add the JAX column)", file=sys.stderr)
    mem, times = {}, {c.name: [] for c in cs}
    for c in cs:
        # warm-up (and compilation) outside the measured span
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            c.setup(S)
            for _ in range(2):
                c.step()
        sync(device)
        c.teardown()
        if args.verbose:
            print(f"  warm-up {c.name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        with Peak(device) as p:
            c.setup(S)
            c.step()
            c.step()
        mem[c.name] = p.peak / S
        c.teardown()
    for c in cs:
        c.setup(S)
        c.step()
    steps = max(1, args.steps if S <= 16 else max(1, args.steps // 4))
    for _ in range(args.rounds):
        for c in cs:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                c.step()
            sync(device)
            times[c.name].append((time.perf_counter() - t0) / steps)
    for c in cs:
        c.teardown()
    return {n: (statistics.median(ts), mem[n]) for n, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=[*WORKLOADS, "all"], default="all")
    ap.add_argument("--members", type=int, nargs="+", default=[1, 4, 16, 64], help="ensemble sizes S")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median is reported)")
    ap.add_argument("--steps", type=int, default=10, help="steps per contender per round (a quarter for S > 16)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled vmapped step")
    ap.add_argument("--no-jax", dest="jax", action="store_false", help="skip the JAX column")
    ap.add_argument("-v", "--verbose", action="store_true")
    ap.add_argument("--no-malloc-tuning", dest="malloc", action="store_false",
                    help="keep glibc's default mmap/trim thresholds (see tune_malloc)")
    args = ap.parse_args(argv)
    tuned = args.malloc and args.device == "cpu" and tune_malloc()
    if args.threads:
        torch.set_num_threads(args.threads)
        if args.device == "cpu":
            # The JAX column on one thread and one core too (before jax is imported).
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from bench.jax_workloads import configure_threads

            configure_threads(args.threads)
    device = torch.device(args.device)
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads")
    print(f"# ganfn vmap bench — torch {torch.__version__}, {where}")
    print(f"# command: python bench/vmap.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"# glibc malloc tuning (tune_malloc, applies to every contender): {'on' if tuned else 'off'}")
    mem_kind = "CUDA max_memory_allocated" if device.type == "cuda" else "CPU peak-RSS delta (VmHWM)"
    for w in workloads:
        latent, shape, hidden, B, _ = WORKLOADS[w]
        print(f"\n## {w}: MLP GAN latent {latent}, hidden {hidden}, sample {shape}, batch {B}")
        print("ms/step for S members; ratio = throughput vs `seq torch` (S sequential imperative loops); memory: "
              f"{mem_kind} per member\n")
        header = None
        for S in args.members:
            try:
                res = bench(w, S, args, device)
            except (RuntimeError, MemoryError) as e:  # e.g. CUDA OOM at large S
                print(f"| {S} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120]} |")
                continue
            names = list(res)
            if header is None:
                header = names
                print("| S | " + " | ".join(f"{n} ms" for n in names) + " | " + " | ".join(f"{n} x" for n in names[1:])
                      + " | " + " | ".join(f"{n} MiB/member" for n in names) + " |")
                print("|---" * (1 + 3 * len(names) - 1) + "|")
            base = res["seq torch"][0]
            row = ([str(S)] + [f"{res[n][0] * 1e3:.2f}" for n in header]
                   + [f"{base / res[n][0]:.2f}" for n in header[1:]] + [f"{res[n][1] / 2**20:.2f}" for n in header])
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
