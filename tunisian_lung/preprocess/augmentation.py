"""Random spatial and intensity augmentation of CT tensors, in torch, on CPU or GPU.

Every random draw comes from the ``torch.Generator`` passed in (or one seeded from ``seed``),
which lives on the CPU. Draws are made on the CPU and the transforms run on the tensor's own
device, so one seed gives the same augmentation on CPU and GPU. Global random state
(``torch.manual_seed``, ``random``, ``numpy.random``) is never read or changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tunisian_lung.errors import ConfigError

# Spatial dims of a (C, D, H, W) sample: 1 = D (z), 2 = H (y), 3 = W (x).
_SPATIAL_DIMS = (1, 2, 3)


@dataclass(frozen=True, kw_only=True)
class Augmentation:
    """Settings of :func:`augment`; the default flips and rotates in-plane only.

    Axes are spatial dims of a ``(C, D, H, W)`` sample: 0 is D (z, slices), 1 is H (y, rows),
    2 is W (x, columns).

    Parameters
    ----------
    flip_axes:
        Spatial axes that may be flipped, each independently with ``flip_probability``.
    flip_probability:
        Probability of flipping each axis in ``flip_axes``.
    rot90_planes:
        Planes (pairs of spatial axes) for random multiples of 90 degrees; one plane is chosen
        uniformly and ``k`` in {0, 1, 2, 3} uniformly. ``((1, 2),)`` is in-plane (axial)
        rotation. Both axes of a plane must have equal size.
    rot90_probability:
        Probability of applying a 90-degree rotation at all.
    max_rotation_degrees:
        Maximum absolute angle of a small rotation about the D axis (in the axial plane),
        drawn uniformly in ``[-max, max]``; 0 disables it.
    rotation_probability:
        Probability of applying the small rotation.
    fill_value:
        Value for voxels rotated in from outside the volume (-1.0 is air after windowing).
    intensity_shift:
        Maximum absolute additive shift, drawn uniformly in ``[-shift, shift]``; 0 disables it.
    intensity_scale:
        Maximum relative scale change, factor drawn uniformly in ``[1 - s, 1 + s]``.
    clamp_range:
        Optional ``(low, high)`` range to clamp to after intensity jitter, e.g. ``(-1.0, 1.0)``.
    """

    flip_axes: tuple[int, ...] = (1, 2)
    flip_probability: float = 0.5
    rot90_planes: tuple[tuple[int, int], ...] = ((1, 2),)
    rot90_probability: float = 0.5
    max_rotation_degrees: float = 0.0
    rotation_probability: float = 0.5
    fill_value: float = -1.0
    intensity_shift: float = 0.0
    intensity_scale: float = 0.0
    clamp_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        for axis in self.flip_axes:
            if axis not in (0, 1, 2):
                raise ConfigError(f"flip_axes entries must be spatial axes 0 (D), 1 (H) or 2 (W), got {self.flip_axes!r}")
        object.__setattr__(self, "flip_axes", tuple(int(a) for a in self.flip_axes))
        planes = tuple(tuple(int(a) for a in plane) for plane in self.rot90_planes)
        for plane in planes:
            if len(plane) != 2 or plane[0] == plane[1] or not set(plane) <= {0, 1, 2}:
                raise ConfigError(f"rot90_planes must be pairs of distinct spatial axes 0..2, got {self.rot90_planes!r}")
        object.__setattr__(self, "rot90_planes", planes)
        for name in ("flip_probability", "rot90_probability", "rotation_probability"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not 0.0 <= self.max_rotation_degrees <= 180.0:
            raise ConfigError(f"max_rotation_degrees must be in [0, 180], got {self.max_rotation_degrees!r}")
        if self.intensity_shift < 0 or not math.isfinite(self.intensity_shift):
            raise ConfigError(f"intensity_shift must be a finite number >= 0, got {self.intensity_shift!r}")
        if not 0.0 <= self.intensity_scale < 1.0:
            raise ConfigError(f"intensity_scale must be in [0, 1), got {self.intensity_scale!r}")
        if self.clamp_range is not None:
            low, high = self.clamp_range
            if not high > low:
                raise ConfigError(f"clamp_range must be (low, high) with high > low, got {self.clamp_range!r}")


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


def _rotate_small(sample: torch.Tensor, angle_radians: float, fill_value: float) -> torch.Tensor:
    cos, sin = math.cos(angle_radians), math.sin(angle_radians)
    # affine_grid takes (x, y, z) = (W, H, D) normalised coordinates; rotate x and y about z.
    theta = torch.tensor(
        [[cos, -sin, 0.0, 0.0], [sin, cos, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
        dtype=sample.dtype if sample.is_floating_point() else torch.float32,
        device=sample.device,
    ).unsqueeze(0)
    batch = sample.unsqueeze(0).to(theta.dtype)
    grid = F.affine_grid(theta, list(batch.shape), align_corners=False)
    # grid_sample pads with zeros, so shift the fill value to zero and back.
    rotated = F.grid_sample(batch - fill_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rotated = rotated + fill_value
    # Bilinear weights summing to 1 up to rounding can overshoot the input range by about 1e-7
    # (1.0000002 from a [-1, 1] volume), so clamp to the range of the input and the fill value.
    low = min(float(batch.min()), fill_value)
    high = max(float(batch.max()), fill_value)
    return rotated.clamp(low, high).squeeze(0).to(sample.dtype)


def _augment_sample(sample: torch.Tensor, config: Augmentation, generator: torch.Generator) -> torch.Tensor:
    # Draw every random number first, in a fixed order, so the sequence of draws does not
    # depend on the tensor's device or contents.
    flips = [axis for axis in config.flip_axes if _uniform(generator) < config.flip_probability]
    apply_rot90 = _uniform(generator) < config.rot90_probability
    plane_index = int(torch.randint(len(config.rot90_planes) or 1, (), generator=generator))
    quarter_turns = int(torch.randint(4, (), generator=generator))
    apply_rotation = _uniform(generator) < config.rotation_probability
    angle = (2.0 * _uniform(generator) - 1.0) * math.radians(config.max_rotation_degrees)
    shift = (2.0 * _uniform(generator) - 1.0) * config.intensity_shift
    scale = 1.0 + (2.0 * _uniform(generator) - 1.0) * config.intensity_scale

    if flips:
        sample = torch.flip(sample, dims=[_SPATIAL_DIMS[axis] for axis in flips])
    if apply_rot90 and config.rot90_planes and quarter_turns:
        first, second = config.rot90_planes[plane_index]
        if sample.shape[_SPATIAL_DIMS[first]] != sample.shape[_SPATIAL_DIMS[second]]:
            raise ConfigError(
                f"a 90-degree rotation in plane {(first, second)} needs equal sizes, got shape {tuple(sample.shape)}; "
                "remove the plane from rot90_planes or resize to a cube"
            )
        sample = torch.rot90(sample, k=quarter_turns, dims=[_SPATIAL_DIMS[first], _SPATIAL_DIMS[second]])
    if apply_rotation and config.max_rotation_degrees > 0:
        # NOTE: the rotation is in normalised coordinates, so it is a rigid rotation only when H
        # and W span the same physical size (true for the 64^3 resized scans of the presets when
        # the source field of view is square).
        sample = _rotate_small(sample, angle, config.fill_value)
    if config.intensity_shift or config.intensity_scale:
        sample = sample * scale + shift
        if config.clamp_range is not None:
            sample = sample.clamp(config.clamp_range[0], config.clamp_range[1])
    return sample.contiguous()


def augment(
    tensor: torch.Tensor,
    config: Augmentation,
    generator: torch.Generator | None = None,
    *,
    seed: int | None = None,
) -> torch.Tensor:
    """Return a randomly augmented copy of a ``(C, D, H, W)`` or ``(N, C, D, H, W)`` tensor.

    Each sample of a batch gets its own draws. The output has the input's shape (a 90-degree
    rotation keeps it because rotated planes must be square), dtype and device.

    Parameters
    ----------
    tensor:
        One sample ``(C, D, H, W)`` or a batch ``(N, C, D, H, W)``, on any device.
    config:
        What to randomise.
    generator:
        CPU ``torch.Generator`` that every draw comes from; it advances with each call.
    seed:
        Seed for a fresh generator, when ``generator`` is not given. One of the two is required.

    Raises
    ------
    ConfigError
        If neither or both of ``generator`` and ``seed`` are given, or the shape does not fit.
    """
    if (generator is None) == (seed is None):
        raise ConfigError("augment needs exactly one of generator= or seed= (no global random state is used)")
    if generator is None:
        generator = torch.Generator()
        generator.manual_seed(int(seed))  # type: ignore[arg-type]
    if generator.device.type != "cpu":
        raise ConfigError(f"augment draws on a CPU generator, got a generator on {generator.device}")
    if tensor.ndim == 4:
        return _augment_sample(tensor, config, generator)
    if tensor.ndim == 5:
        return torch.stack([_augment_sample(sample, config, generator) for sample in tensor])
    raise ConfigError(f"augment expects a (C, D, H, W) or (N, C, D, H, W) tensor, got shape {tuple(tensor.shape)}")
