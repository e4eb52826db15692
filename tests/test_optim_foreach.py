"""The eager foreach fast path of ganfn.optim gives the per-leaf path's numbers bit for bit."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ganfn import optim

torch.set_num_threads(1)


def _tree(gen: torch.Generator, shapes, dtype):
    return {f"w{i}": torch.randn(tuple(s), generator=gen, dtype=dtype) for i, s in enumerate(shapes)}


@settings(deadline=None, max_examples=12)
@given(
    shapes=st.lists(st.lists(st.integers(1, 5), min_size=1, max_size=3), min_size=1, max_size=4),
    seed=st.integers(0, 2**16),
    decoupled=st.booleans(),
    wd=st.sampled_from([0.0, 0.1]),
    lr=st.floats(1e-4, 1e-1),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    start=st.integers(0, 10**6),
)
def test_adam_foreach_equals_per_leaf(shapes, seed, decoupled, wd, lr, dtype, start) -> None:
    # float32/float64 on the CPU take the Python-float coefficients and addcdiv;
    # bfloat16 the tensor coefficients; ``start`` sets the bias corrections' t.
    if dtype == torch.bfloat16:
        lr = max(lr, 0.05)  # bf16 keeps 8 bits: a smaller Adam step of a unit weight rounds away
    gen = torch.Generator().manual_seed(seed)
    opt = (optim.adamw if decoupled else optim.adam)(lr, (0.5, 0.999), weight_decay=wd,
                                                     schedule=optim.linear_decay(2 * 10**6, end=0.5))
    params = _tree(gen, shapes, dtype)
    grads = [_tree(gen, shapes, dtype) for _ in range(3)]
    results = {}
    for fe in (True, False):
        optim.FOREACH = fe
        try:
            p, s = params, opt.init(params)
            s = {**s, "count": torch.tensor(start)}
            for g in grads:
                p, s = opt.update(g, s, p)
        finally:
            optim.FOREACH = True
        results[fe] = (p, s)
    (pa, sa), (pb, sb) = results[True], results[False]
    moved = False
    for k in params:
        assert torch.equal(pa[k], pb[k]), k
        assert torch.equal(sa["mu"][k], sb["mu"][k]) and torch.equal(sa["nu"][k], sb["nu"][k]), k
        moved |= not torch.equal(pa[k], params[k])
    assert moved


def test_foreach_leaves_inputs_untouched() -> None:
    gen = torch.Generator().manual_seed(0)
    opt = optim.adam(1e-2)
    params, grads = _tree(gen, [(3, 4), (4,)], torch.float32), _tree(gen, [(3, 4), (4,)], torch.float32)
    state = opt.init(params)
    copies = [{k: v.clone() for k, v in t.items()} for t in (params, grads, state["mu"], state["nu"])]
    opt.update(grads, state, params)
    for orig, copy in zip((params, grads, state["mu"], state["nu"]), copies, strict=True):
        for k in orig:
            assert torch.equal(orig[k], copy[k])


@settings(deadline=None, max_examples=30)
@given(values=st.lists(st.sampled_from([0.0, -0.0, 1.0, -2.5, 1e-300, float("inf"), float("-inf"), float("nan")])
                       | st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=6),
       members=st.integers(0, 3))
def test_computed_once_keeps_every_value(values, members):
    # 0-d scalars, or [S] ones as under vmap; NaN, infinities and -0.0 included.
    shape = () if members == 0 else (members,)
    scalars = {f"c{i}": torch.full(shape, v, dtype=torch.float64) for i, v in enumerate(values)}
    out = optim._computed_once(scalars)
    assert list(out) == list(scalars)
    for k, v in scalars.items():
        assert out[k].shape == v.shape
        nan = v.isnan()
        assert torch.equal(out[k].isnan(), nan), k  # a NaN stays NaN (its payload may change)
        assert torch.equal(out[k][~nan].view(torch.int64), v[~nan].view(torch.int64)), k  # the bits: -0.0 stays -0.0


@pytest.mark.slow
def test_compiled_adam_computes_its_bias_corrections_once():
    # Inductor inlines cheap 0-d math into every kernel that reads it; Adam's
    # bias corrections (float64 pow) then ran once per vector of every leaf.
    # With _computed_once no vectorised loop of the generated C++ calls pow,
    # and the compiled update still equals the eager one.
    import re

    from torch._inductor.utils import run_and_get_code

    gen = torch.Generator().manual_seed(0)
    params = _tree(gen, [(64, 33)] * 3, torch.float32)
    grads = _tree(gen, [(64, 33)] * 3, torch.float32)
    opt = optim.adam(1e-2)
    state = {**opt.init(params), "count": torch.tensor(7)}
    torch._dynamo.reset()
    (new, _), code = run_and_get_code(torch.compile(opt.update, fullgraph=True), grads, state, params)
    eager, _ = opt.update(grads, state, params)
    for k in params:
        torch.testing.assert_close(new[k], eager[k], rtol=1e-6, atol=1e-7)
    code = "".join(code)
    loops = re.split(r"for\(", code)[1:]
    vector_loops = [c for c in loops if "Vectorized<float>::loadu" in c]
    assert vector_loops and "std::pow" in code  # the check sees the update's loops and its pow at all
    assert not [c for c in vector_loops if "std::pow" in c]
