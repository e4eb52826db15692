"""ganfn.data.roots (one variable moves every default data root) and the suite's guard against system data."""
import re
from pathlib import Path

import pytest

from ganfn import data
from ganfn.data import roots
from ganfn.metrics import lenet


def test_defaults_are_where_each_source_installs_itself(monkeypatch):
    monkeypatch.delenv(roots.ENV, raising=False)
    assert roots.data_root() is None
    assert roots.fashion_mnist_root() == Path("/usr/share/datasets/fashion-mnist")
    assert roots.torchvision_root() == Path("data") and roots.mnist5k_file() is None


def test_the_variable_moves_every_default_under_one_folder(monkeypatch, tmp_path):
    monkeypatch.setenv(roots.ENV, str(tmp_path))
    assert roots.fashion_mnist_root() == tmp_path / "fashion-mnist"
    assert roots.torchvision_root() == tmp_path and roots.mnist5k_file() == tmp_path / "mnist_5k.csv.gz"
    # Every loader's default follows it, and the error names the folder it looked in.
    for load in (data.fashion_mnist, lambda: data.torchvision_dataset("mnist"), data.mnist5k,
                 lambda: lenet.fashion_mnist_split("train"), lambda: data.load("cifar10")):
        with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path))):
            load()


def test_data_from_the_variable_is_read_and_cached_apart(monkeypatch, fake_data_root, tmp_path):
    monkeypatch.setenv(roots.ENV, str(fake_data_root))
    assert data.load("fashion_mnist", split="test").shape == (40, 1, 28, 28)
    here = lenet.cache_path("fashion-mnist", cache_dir=tmp_path)
    monkeypatch.delenv(roots.ENV)
    debian = lenet.cache_path("fashion-mnist", cache_dir=tmp_path)
    assert here != debian  # a LeNet trained on other files never stands in for Debian's
    assert lenet.cache_path("fashion-mnist", cache_dir=tmp_path, root=fake_data_root / "fashion-mnist") == here


def test_an_unmarked_test_cannot_reach_installed_data(tmp_path):
    # The suite's fixture (tests/conftest.py) has pointed the variable at an empty folder.
    assert roots.data_root() is not None and not any(roots.data_root().iterdir())
    with pytest.raises(FileNotFoundError, match="no-system-data"):
        data.load("fashion_mnist")


INNER = '''
import pytest
from ganfn import data

def test_reads_by_accident():
    data.fashion_mnist(split="test")

@pytest.mark.system_data
def test_reads_on_purpose():
    assert data.fashion_mnist(split="test").shape == (40, 1, 28, 28)
'''


def test_the_fixture_fails_an_accidental_read_even_where_the_data_are_installed(pytester, monkeypatch,
                                                                               fake_data_root):
    # This machine "has" Fashion-MNIST installed (the variable names a folder holding it), as the
    # development machine had Debian's package: the same inner test passes marked and fails unmarked.
    monkeypatch.setenv(roots.ENV, str(fake_data_root))
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(test_inner=INNER)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    assert "test_reads_by_accident" in "\n".join(result.outlines) and "no-system-data" in result.stdout.str()
