"""ganfn.presets_folder.choose: a folder run's channels and size from its header scan."""
from hypothesis import given
from hypothesis import strategies as st

from ganfn import presets as P
from ganfn.data import FolderScan
from ganfn.presets_folder import AUTO_MAX_SIZE, choose


def _scan(sides, modes=None):
    return FolderScan("/f", [f"{i}.png" for i in range(len(sides))], modes or {"L": len(sides)}, list(sides), [], [])


@given(st.lists(st.integers(1, 300), min_size=1, max_size=9), st.sampled_from(["dcgan", "sngan", "resnet", "mlp"]))
def test_size_is_the_smallest_the_model_takes_not_below_the_median_side(sides, model):
    scan = _scan(sides)
    c = choose(scan, model, P.conv_size if model in P.CONV_MODELS else None)
    side = scan.side
    if model == "mlp":
        assert c.size == min(side, AUTO_MAX_SIZE)
    else:
        assert c.size & (c.size - 1) == 0 and c.size >= 8  # a size the conv models take
        assert (c.size == AUTO_MAX_SIZE if side > AUTO_MAX_SIZE
                else (c.size >= side and (c.size == 8 or c.size // 2 < side)))
    assert f"{side}x{side} -> {c.size}x{c.size}" in c.note
    P.build_gan(P.Config(model=model), (c.channels, c.size, c.size))  # the model accepts it


@given(st.dictionaries(st.sampled_from(["L", "LA", "1", "I;16", "RGB", "RGBA", "P"]), st.integers(1, 3), min_size=1))
def test_channels_are_one_only_when_every_image_is_grey(modes):
    scan = _scan([8] * sum(modes.values()), modes)
    grey = set(modes) <= {"L", "LA", "1", "I;16"}
    assert choose(scan, "dcgan", P.conv_size).channels == (1 if grey else 3)
    assert choose(scan, "dcgan", P.conv_size, channels=3).channels == 3  # given wins
    assert choose(scan, "dcgan", P.conv_size, image_size=32).size == 32
