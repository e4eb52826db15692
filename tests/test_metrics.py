"""Math of ganfn.metrics: Fréchet distance, KID, IS, precision/recall, modes, stacking."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ganfn.metrics as M
from ganfn.metrics.kid import mmd2_unbiased
from ganfn.metrics.modes import sample_mixture

torch.set_num_threads(1)
FEW = settings(max_examples=15, deadline=None)


def random_orthogonal(d: int, g: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))


def exact_gaussian_sample(mu: torch.Tensor, cov: torch.Tensor, n: int, g: torch.Generator) -> torch.Tensor:
    """n points whose sample mean and unbiased sample covariance are exactly mu, cov."""
    d = mu.shape[0]
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    z = z - z.mean(0)
    lz = torch.linalg.cholesky(z.T @ z / (n - 1))
    z = torch.linalg.solve_triangular(lz, z.T, upper=False).T  # now identity covariance
    return z @ torch.linalg.cholesky(cov).T + mu


spectra = st.integers(1, 12).flatmap(
    lambda d: st.tuples(
        st.just(d),
        st.lists(st.floats(1e-3, 1e2), min_size=d, max_size=d),
        st.lists(st.floats(1e-3, 1e2), min_size=d, max_size=d),
        st.integers(0, 2**31 - 1),
    )
)


# ------------------------------------------------------------------ Fréchet distance


@FEW
@given(spectra)
def test_frechet_closed_form_commuting_covariances(case):
    # S1 = Q diag(a) Q^T, S2 = Q diag(b) Q^T commute, so tr((S1 S2)^1/2) = sum sqrt(a b)
    # and FD = |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
    d, a, b, seed = case
    g = torch.Generator().manual_seed(seed)
    q = random_orthogonal(d, g)
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    s1, s2 = q @ torch.diag(a) @ q.T, q @ torch.diag(b) @ q.T
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    got = M.frechet_distance_from_stats(mu1, s1, mu2, s2)
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6 * float(a.sum() + b.sum()))


@FEW
@given(spectra)
def test_frechet_on_features_equals_closed_form(case):
    # Feature sets whose sample mean / covariance are exactly the Gaussians' parameters.
    d, a, b, seed = case
    g = torch.Generator().manual_seed(seed)
    q = random_orthogonal(d, g)
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), 3 * torch.randn(d, generator=g, dtype=torch.float64)
    x = exact_gaussian_sample(mu1, q @ torch.diag(a) @ q.T, 4 * d + 10, g)
    y = exact_gaussian_sample(mu2, q @ torch.diag(b) @ q.T, 3 * d + 7, g)
    expected = ((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum()
    assert torch.allclose(M.frechet_distance(x, y), expected, rtol=1e-6, atol=1e-6 * float(a.sum() + b.sum()))


def scipy_frechet(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean.real))


@FEW
@given(st.integers(1, 40), st.integers(0, 2**31 - 1))
def test_frechet_matches_scipy_sqrtm_on_random_spd(d, seed):
    rng = np.random.default_rng(seed)
    a1, a2 = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a1 @ a1.T + 0.1 * np.eye(d), a2 @ a2.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    expected = scipy_frechet(mu1, s1, mu2, s2)
    got = M.frechet_distance_from_stats(*(torch.from_numpy(t) for t in (mu1, s1, mu2, s2)))
    assert math.isclose(float(got), expected, rel_tol=1e-6, abs_tol=1e-6 * (np.trace(s1) + np.trace(s2)))


@FEW
@given(st.integers(1, 10), st.integers(2, 60), st.integers(2, 60), st.integers(0, 2**31 - 1))
def test_frechet_zero_on_identical_and_symmetric(d, n, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g) * torch.rand(d, generator=g) * 5
    y = torch.randn(m, d, generator=g) + 1
    scale = float(x.var(0).sum() + y.var(0).sum() + 1)
    assert float(M.frechet_distance(x, x)) <= 1e-9 * scale
    assert math.isclose(float(M.frechet_distance(x, y)), float(M.frechet_distance(y, x)), rel_tol=1e-8,
                        abs_tol=1e-9 * scale)
    assert float(M.frechet_distance(x, y)) > 0


def test_frechet_singular_covariance_no_nan():
    # Fewer samples than dimensions: rank-deficient covariances must not give NaN.
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 30, generator=g), torch.randn(6, 30, generator=g)
    fd = M.frechet_distance(x, y)
    assert torch.isfinite(fd) and fd > 0
    assert fd.dtype == torch.float64


@pytest.mark.parametrize(
    "x, y, match",
    [
        (torch.randn(10), torch.randn(10, 1), "2-D"),
        (torch.randn(10, 3), torch.randn(10, 4), "dimensions differ"),
        (torch.randn(1, 3), torch.randn(10, 3), "at least 2"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), torch.randn(4, 2), "NaN"),
    ],
)
def test_frechet_errors(x, y, match):
    with pytest.raises(ValueError, match=match):
        M.frechet_distance(x, y)


def test_frechet_from_stats_shape_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        M.frechet_distance_from_stats(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))


# ------------------------------------------------------------------ KID


def test_kid_unbiased_same_distribution():
    # Mean over many independent resamples of one distribution is ~0 within a few
    # standard errors. The biased (V-statistic) estimator would sit far above.
    g = torch.Generator().manual_seed(1)
    est = torch.stack(
        [mmd2_unbiased(torch.randn(30, 6, generator=g, dtype=torch.float64),
                       torch.randn(30, 6, generator=g, dtype=torch.float64)) for _ in range(400)]
    )
    se = est.std() / math.sqrt(len(est))
    assert abs(float(est.mean())) < 4 * float(se)
    # ...and it does detect a difference of distributions (so the test can fail).
    shifted = torch.stack(
        [mmd2_unbiased(torch.randn(30, 6, generator=g, dtype=torch.float64),
                       0.5 + torch.randn(30, 6, generator=g, dtype=torch.float64)) for _ in range(50)]
    )
    assert float(shifted.mean()) > 4 * float(shifted.std() / math.sqrt(50))


def test_kid_public_api_reproducible_and_no_global_rng():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 8, generator=g), torch.randn(200, 8, generator=g)
    state = torch.get_rng_state()
    m1, s1 = M.kernel_inception_distance(x, y, subsets=20, subset_size=100)
    assert torch.equal(torch.get_rng_state(), state)
    m2, s2 = M.kernel_inception_distance(x, y, subsets=20, subset_size=100)
    assert m1 == m2 and s1 == s2 and s1 > 0
    m3, _ = M.kernel_inception_distance(x, y, subsets=20, subset_size=100, generator=torch.Generator().manual_seed(5))
    assert m3 != m1
    assert abs(float(m1)) < 5 * float(s1)
    far, _ = M.kernel_inception_distance(x, y + 1, subsets=20, subset_size=100)
    assert far > 10 * abs(m1)


def test_kid_uses_at_most_the_available_samples():
    x, y = torch.randn(20, 4), torch.randn(15, 4)
    mean, std = M.kernel_inception_distance(x, y, subsets=3, subset_size=1000)
    assert torch.isfinite(mean) and torch.isfinite(std)


# ------------------------------------------------------------------ Inception score


@FEW
@given(st.integers(2, 30), st.integers(1, 5))
def test_inception_score_uniform_confident_equals_k(k, reps):
    probs = torch.eye(k).repeat(reps, 1)
    mean, std = M.inception_score(probs)
    assert math.isclose(float(mean), k, rel_tol=1e-12)
    assert float(std) == 0.0


@FEW
@given(st.integers(2, 30), st.integers(1, 50))
def test_inception_score_constant_prediction_is_one(k, n):
    p = torch.softmax(torch.randn(k), 0)
    mean, _ = M.inception_score(p.expand(n, k).clone())
    assert math.isclose(float(mean), 1.0, rel_tol=1e-12)


def test_inception_score_splits_and_half_collapse():
    # Half the samples on class 0, the rest spread over 4 others: p(y) = (1/2, 1/8 x 4),
    # KL for class-0 rows = log 2, for the others log 8 -> IS = exp((log 2 + log 8)/2) = 4.
    probs = torch.cat([torch.eye(5)[[0] * 4], torch.eye(5)[1:]])
    assert math.isclose(float(M.inception_score(probs)[0]), 4.0, rel_tol=1e-12)
    mean, std = M.inception_score(torch.eye(4).repeat(6, 1), splits=3)
    assert math.isclose(float(mean), 4.0, rel_tol=1e-12) and float(std) < 1e-12
    with pytest.raises(ValueError, match="sum to 1"):
        M.inception_score(torch.randn(10, 3))


# ------------------------------------------------------------------ precision / recall


def test_precision_recall_extremes():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(200, 3, generator=g)
    p, r = M.precision_recall(real, real.clone())
    assert float(p) == 1.0 and float(r) == 1.0
    p, r = M.precision_recall(real, real + 100)
    assert float(p) == 0.0 and float(r) == 0.0
    # Half the fakes are real points, half far away: precision exactly 1/2.
    fake = torch.cat([real[:100], real[:100] + 100])
    p, _ = M.precision_recall(real, fake)
    assert float(p) == 0.5


def test_precision_recall_collapse_lowers_recall_not_precision():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(400, 2, generator=g)
    fake = 0.1 * torch.randn(400, 2, generator=g)  # a collapsed generator near the mode
    p, r = M.precision_recall(real, fake)
    assert float(p) > 0.95 and float(r) < 0.3


# ------------------------------------------------------------------ modes


def test_conventional_centres():
    ring = M.ring8_centers()
    assert ring.shape == (8, 2)
    assert torch.allclose(ring.norm(dim=1), torch.full((8,), 2.0))
    assert torch.allclose(ring[0], torch.tensor([2.0, 0.0]))
    assert torch.allclose(ring[2], torch.tensor([0.0, 2.0]), atol=1e-6)
    grid = M.grid25_centers()
    assert grid.shape == (25, 2)
    assert sorted(set(grid[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in grid.tolist()}) == 25
    assert M.RING8_STD == 0.02 and M.GRID25_STD == 0.05


def test_mode_coverage_hand_built_exact_counts():
    c = M.ring8_centers(torch.float64)
    std = M.RING8_STD
    off = torch.tensor([1.0, 0.0], dtype=torch.float64)
    samples = torch.cat(
        [
            c[0].expand(6, 2),  # 6 exactly on mode 0
            c[1] + 2.9 * std * off.expand(3, 2),  # 3 just inside 3 std of mode 1
            c[2].expand(1, 2),  # 1 on mode 2 (below min_count=2)
            c[3] + 3.1 * std * off.expand(4, 2),  # 4 just outside 3 std of mode 3
            torch.zeros(6, 2, dtype=torch.float64),  # 6 at the origin, far from all modes
        ]
    )
    res = M.mode_coverage(samples, c, std, min_count=2)
    assert res.counts.tolist() == [6, 3, 1, 0, 0, 0, 0, 0]
    assert int(res.modes) == 2  # modes 0 and 1 reach 2 samples
    assert math.isclose(float(res.high_quality), 10 / 20)
    h = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    assert math.isclose(float(res.kl), float((h * (h * 8).log()).sum()), rel_tol=1e-12)
    # Default threshold: ceil(0.2 * 20 / 8) = 1 sample -> modes 0, 1, 2.
    assert int(M.mode_coverage(samples, c, std).modes) == 3


def test_mode_coverage_data_vs_collapse():
    c, std = M.ring8_centers(), M.RING8_STD
    g = torch.Generator().manual_seed(0)
    data = sample_mixture(c, std, 4000, g)
    res = M.mode_coverage(data, c, std)
    assert int(res.modes) == 8 and float(res.high_quality) > 0.97 and float(res.kl) < 0.01
    collapsed = sample_mixture(c, std, 4000, g, modes=torch.zeros(4000, dtype=torch.long))
    res = M.mode_coverage(collapsed, c, std)
    assert int(res.modes) == 1 and math.isclose(float(res.kl), math.log(8), rel_tol=1e-9)
    nothing = M.mode_coverage(torch.full((10, 2), 50.0), c, std)
    assert int(nothing.modes) == 0 and float(nothing.high_quality) == 0 and math.isnan(float(nothing.kl))


def test_mode_coverage_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        M.mode_coverage(torch.full((3, 2), float("nan")), M.ring8_centers(), M.RING8_STD)


# ------------------------------------------------------------------ stacked evaluation


def test_stacked_metrics_match_per_member():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(120, 5, generator=g)
    fake = torch.stack([torch.randn(80, 5, generator=g) + s for s in (0.0, 0.5, 2.0)])
    fd = M.stacked_frechet_distance(fake, real)
    expected = torch.stack([M.frechet_distance(f, real) for f in fake])
    assert torch.allclose(fd, expected, rtol=1e-10)
    assert fd[0] < fd[1] < fd[2]
    kid, kid_std = M.stacked_kernel_inception_distance(fake, real, subsets=5, subset_size=50)
    for i, f in enumerate(fake):
        m, s = M.kernel_inception_distance(f, real, subsets=5, subset_size=50)
        assert torch.allclose(kid[i], m) and torch.allclose(kid_std[i], s)


def test_stacked_mode_coverage_matches_per_member():
    c, std = M.ring8_centers(), M.RING8_STD
    g = torch.Generator().manual_seed(0)
    data = sample_mixture(c, std, 500, g)
    collapsed = sample_mixture(c, std, 500, g, modes=torch.full((500,), 3))
    res = M.stacked_mode_coverage(torch.stack([data, collapsed]), c, std)
    for i, s in enumerate((data, collapsed)):
        one = M.mode_coverage(s, c, std)
        assert int(res.modes[i]) == int(one.modes)
        assert torch.equal(res.counts[i], one.counts)
        assert torch.allclose(res.kl[i], one.kl) and torch.allclose(res.high_quality[i], one.high_quality)


def test_evaluate_names_are_honest():
    ext = M.FunctionExtractor(lambda im: (im.flatten(1), torch.softmax(im.flatten(1), 1)), name="Toy")
    g = torch.Generator().manual_seed(0)
    real, fake = torch.rand(40, 1, 2, 2, generator=g), torch.rand(30, 1, 2, 2, generator=g)
    out = M.evaluate_images(fake, real, ext, kid_subsets=3, kid_subset_size=20)
    assert set(out) == {"FD-Toy", "KID-Toy", "KID-Toy-std", "CS-Toy", "n"}
    assert out["n"] == 30
    stacked = M.evaluate_stacked_images(torch.stack([fake, fake]), real, ext, kid_subsets=3, kid_subset_size=20)
    assert math.isclose(float(stacked["FD-Toy"][1]), out["FD-Toy"], rel_tol=1e-9)
    assert math.isclose(float(stacked["CS-Toy"][0]), out["CS-Toy"], rel_tol=1e-9)
    ext.kind = "inception"
    assert M.metric_names(ext) == {"fd": "FID", "kid": "KID", "score": "IS"}
