"""The frozen preprocessing configuration and its named presets.

A :class:`PreprocessConfig` fixes every choice that changes the preprocessed array, so its
:meth:`~PreprocessConfig.cache_key` can key the on-disk cache: two configs with equal fields
produce equal keys, and any changed field produces a different key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, get_args

from tunisian_lung.errors import ConfigError

Normalisation = Literal["window", "zscore_foreground"]
CropMode = Literal["none", "body", "lung"]

NORMALISATIONS: tuple[str, ...] = get_args(Normalisation)
CROP_MODES: tuple[str, ...] = get_args(CropMode)

#: Version of the config's JSON form. Bump it when a field changes meaning.
CONFIG_SCHEMA_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class PreprocessConfig:
    """Every setting of :func:`tunisian_lung.preprocess.preprocess_volume`.

    The steps run in this order: crop (``crop``), resample (``target_spacing_mm``),
    resize (``target_shape_zyx``), then intensity normalisation (``normalisation``).
    Intensities are clipped to ``window_hu`` before any interpolation, so the -2048 HU padding
    outside a scanner's field of view does not bleed into the body.

    Parameters
    ----------
    window_hu:
        ``(lower, upper)`` HU window. With ``normalisation="window"`` the window maps linearly
        to [-1, 1]: ``lower`` HU and below become -1, ``upper`` HU and above become 1.
        Default ``(-1000, 400)``: air to bone-ish soft tissue, the lung and nodule range.
    normalisation:
        ``"window"``: clip to ``window_hu`` and scale to [-1, 1] (the reference study).
        ``"zscore_foreground"``: clip to ``window_hu``, then subtract the mean and divide by
        the standard deviation computed over the body (foreground) voxels only, as the
        MedicalNet-style ``itensity_normalize_one_volume`` does over non-zero voxels. The
        background is set to 0 (that function can fill it with N(0, 1) noise instead, which
        would make the output random). Values are unbounded, typically about -3..3.
    target_spacing_mm:
        Isotropic voxel size in mm to resample to before resizing, or ``None`` to keep the
        source spacing.
    target_shape_zyx:
        Output shape ``(z, y, x)`` after resizing the whole (cropped) volume, or ``None`` to
        keep the shape from the previous step. Resizing changes the physical aspect ratio
        unless the crop is cubic in mm.
    crop:
        ``"none"``, ``"body"`` (bounding box of the body mask) or ``"lung"`` (bounding box of
        the lung mask), each grown by ``crop_margin_mm``.
    crop_margin_mm:
        Margin in mm added on every side of the crop box (clipped at the volume border).
    interpolation_order:
        Spline order for resampling and resizing: 0 nearest, 1 linear (default), 3 cubic.
    body_threshold_hu:
        HU threshold of the body mask (used by ``crop="body"`` and by the z-score foreground).
    lung_threshold_hu:
        HU threshold below which a voxel may belong to a lung (used by ``crop="lung"``).

    Raises
    ------
    ConfigError
        On any invalid value (window width <= 0, non-positive spacing, zero or negative shape,
        unknown mode), with the value in the message.
    """

    window_hu: tuple[float, float] = (-1000.0, 400.0)
    normalisation: Normalisation = "window"
    target_spacing_mm: float | None = None
    target_shape_zyx: tuple[int, int, int] | None = (64, 64, 64)
    crop: CropMode = "none"
    crop_margin_mm: float = 10.0
    interpolation_order: int = 1
    body_threshold_hu: float = -500.0
    lung_threshold_hu: float = -320.0
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        window = _as_float_tuple("window_hu", self.window_hu, 2)
        if not window[1] > window[0]:
            raise ConfigError(
                f"window_hu must be (lower, upper) with upper > lower (width > 0), got {self.window_hu!r}"
            )
        object.__setattr__(self, "window_hu", window)

        if self.normalisation not in NORMALISATIONS:
            raise ConfigError(f"normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}")
        if self.crop not in CROP_MODES:
            raise ConfigError(f"crop must be one of {CROP_MODES}, got {self.crop!r}")

        if self.target_spacing_mm is not None:
            spacing = _as_finite_float("target_spacing_mm", self.target_spacing_mm)
            if spacing <= 0:
                raise ConfigError(f"target_spacing_mm must be positive (mm) or None, got {self.target_spacing_mm!r}")
            object.__setattr__(self, "target_spacing_mm", spacing)

        if self.target_shape_zyx is not None:
            shape = self.target_shape_zyx
            if (
                not isinstance(shape, (tuple, list))
                or len(shape) != 3
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
            ):
                raise ConfigError(f"target_shape_zyx must be 3 integers (z, y, x) or None, got {shape!r}")
            if min(shape) <= 0:
                raise ConfigError(f"target_shape_zyx must be positive in every axis, got {shape!r}")
            object.__setattr__(self, "target_shape_zyx", tuple(int(n) for n in shape))

        margin = _as_finite_float("crop_margin_mm", self.crop_margin_mm)
        if margin < 0:
            raise ConfigError(f"crop_margin_mm must be >= 0 mm, got {self.crop_margin_mm!r}")
        object.__setattr__(self, "crop_margin_mm", margin)

        order = self.interpolation_order
        if not isinstance(order, int) or isinstance(order, bool) or not 0 <= order <= 5:
            raise ConfigError(f"interpolation_order must be an integer spline order 0..5, got {order!r}")

        object.__setattr__(self, "body_threshold_hu", _as_finite_float("body_threshold_hu", self.body_threshold_hu))
        object.__setattr__(self, "lung_threshold_hu", _as_finite_float("lung_threshold_hu", self.lung_threshold_hu))

    # --- serialisation -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a JSON-compatible dict (tuples become lists)."""
        data: dict[str, Any] = {"schema_version": CONFIG_SCHEMA_VERSION}
        for config_field in dataclasses.fields(self):
            value = getattr(self, config_field.name)
            data[config_field.name] = list(value) if isinstance(value, tuple) else value
        return data

    def to_json(self) -> str:
        """Serialise the config to a JSON string that :meth:`from_json` reads back."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PreprocessConfig":
        """Build a config from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        values = dict(data)
        version = values.pop("schema_version", CONFIG_SCHEMA_VERSION)
        if version != CONFIG_SCHEMA_VERSION:
            raise ConfigError(
                f"config schema_version {version!r} is not supported (this library reads {CONFIG_SCHEMA_VERSION})"
            )
        known = {config_field.name for config_field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown PreprocessConfig field(s) {unknown}; known fields are {sorted(known)}")
        for key in ("window_hu", "target_shape_zyx"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> "PreprocessConfig":
        """Parse a config written by :meth:`to_json`."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"preprocessing config is not valid JSON: {error}") from error
        if not isinstance(data, dict):
            raise ConfigError(f"preprocessing config JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)

    def cache_key(self) -> str:
        """Return a sha256 hex digest of every field that changes the output (not ``name``)."""
        data = self.to_dict()
        data.pop("name")
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def replace(self, **changes: Any) -> "PreprocessConfig":
        """Return a copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _as_finite_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be finite, got {value!r}")
    return number


def _as_float_tuple(name: str, value: Any, length: int) -> tuple[float, ...]:
    if not isinstance(value, (tuple, list)) or len(value) != length:
        raise ConfigError(f"{name} must be {length} numbers, got {value!r}")
    return tuple(_as_finite_float(name, item) for item in value)


_PRESETS: dict[str, PreprocessConfig] = {
    # The reference study: window -1000..400 HU to [-1, 1], whole volume resized to 64^3.
    "reference": PreprocessConfig(name="reference"),
    # MedicalNet-style input: body crop, z-score over the body voxels, resized to 64^3.
    "medicalnet": PreprocessConfig(
        name="medicalnet",
        normalisation="zscore_foreground",
        crop="body",
        crop_margin_mm=5.0,
        target_shape_zyx=(64, 64, 64),
    ),
    # Lung bounding box at 1.5 mm isotropic spacing, no resize (the shape follows the lungs).
    "lung-crop-1.5mm": PreprocessConfig(
        name="lung-crop-1.5mm",
        crop="lung",
        crop_margin_mm=10.0,
        target_spacing_mm=1.5,
        target_shape_zyx=None,
    ),
    # Lung bounding box resized to 128^3 for higher-resolution scan-level models.
    "lung-crop-128": PreprocessConfig(
        name="lung-crop-128",
        crop="lung",
        crop_margin_mm=10.0,
        target_shape_zyx=(128, 128, 128),
    ),
}


def list_presets() -> list[str]:
    """Return the names accepted by :func:`preset`, sorted."""
    return sorted(_PRESETS)


def preset(name: str) -> PreprocessConfig:
    """Return the named preset config.

    ``"reference"`` is the reference study's recipe: clip to -1000..400 HU, scale to [-1, 1],
    resize the whole volume to 64x64x64 with linear interpolation. See :func:`list_presets`.

    Raises
    ------
    ConfigError
        If ``name`` is not a preset; the message lists the valid names.
    """
    try:
        return _PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preprocessing preset {name!r}; choose one of {list_presets()}") from None
