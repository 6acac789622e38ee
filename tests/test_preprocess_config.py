"""PreprocessConfig validation, serialisation, cache keys and presets."""

from __future__ import annotations

import pytest

from tunisian_lung.errors import ConfigError
from tunisian_lung.preprocess import PreprocessConfig, list_presets, preset


def test_config_defaults_are_reference_recipe() -> None:
    config = PreprocessConfig()
    assert config.window_hu == (-1000.0, 400.0)
    assert config.normalisation == "window"
    assert config.target_shape_zyx == (64, 64, 64)
    assert config.target_spacing_mm is None
    assert config.crop == "none"
    assert config.interpolation_order == 1


def test_config_is_keyword_only_and_frozen() -> None:
    with pytest.raises(TypeError):
        PreprocessConfig((-1000, 400))  # type: ignore[misc]
    config = PreprocessConfig()
    with pytest.raises(AttributeError):
        config.crop = "lung"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"window_hu": (400, 400)}, "(400, 400)"),
        ({"window_hu": (500, -1000)}, "(500, -1000)"),
        ({"window_hu": (0,)}, "(0,)"),
        ({"target_spacing_mm": 0.0}, "0.0"),
        ({"target_spacing_mm": -1.5}, "-1.5"),
        ({"target_shape_zyx": (64, 0, 64)}, "(64, 0, 64)"),
        ({"target_shape_zyx": (64, 64)}, "(64, 64)"),
        ({"target_shape_zyx": (64.0, 64, 64)}, "(64.0, 64, 64)"),
        ({"crop": "lungs"}, "'lungs'"),
        ({"normalisation": "minmax"}, "'minmax'"),
        ({"crop_margin_mm": -1.0}, "-1.0"),
        ({"interpolation_order": 7}, "7"),
        ({"body_threshold_hu": float("nan")}, "nan"),
    ],
)
def test_config_rejects_invalid_value(changes: dict, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        PreprocessConfig(**changes)
    assert fragment in str(error.value)


def test_config_errors_are_value_errors() -> None:
    with pytest.raises(ValueError):
        PreprocessConfig(window_hu=(0, -1))


def test_config_hash_and_equality() -> None:
    first = PreprocessConfig(window_hu=(-1000, 400))
    second = PreprocessConfig(window_hu=(-1000.0, 400.0))
    assert first == second
    assert hash(first) == hash(second)
    assert len({first, second, PreprocessConfig(crop="lung")}) == 2


def test_config_json_round_trip() -> None:
    config = PreprocessConfig(
        window_hu=(-1200, 600), normalisation="zscore_foreground", target_spacing_mm=1.25,
        target_shape_zyx=(32, 48, 48), crop="lung", crop_margin_mm=5, interpolation_order=3, name="mine",
    )
    restored = PreprocessConfig.from_json(config.to_json())
    assert restored == config
    assert restored.name == "mine"
    assert restored.target_shape_zyx == (32, 48, 48)


def test_config_from_json_rejects_unknown_field() -> None:
    with pytest.raises(ConfigError, match="unknown PreprocessConfig field"):
        PreprocessConfig.from_dict({"window": [-1000, 400]})
    with pytest.raises(ConfigError, match="not valid JSON"):
        PreprocessConfig.from_json("{window")


def test_cache_key_changes_with_every_output_field() -> None:
    base = PreprocessConfig()
    variants = [
        base.replace(window_hu=(-1000, 500)),
        base.replace(normalisation="zscore_foreground"),
        base.replace(target_spacing_mm=2.0),
        base.replace(target_shape_zyx=(64, 64, 32)),
        base.replace(crop="body"),
        base.replace(crop_margin_mm=11.0),
        base.replace(interpolation_order=0),
        base.replace(body_threshold_hu=-400.0),
        base.replace(lung_threshold_hu=-400.0),
    ]
    keys = {config.cache_key() for config in variants}
    assert len(keys) == len(variants)
    assert base.cache_key() not in keys


def test_cache_key_ignores_name() -> None:
    assert PreprocessConfig(name="a").cache_key() == PreprocessConfig(name="b").cache_key()
    assert PreprocessConfig(name="a") == PreprocessConfig()


def test_reference_preset_recipe() -> None:
    config = preset("reference")
    assert config.window_hu == (-1000.0, 400.0)
    assert config.normalisation == "window"
    assert config.target_shape_zyx == (64, 64, 64)
    assert config.crop == "none"
    assert config.target_spacing_mm is None


def test_presets_listed_and_valid() -> None:
    names = list_presets()
    assert {"reference", "medicalnet", "lung-crop-1.5mm"} <= set(names)
    for name in names:
        assert preset(name).name == name
    assert preset("medicalnet").normalisation == "zscore_foreground"


def test_unknown_preset_lists_choices() -> None:
    with pytest.raises(ConfigError, match="reference"):
        preset("refrence")
