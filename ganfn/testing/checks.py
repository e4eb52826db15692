"""Property checks for GAN training code: plain functions that raise ``AssertionError``.

Each check runs the code under test on concrete inputs and says, in its message,
what went wrong and where (which argument, which pytree path, by how much). They
need no test framework: call them from pytest, from a hypothesis ``@given``
test, or from a notebook.

- :func:`assert_pure`: a function leaves its inputs (nested pytrees and modules)
  unchanged, repeat calls are bit-identical, and no ``.grad`` appears on modules.
- :func:`assert_grads_isolated`: D's step never moves G and G's step never moves
  D; each gradient pytree covers exactly one network.
- :func:`assert_accumulation_equivalent`: ``k`` micro-batches give the full-batch
  gradients.
- :func:`assert_vmap_equivalent`: a ``torch.func.vmap``-ed run over stacked states
  equals the single runs.

The invariants of losses and penalties are in :mod:`ganfn.testing.invariants`.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from torch import Tensor, nn

from ..ensemble import stack, unstack
from ..tree import tree_map

__all__ = [
    "assert_pure",
    "assert_grads_isolated",
    "assert_accumulation_equivalent",
    "assert_vmap_equivalent",
    "single_and_vmapped_runs",
    "assert_trees_close",
    "assert_trees_equal",
]


# -- pytree walking and comparison ----------------------------------------------------------


def _walk(x: Any, path: str) -> Iterator[tuple[str, Any]]:
    """``(path, leaf)`` pairs with readable paths: ``.d_params['0.weight']``, ``[1]``.
    Modules are expanded into their parameters and buffers."""
    if isinstance(x, nn.Module):
        for k, v in x.state_dict(keep_vars=True).items():
            yield f"{path}<module>.{k}", v
        yield f"{path}<module>.training", x.training
    elif isinstance(x, dict):
        for k in x:
            yield from _walk(x[k], f"{path}[{k!r}]")
    elif isinstance(x, tuple) and hasattr(x, "_fields"):
        for f in x._fields:
            yield from _walk(getattr(x, f), f"{path}.{f}")
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, x


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        return False
    if torch.equal(a, b):
        return True
    if a.is_floating_point() or a.is_complex():
        # NaN != NaN: equal when NaNs sit at the same places and the rest agrees.
        na, nb = torch.isnan(a), torch.isnan(b)
        return torch.equal(na, nb) and torch.equal(a.masked_fill(na, 0), b.masked_fill(nb, 0))
    return False


def _describe(a: Any, b: Any) -> str:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
        if a.numel() and (a.is_floating_point() or a.is_complex()):
            d = (a.detach().double() - b.detach().double()).abs().nan_to_num(math.inf).max().item()
            return f"max abs difference {d:.3g}"
        return "values differ"
    return f"{a!r} vs {b!r}"


def _leaf_equal(a: Any, b: Any) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and _same_tensor(a.detach(), b.detach())
    if isinstance(a, torch.Generator) and isinstance(b, torch.Generator):
        # Drawing from a generator passed in advances it: that is a changed input.
        return torch.equal(a.get_state(), b.get_state())
    try:
        return bool(a == b)
    except Exception:  # objects without a usable ==
        return a is b


def _flat(tree: Any, root: str) -> dict[str, Any]:
    return dict(_walk(tree, root))


def _structure_msg(fa: dict, fb: dict, what: str) -> str | None:
    if fa.keys() == fb.keys():
        return None
    extra, missing = sorted(set(fb) - set(fa)), sorted(set(fa) - set(fb))
    return f"{what}: pytree structures differ (only in second: {extra[:5]}, only in first: {missing[:5]})"


def assert_trees_equal(a: Any, b: Any, what: str = "trees", root: str = "") -> None:
    """Bit-for-bit equality of two pytrees (NaNs equal NaNs), with the first
    differing path named in the error."""
    fa, fb = _flat(a, root), _flat(b, root)
    msg = _structure_msg(fa, fb, what)
    if msg:
        raise AssertionError(msg)
    for k, va in fa.items():
        if not _leaf_equal(va, fb[k]):
            raise AssertionError(f"{what} differ at {k or '<root>'}: {_describe(va, fb[k])}")


def assert_trees_close(a: Any, b: Any, what: str = "trees", *, rtol: float = 1e-5, atol: float = 1e-6,
                       root: str = "") -> None:
    """``torch.allclose`` on every tensor leaf (non-tensor leaves must be equal);
    the error names the worst leaf."""
    fa, fb = _flat(a, root), _flat(b, root)
    msg = _structure_msg(fa, fb, what)
    if msg:
        raise AssertionError(msg)
    bad = []
    for k, va in fa.items():
        vb = fb[k]
        if (isinstance(va, Tensor) and isinstance(vb, Tensor) and va.shape == vb.shape
                and (va.is_floating_point() or vb.is_floating_point())):
            x, y = va.detach().double(), vb.detach().to(va.device).double()
            if not torch.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True):
                err = ((x - y).abs() - rtol * y.abs()).nan_to_num(math.inf).max().item()
                bad.append((err, k, _describe(x, y)))
        elif not _leaf_equal(va, vb):
            bad.append((math.inf, k, _describe(va, vb)))
    if bad:
        bad.sort(key=lambda t: -t[0])
        names = ", ".join(k or "<root>" for _, k, _ in bad[:4])
        raise AssertionError(f"{what} differ at {len(bad)} leaves ({names}{', ...' if len(bad) > 4 else ''}); "
                             f"worst {bad[0][1] or '<root>'}: {bad[0][2]} (rtol={rtol}, atol={atol})")


# -- purity ----------------------------------------------------------------------------------


def _modules_of(obj: Any) -> list[nn.Module]:
    if isinstance(obj, nn.Module):
        return [obj]
    found = []
    for v in getattr(obj, "__dict__", {}).values():
        if isinstance(v, nn.Module):
            found.append(v)
    return found


def _snapshot(tree: Any, root: str) -> list[tuple[str, Any, Any, int | None]]:
    snap = []
    for path, leaf in _walk(tree, root):
        if isinstance(leaf, Tensor):
            try:
                version = leaf._version
            except RuntimeError:  # inference tensors have no version counter
                version = None
            snap.append((path, leaf, leaf.detach().clone(), version))
        else:
            try:
                snap.append((path, leaf, copy.deepcopy(leaf), None))
            except Exception:  # uncopyable objects: identity only
                snap.append((path, leaf, leaf, None))
    return snap


def _check_snapshot(snap, name: str) -> None:
    for path, leaf, saved, version in snap:
        if isinstance(leaf, Tensor):
            if not _same_tensor(leaf.detach(), saved):
                raise AssertionError(f"{name} is not pure: it modified its input {path} in place "
                                     f"({_describe(leaf.detach(), saved)})")
            try:
                now = leaf._version
            except RuntimeError:
                now = None
            if version is not None and now != version:
                raise AssertionError(f"{name} is not pure: it wrote into its input {path} in place "
                                     f"(the tensor's version counter went from {version} to {now})")
        elif not _leaf_equal(leaf, saved):
            raise AssertionError(f"{name} is not pure: its input {path} changed ({_describe(saved, leaf)})")


def _grads_of(modules: Iterable[nn.Module]) -> dict[str, Tensor | None]:
    out = {}
    for i, m in enumerate(modules):
        for k, p in m.named_parameters():
            out[f"module{i}({type(m).__name__}).{k}"] = None if p.grad is None else p.grad.detach().clone()
    return out


def assert_pure(fn: Callable, *args: Any, modules: nn.Module | Iterable[nn.Module] | None = None, repeats: int = 2,
                **kwargs: Any) -> Any:
    """Assert that ``fn(*args, **kwargs)`` behaves as a pure function; return its result.

    Checks that (1) no input changes: every tensor in ``args``/``kwargs``
    (nested dicts, lists, tuples, NamedTuples such as ``TrainState``, and
    ``nn.Module``s) keeps its values and its in-place version counter; (2)
    ``repeats`` calls give bit-identical outputs; (3) no ``.grad`` is written on
    the parameters of ``modules`` -- by default the modules among ``args`` and,
    when ``fn`` is a bound method (``gan.train_step``), the modules held by its
    object (a ``GAN``'s generator and discriminator), whose parameters and
    buffers must also stay unchanged.
    """
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    if modules is None:
        mods = _modules_of(getattr(fn, "__self__", None)) + [a for a in args if isinstance(a, nn.Module)]
    else:
        mods = [modules] if isinstance(modules, nn.Module) else list(modules)
    snap = _snapshot((args, kwargs), "") + _snapshot(mods, "modules")
    # Readable paths: args[i]... / kwargs[...]
    snap = [(p.replace("[0]", "args", 1) if p.startswith("[0]")
             else p.replace("[1]", "kwargs", 1) if p.startswith("[1]") else p, leaf, s, v)
            for p, leaf, s, v in snap]
    grads_before = _grads_of(mods)
    outputs = []
    for call in range(max(1, repeats)):
        outputs.append(fn(*args, **kwargs))
        _check_snapshot(snap, name)
        after = _grads_of(mods)
        for k, g0 in grads_before.items():
            g1 = after.get(k)
            if g0 is None and g1 is not None:
                raise AssertionError(f"{name} is not pure: it wrote .grad on the parameter {k} (call {call + 1})")
            if g0 is not None and (g1 is None or not _same_tensor(g0, g1.detach())):
                raise AssertionError(f"{name} is not pure: it changed the existing .grad of {k} (call {call + 1})")
    for i, out in enumerate(outputs[1:], start=2):
        try:
            assert_trees_equal(outputs[0], out, "outputs", root="output")
        except AssertionError as e:
            raise AssertionError(f"{name} is not deterministic: call {i} returned different results from call 1: "
                                 f"{e}") from None
    return outputs[0]


# -- gradient isolation -------------------------------------------------------------------------



def _first_real(gan: Any, real: Any) -> Any:
    # The first D update's batch: images, or an (images, labels) pair of a conditional GAN.
    return real if getattr(gan, "n_critic", 1) == 1 else tree_map(lambda t: t[0], real)


def _images(real: Any) -> Tensor:
    return real[0] if isinstance(real, (tuple, list)) else real


def _keys_msg(which: str, grads: dict, params: dict) -> str | None:
    if set(grads) == set(params):
        for k, g in grads.items():
            if tuple(g.shape) != tuple(params[k].shape):
                return (f"{which}: gradient for {k!r} has shape {tuple(g.shape)} but the parameter has "
                        f"{tuple(params[k].shape)}")
        return None
    extra, missing = sorted(set(grads) - set(params)), sorted(set(params) - set(grads))
    return (f"{which} must return gradients over exactly its own network's parameters: "
            f"extra keys {extra[:6]}, missing keys {missing[:6]}")


def assert_grads_isolated(gan: Any, state: Any, real: Tensor, noise: Any) -> None:
    """Assert that D's step never moves G and G's step never moves D.

    ``noise`` is ``gan.draw_noise(rng, B)``. Checks: ``gan.d_grads`` returns
    gradients with exactly ``state.d.params``' keys and ``gan.d_update`` leaves
    G's parameters and optimizer state and the G-side parts' states (the EMA)
    bit-identical; ``gan.g_grads`` returns exactly ``state.g.params``' keys and
    ``gan.g_update`` leaves D's parameters, optimizer state and the D-side
    parts' states (spectral-norm vectors, replay buffer) bit-identical; no ``.grad`` appears on the GAN's modules. This
    is the classic accumulation bug (G's backward leaving gradients on D, the next D
    step applying them) stated as a property.
    """
    from ganfn.tree import tree_index

    mods = _modules_of(gan)
    before = _grads_of(mods)
    loss, grads, aux = gan.d_grads(state, _first_real(gan, real), tree_index(noise.d, 0))
    msg = _keys_msg("d_grads", grads, state.d.params)
    if msg:
        raise AssertionError(msg)
    new = gan.d_update(state, grads, aux)
    parts = getattr(gan, "parts", ())
    g_side = [p.name for p in parts if p.after_g is not None and p.after_d is None and p.name in state.parts]
    d_side = [p.name for p in parts if p.after_d is not None and p.after_g is None and p.name in state.parts]
    for f, x, y in [("g.params", state.g.params, new.g.params), ("g.opt", state.g.opt, new.g.opt),
                    *((f"parts[{n!r}]", state.parts[n], new.parts[n]) for n in g_side)]:
        try:
            assert_trees_equal(x, y, f"G's {f}", root=f)
        except AssertionError as e:
            raise AssertionError(f"a D update moved the generator: {e}") from None
    loss, grads, aux = gan.g_grads(state, tree_index(noise.g, 0))
    msg = _keys_msg("g_grads", grads, state.g.params)
    if msg:
        raise AssertionError(msg)
    new = gan.g_update(state, grads, aux)
    for f, x, y in [("d.params", state.d.params, new.d.params), ("d.opt", state.d.opt, new.d.opt),
                    *((f"parts[{n!r}]", state.parts[n], new.parts[n]) for n in d_side)]:
        try:
            assert_trees_equal(x, y, f"D's {f}", root=f)
        except AssertionError as e:
            raise AssertionError(f"a G update moved the discriminator: {e}") from None
    after = _grads_of(mods)
    for k, g in after.items():
        if (before[k] is None) != (g is None):
            raise AssertionError(f"the GAN's steps wrote .grad on the module parameter {k}")


# -- accumulation ---------------------------------------------------------------------------------


def _with_accumulation(gan: Any, k: int) -> Any:
    if hasattr(gan, "replace"):
        return gan.replace(accumulation_steps=k)
    # GAN holds no training tensors: a shallow copy with one field changed is
    # the same setup with a different micro-batch count.
    g = copy.copy(gan)
    g.accumulation_steps = k
    return g


def assert_accumulation_equivalent(gan: Any, state: Any, batch: Tensor, k: int, *, noise: Any = None,
                                   rng: torch.Generator | None = None, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """Assert that ``k`` micro-batches give the same losses and gradients as one full batch.

    Builds the same GAN with ``accumulation_steps=k`` and with
    ``accumulation_steps=1`` and compares ``d_grads`` (on ``batch``, or
    ``batch[0]`` with ``n_critic > 1``), ``g_grads`` and ``train_step``'s D loss
    and gradient norm. ``noise`` defaults to ``gan.draw_noise(rng, B)`` with
    ``rng`` seeded 0. It holds for losses that are means over samples and
    per-sample penalties, not for discriminators with batch normalisation.
    """
    from ganfn.tree import tree_index

    real = _first_real(gan, batch)
    B = _images(real).shape[0]
    if k < 1 or B % k:
        raise ValueError(f"batch size {B} must be divisible by k={k}")
    if noise is None:
        noise = gan.draw_noise(rng if rng is not None else torch.Generator().manual_seed(0), B)
    full, acc = _with_accumulation(gan, 1), _with_accumulation(gan, k)
    nd, ng = tree_index(noise.d, 0), tree_index(noise.g, 0)
    lf, gf, _ = full.d_grads(state, real, nd)
    la, ga, _ = acc.d_grads(state, real, nd)
    tol = dict(rtol=rtol, atol=atol)
    try:
        assert_trees_close(lf, la, "D loss", **tol, root="d_loss")
        assert_trees_close(gf, ga, "D gradients", **tol, root="d_grads")
        lf, gf, _ = full.g_grads(state, ng)
        la, ga, _ = acc.g_grads(state, ng)
        assert_trees_close(lf, la, "G loss", **tol, root="g_loss")
        assert_trees_close(gf, ga, "G gradients", **tol, root="g_grads")
        # Through train_step too. Only the first D update's metrics are compared:
        # later values pass through an optimizer step, and Adam maps a gradient
        # that is ~0 up to float rounding to a full-size step of arbitrary sign.
        _, mf = full.train_step(state, batch, noise)
        _, ma = acc.train_step(state, batch, noise)
        keys = [k for k in ("d_loss", "d_grad_norm") if k in mf] if getattr(gan, "n_critic", 1) == 1 else []
        assert_trees_close({k: mf[k] for k in keys}, {k: ma[k] for k in keys}, "train_step metrics", **tol,
                           root="metrics")
    except AssertionError as e:
        raise AssertionError(f"{k} accumulated micro-batches of {B // k} are not equivalent to one batch of {B}: "
                             f"{e}") from None


# -- vmap --------------------------------------------------------------------------------------


def _default_data(gan: Any) -> Callable[[int, torch.Generator], Any]:
    k = getattr(gan, "num_classes", None)

    def data(n: int, g: torch.Generator) -> Any:
        x = torch.randn(n, *gan.sample_shape, generator=g)
        return x if k is None else (x, torch.randint(k, (n,), generator=g))  # labelled for a conditional GAN

    return data


def single_and_vmapped_runs(gan: Any, seeds: Sequence[int], steps: int, *, batch_size: int,
                            data: Callable[[int, torch.Generator], Any] | None = None,
                            hparams: Sequence[dict[str, Any]] | None = None,
                            ) -> tuple[list[Any], list[list[dict]], list[Any], list[dict]]:
    """Each member run alone and all of them as one ``torch.func.vmap``-ed run, on the same inputs.

    Member ``i`` is ``gan.init(seeds[i], **hparams[i])``; its noise comes from a
    generator seeded ``seeds[i]`` and its data from ``data(n, generator)`` (a
    standard normal batch by default, with uniform labels for a conditional
    GAN) with a generator seeded ``seeds[i] + 1``. Returns ``(single states,
    single metrics [member][step], vmapped states unstacked, vmapped metrics
    [step], each value [S])`` after ``steps`` steps.
    """
    seeds = list(seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    data = data or _default_data(gan)
    hps = list(hparams) if hparams is not None else [{}] * len(seeds)
    nc = getattr(gan, "n_critic", 1)
    states = [gan.init(s, **h) for s, h in zip(seeds, hps, strict=True)]
    noise_rngs = [torch.Generator().manual_seed(s) for s in seeds]
    data_rngs = [torch.Generator().manual_seed(s + 1) for s in seeds]
    inputs = []  # [step][member] -> (real, noise)
    for _ in range(steps):
        row = []
        for nr, dr in zip(noise_rngs, data_rngs, strict=True):
            real = data(nc * batch_size, dr)
            real = real if nc == 1 else tree_map(lambda t: t.reshape(nc, batch_size, *t.shape[1:]), real)
            row.append((real, gan.draw_noise(nr, batch_size)))
        inputs.append(row)
    singles, single_metrics = [], []
    for i, st in enumerate(states):
        ms = []
        for t in range(steps):
            st, m = gan.train_step(st, *inputs[t][i])
            ms.append(m)
        singles.append(st)
        single_metrics.append(ms)
    stacked = stack(states)
    vstep = torch.func.vmap(gan.train_step)
    vmapped_metrics = []
    for row in inputs:
        real = tree_map(lambda *ts: torch.stack(ts), *[r for r, _ in row])
        stacked, m = vstep(stacked, real, stack([n for _, n in row]))
        vmapped_metrics.append(m)
    return singles, single_metrics, unstack(stacked), vmapped_metrics


def assert_vmap_equivalent(gan: Any, seeds: Sequence[int], steps: int = 2, *, batch_size: int = 8,
                           data: Callable[[int, torch.Generator], Tensor] | None = None,
                           hparams: Sequence[dict[str, Any]] | None = None,
                           rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Assert that ``torch.func.vmap(gan.train_step)`` over stacked states equals
    running each member alone.

    Member ``i`` is ``gan.init(seeds[i], **hparams[i])``; its noise comes from a
    generator seeded ``seeds[i]`` and its data from ``data(n, generator)`` (a
    standard normal batch by default, with uniform labels for a conditional
    GAN) with a generator seeded ``seeds[i] + 1``.
    Both runs take ``steps`` steps on the same inputs; final states and every
    step's metrics are compared.
    """
    seeds = list(seeds)
    singles, single_metrics, vmapped, vmapped_metrics = single_and_vmapped_runs(
        gan, seeds, steps, batch_size=batch_size, data=data, hparams=hparams)
    for t, m in enumerate(vmapped_metrics):
        for i in range(len(seeds)):
            try:
                assert_trees_close(single_metrics[i][t], {k: v[i] for k, v in m.items()}, "metrics", rtol=rtol,
                                   atol=atol, root="metrics")
            except AssertionError as e:
                raise AssertionError(f"vmapped step {t + 1} differs from the single run of member {i} (seed "
                                     f"{seeds[i]}): {e}") from None
    for i, st in enumerate(vmapped):
        try:
            assert_trees_close(singles[i], st, "states", rtol=rtol, atol=atol, root="state")
        except AssertionError as e:
            raise AssertionError(f"after {steps} vmapped steps member {i} (seed {seeds[i]}) differs from its single "
                                 f"run: {e}") from None
