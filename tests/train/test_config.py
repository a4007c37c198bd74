"""Run configuration: parsing, validation, unknown keys, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from equiforce.train.config import RunConfig, dump_config, load_config
from equiforce.typed_config import ConfigError

from .conftest import config_dict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXAMPLES = {"mace": CONFIGS / "mace_example.yaml", "allegro": CONFIGS / "allegro_example.yaml"}


def _minimal() -> dict:
    return config_dict(Path("out"), Path("train.xyz"))


@pytest.mark.parametrize("family", sorted(EXAMPLES))
def test_example_config_parses_and_round_trips(tmp_path, family):
    config = load_config(EXAMPLES[family])
    assert config.model.family == family and config.training.stage_two.enabled
    copy = tmp_path / "copy.yaml"
    copy.write_text(dump_config(config))
    assert load_config(copy) == config
    assert RunConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("family", sorted(EXAMPLES))
def test_every_example_key_is_documented(family):
    for number, line in enumerate(EXAMPLES[family].read_text().splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#") and line.split(":")[1:]:
            is_section = line.rstrip().endswith(":")
            assert "#" in line or is_section or line.startswith("    "), f"line {number}: {line}"


@pytest.mark.parametrize(
    "section, key",
    [
        ("training", "lr_typo"),
        ("data", "train_fil"),
        ("model", "num_channel"),
        ("root", "outptu_dir"),
    ],
)
def test_unknown_key_names_its_path(section, key):
    values = _minimal()
    target = values if section == "root" else values[section]
    target[key] = 1
    path = key if section == "root" else f"{section}.{key}"
    with pytest.raises(ConfigError, match=rf"^{path}: unknown key"):
        RunConfig.from_dict(values)


def test_unknown_nested_key_names_its_path():
    values = _minimal()
    values["training"]["ema"]["decya"] = 0.9
    with pytest.raises(ConfigError, match=r"^training\.ema\.decya: unknown key"):
        RunConfig.from_dict(values)


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("data", "valid_fraction", 1.5, r"data\.valid_fraction: must be in \(0, 1\)"),
        ("training", "optimizer", "sgd", r"training\.optimizer: must be one of"),
        ("training", "lr", "fast", r"training\.lr: expected a number"),
        ("training", "max_epochs", 2.5, r"training\.max_epochs: expected an integer"),
        ("training", "device", "tpu", r"training\.device: must be auto"),
        ("model", "type_names", ["Cu"], r"model\.type_names: is derived from the training"),
        ("model", "num_channels", "many", r"^model: "),
    ],
)
def test_invalid_values_are_rejected_with_the_key(section, key, value, message):
    values = _minimal()
    values[section][key] = value
    with pytest.raises(ConfigError, match=message):
        RunConfig.from_dict(values)


def test_missing_required_keys_and_bad_family():
    values = _minimal()
    del values["data"]["train_file"]
    with pytest.raises(ConfigError, match=r"data\.train_file: is required"):
        RunConfig.from_dict(values)
    values = _minimal()
    values["model"]["family"] = "nonexistent"
    with pytest.raises(ConfigError, match="model.family: unknown model family"):
        RunConfig.from_dict(values)


def test_stage_two_must_start_before_the_end():
    values = _minimal()
    values["training"]["stage_two"]["start_epoch"] = 3
    with pytest.raises(ConfigError, match=r"stage_two\.start_epoch: must be < max_epochs"):
        RunConfig.from_dict(values)


def test_yaml_integers_are_accepted_for_floats_and_file_errors_name_the_file(tmp_path):
    values = _minimal()
    values["training"]["lr"] = 1
    assert RunConfig.from_dict(values).training.lr == 1.0
    values["training"]["lr"] = yaml.safe_load("lr: 1e-3")["lr"]  # YAML 1.1 gives a string
    assert RunConfig.from_dict(values).training.lr == 1e-3
    values["training"]["lr_typo"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError, match=rf"{path}: training\.lr_typo"):
        load_config(path)


def test_model_section_from_a_preset_drops_the_dataset_constants():
    from equiforce.models.presets import PRESETS
    from equiforce.train.config import DATASET_DERIVED_FIELDS, ModelConfig

    config = ModelConfig.from_preset("mace-small", dtype="float64", max_L=0)
    assert config.family == "mace"
    assert not set(config.params) & set(DATASET_DERIVED_FIELDS)
    spec = config.spec()
    assert (spec.num_channels, spec.max_L, spec.dtype) == (32, 0, "float64")
    assert spec.radial_mlp == PRESETS["mace-small"][1]["radial_mlp"]
    assert ModelConfig.from_preset("allegro-l1").spec().l_max == 1
    with pytest.raises(ValueError, match="unknown preset 'nope'"):
        ModelConfig.from_preset("nope")
    with pytest.raises(ConfigError, match="model.l_max: unknown key for family 'mace'"):
        ModelConfig.from_preset("mace-small", l_max=2)


def test_set_overrides_values_create_sections_and_read_yaml_types():
    config = load_config(
        EXAMPLES["mace"],
        [
            "training.lr=1e-3",
            "model.num_channels=32",
            "model.radial_mlp=[16, 16]",
            "training.stage_two.enabled=false",
            "output_dir=runs/lr",
            "training.lr=0.02",  # later overrides win
        ],
    )
    assert config.training.lr == 0.02 and config.model.params["num_channels"] == 32
    assert tuple(config.model.params["radial_mlp"]) == (16, 16)
    assert not config.training.stage_two.enabled and config.output_dir == "runs/lr"
    assert load_config(EXAMPLES["mace"], ["training.stage_two.enabled=false"]) != load_config(
        EXAMPLES["mace"]
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("training.lr", r"--set 'training.lr': expected KEY.PATH=VALUE"),
        ("=1", r"--set '=1': expected KEY.PATH=VALUE"),
        ("training.lr.value=1", r"--set 'training.lr.value=1': training.lr is a value"),
        ("training.lrr=1", r"mace_example.yaml: training\.lrr"),
        ("training.lr=-1", r"mace_example.yaml: training\.lr"),
    ],
)
def test_bad_set_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(EXAMPLES["mace"], [override])


def test_every_config_command_takes_set_overrides(tmp_path):
    from equiforce.cli import train as train_cli
    from equiforce.cli.main import build_parser
    from equiforce.workflows.distill.config import load_distill_config
    from equiforce.workflows.learn.config import load_learn_config

    args = build_parser().parse_args(
        ["train", str(EXAMPLES["mace"]), "--set", "training.max_epochs=3", "--precision", "float64"]
    )
    config = train_cli._config(args)
    assert config.training.max_epochs == 3 and config.precision.mode == "float64"
    for command in ("committee", "distill", "learn"):
        parsed = build_parser().parse_args([command, "x.yaml", "--set", "a.b=1", "--set", "c=2"])
        assert parsed.overrides == ["a.b=1", "c=2"], command
    assert load_learn_config(CONFIGS / "learn_example.yaml", ["max_rounds=2"]).max_rounds == 2
    distill = load_distill_config(CONFIGS / "distill_example.yaml", ["seed=7"])
    assert distill.seed == 7
