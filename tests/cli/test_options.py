"""Options shared by several subcommands (``equiforce.cli.options``)."""

from __future__ import annotations

import argparse

import pytest

from equiforce.cli.options import add_device_option


def _parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equiforce x")
    add_device_option(parser, **kwargs)
    return parser


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:1"])
def test_device_accepts_torch_devices(device):
    assert _parser().parse_args(["--device", device]).device == device


def test_device_defaults_to_cpu():
    assert _parser().parse_args([]).device == "cpu"


def test_device_rejects_a_non_device_naming_it(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["--device", "gpu"])
    assert "'gpu' is not a torch device" in capsys.readouterr().err


def test_device_choices_restrict_the_devices(capsys):
    parser = _parser(choices=("cpu", "cuda"))
    assert parser.parse_args(["--device", "cuda"]).device == "cuda"
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "cuda:1"])
    assert "invalid choice: 'cuda:1'" in capsys.readouterr().err
