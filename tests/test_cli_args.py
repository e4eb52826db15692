"""Command-line parsing details: negative numbers as option values, the help of the cache folder."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ganfn import cli


def _error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@given(x=st.floats(max_value=-1e-300, allow_nan=False) | st.integers(max_value=-1).map(float),
       spelled=st.sampled_from([repr, "{:e}".format, "{:g}".format, "{:.3E}".format]))
def test_a_negative_number_in_any_spelling_is_an_options_value(x, spelled):
    text = spelled(x)
    args = cli.make_parser().parse_args(cli.negative_values(["train", "--lr-g", text, "--lr-d", text]))
    assert args.lr_g == args.lr_d == float(text)


def test_argparse_alone_refuses_them():
    with pytest.raises(SystemExit):  # what negative_values is for
        cli.make_parser().parse_args(["train", "--lr-g", "-1e-4"])


def test_a_negative_learning_rate_gets_the_range_error_not_a_parsing_one(capsys):
    err = _error(["train", "--lr-g", "-1e-4"], capsys)
    assert "--lr-g must be a positive number, got -0.0001" in err and "expected one argument" not in err


def test_only_numbers_after_an_option_are_joined():
    argv = ["train", "--lr-g", "-1e-4", "--lr-d=-2", "--data", "-x", "--spectral-norm", "--", "--seed", "-1e3"]
    assert cli.negative_values(argv) == ["train", "--lr-g=-1e-4", "--lr-d=-2", "--data", "-x", "--spectral-norm",
                                         "--", "--seed", "-1e3"]


@pytest.mark.parametrize("command", ["train", "sweep", "eval"])
def test_help_names_the_cache_folder_and_its_default(capsys, command):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "GANFN_CACHE: the folder of the scoring networks" in text and "(default: ~/.cache/ganfn)" in text
    assert ("GANFN_DATA_ROOT" in text and "exits with status 130" in text) == (command != "eval")
