"""TensorBoard logging read back with tensorboard's own event reader; picture helpers."""
import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import ganfn
from ganfn import data, models
from ganfn import tensorboard as tb
from ganfn.loop import Evaluator, fit

torch.set_num_threads(1)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 20), c=st.sampled_from([1, 3]), h=st.integers(1, 5), w=st.integers(1, 5),
       cols=st.one_of(st.none(), st.integers(1, 6)))
def test_image_grid_places_each_image(n, c, h, w, cols):
    imgs = torch.rand(n, c, h, w) * 2 - 1
    grid = tb.image_grid(imgs, cols)
    ncol = cols or math.ceil(math.sqrt(n))
    nrow = math.ceil(n / ncol)
    assert grid.shape == (c, nrow * h, ncol * w)
    for i in range(n):
        r, q = divmod(i, ncol)
        assert torch.allclose(grid[:, r * h:(r + 1) * h, q * w:(q + 1) * w], (imgs[i] + 1) / 2)
    assert grid.min() >= 0 and grid.max() <= 1
    padded = tb.image_grid(imgs, cols, pad=1, pad_value=1.0)
    assert padded.shape == (c, nrow * (h + 2), ncol * (w + 2))
    assert torch.allclose(padded[:, 1:h + 1, 1:w + 1], (imgs[0] + 1) / 2) and bool((padded[:, 0, :] == 1).all())


def test_scatter_and_curve_images():
    pts = data.ring8(200, torch.Generator().manual_seed(0))
    img = tb.scatter_image(pts, reference=data.ring8_centers(), size=100)
    assert img.shape == (3, 100, 100) and (img < 1).any()
    cur = tb.curve_image({"d": [(0, 1.0), (10, float("nan")), (20, 0.5)], "g": [(0, 2.0)]})
    assert cur.shape[0] == 3 and (cur < 1).any()


def _tags(path):
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return acc


def test_stacked_run_writes_one_tensorboard_run_per_member(tmp_path):
    G, D, latent = models.build("mlp", (2,), hidden=16, depth=1)
    gan = ganfn.GAN(G, D, latent_dim=latent, parts=[ganfn.penalties.r1()])
    ev = Evaluator(lambda s: {"spread": float(s.std())}, "spread", n_samples=64, reference=data.ring8_centers())
    fit(gan, data.ring8, steps=4, batch_size=16, seeds=[0, 1], hparams=[{"lr_d": 1e-4}, {"lr_d": 1e-3}],
        run_dir=tmp_path, log_every=1, image_every=2, eval_every=2, evaluator=ev, progress=False,
        print_fn=lambda s: None)
    dirs = sorted(p.name for p in (tmp_path / "tb").iterdir())
    assert dirs == ["member_00", "member_01"]
    accs = [_tags(tmp_path / "tb" / d) for d in dirs]
    want = {"train/d_loss", "train/g_loss", "train/d_loss_real", "train/d_loss_fake", "train/penalty",
            "train/d_acc_real", "train/d_acc_fake", "train/d_grad_norm", "train/g_grad_norm", "train/lr_d",
            "train/lr_g",
            "quality/spread"}
    for acc in accs:
        tags = acc.Tags()
        assert want <= set(tags["scalars"]), want - set(tags["scalars"])
        assert [e.step for e in acc.Scalars("train/d_loss")] == [1, 2, 3, 4]
        assert "samples" in tags["images"]
        assert [e.step for e in acc.Images("samples")] == [2, 4]
    # Each member's own learning rate landed in its own run.
    lrs = [acc.Scalars("train/lr_d")[0].value for acc in accs]
    assert math.isclose(lrs[0], 1e-4, rel_tol=1e-6) and math.isclose(lrs[1], 1e-3, rel_tol=1e-6)
    # add_hparams recorded per member (its plugin data sits in the member's run).
    for d in dirs:
        acc = EventAccumulator(str(tmp_path / "tb" / d))
        acc.Reload()
        assert acc.PluginTagToContent("hparams")  # raises KeyError when add_hparams wrote nothing here
