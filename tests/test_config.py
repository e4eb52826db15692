"""Config fields carry their command-line help, so an option and its help are written once."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from ganfn import cli
from ganfn import presets as P
from ganfn.config import Config, help_text


def test_every_field_has_its_help_in_its_metadata():
    for f in dataclasses.fields(Config):
        assert f.metadata.get("help", "").strip(), f"Config.{f.name} has no help text (use config.opt)"


def test_a_none_default_says_what_it_means():
    for f in dataclasses.fields(Config):
        if f.default is None and f.name not in ("grid", "preset", "compile"):
            text = help_text(f)
            assert "(default" in text or "Default:" in text, f"Config.{f.name}: say what None means"


def test_train_help_shows_a_fields_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.make_parser().parse_args(["train", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert " ".join(help_text(P.FIELDS["n_critic"]).split()) in out


def test_a_field_added_without_help_cannot_break_help(monkeypatch, capsys):
    @dataclass
    class New:
        brand_new_option: int | None = None

    monkeypatch.setitem(P.FIELDS, "brand_new_option", dataclasses.fields(New)[0])
    with pytest.raises(SystemExit) as e:
        cli.make_parser().parse_args(["train", "--help"])
    assert e.value.code == 0 and "--brand-new-option" in capsys.readouterr().out
