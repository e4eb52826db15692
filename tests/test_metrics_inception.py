"""Inception-v3 loader: never downloads, weights_only loading, checksum, forward shapes."""

import hashlib
import pickle

import pytest
import torch
import torchvision

import ganfn.metrics as M
from ganfn.metrics import inception as I

torch.set_num_threads(1)


def _save_random_inception(path, num_classes=1000, aux=True):
    net = torchvision.models.inception_v3(
        weights=None, aux_logits=aux, init_weights=False, num_classes=num_classes
    )
    torch.save(net.state_dict(), path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inc") / "inception_v3_random.pth"
    return path, _save_random_inception(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not download"):
        M.inception_extractor(tmp_path / "nope.pth")


def test_wrong_checksum_is_rejected(weights):
    path, digest = weights
    wrong = ("0" if digest[0] != "0" else "1") + digest[1:]
    with pytest.raises(M.WeightsChecksumError, match="expected"):
        M.inception_extractor(path, sha256=wrong)
    with pytest.raises(M.WeightsChecksumError):
        M.inception_extractor(path, sha256=wrong[:8])
    with pytest.raises(ValueError, match="hex"):
        M.inception_extractor(path, sha256="xyz")


def test_loads_and_extracts_pool3_and_probs(weights):
    path, digest = weights
    ext = M.inception_extractor(path, sha256=digest[:8])  # torch.hub-style prefix is accepted
    assert ext.kind == "inception" and M.metric_names(ext)["fd"] == "FID"
    g = torch.Generator().manual_seed(0)
    out = ext(torch.rand(2, 1, 32, 32, generator=g) * 2 - 1)
    assert out.features.shape == (2, 2048) and out.probs.shape == (2, 1000)
    assert torch.allclose(out.probs.sum(1), torch.ones(2), atol=1e-5)
    assert torch.isfinite(out.features).all()
    # The loaded weights really are the file's (not a fresh init).
    sd = torch.load(path, weights_only=True)
    assert torch.equal(ext.fc.weight, sd["fc.weight"])


def test_fid_variant_pooling_for_1008_classes(tmp_path):
    path = tmp_path / "pt_inception_like.pth"
    _save_random_inception(path, num_classes=1008, aux=False)
    x = torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fid = M.inception_extractor(path)  # 1008 classes -> FID-network pooling by default
    plain = M.inception_extractor(path, fid_variant=False)
    a, b = fid(x), plain(x)
    assert a.probs.shape == (2, 1008)
    assert not torch.allclose(a.features, b.features)


def test_refuses_pickled_code_and_non_inception_files(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed!",))

    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"fc.weight": Evil()}, f, protocol=2)
    with pytest.raises(pickle.UnpicklingError):
        I.load_inception_state_dict(evil)
    other = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(1)}, other)
    with pytest.raises(ValueError, match="fc.weight"):
        M.inception_extractor(other)


def test_strict_loading_of_truncated_state_dict(tmp_path, weights):
    path, _ = weights
    sd = torch.load(path, weights_only=True)
    sd.pop("Mixed_7c.branch_pool.conv.weight")
    cut = tmp_path / "cut.pth"
    torch.save(sd, cut)
    with pytest.raises(RuntimeError, match="Missing key"):
        M.inception_extractor(cut)
    with pytest.warns(UserWarning, match="missing"):
        M.inception_extractor(cut, strict=False)
