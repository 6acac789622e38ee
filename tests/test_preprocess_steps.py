"""Each preprocessing step on synthetic volumes with known results, and the pipeline on a phantom."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess_support import (
    PHANTOM_LUNG_CENTRES,
    PHANTOM_LUNG_RADII,
    PHANTOM_NODULE_CENTRE,
    PHANTOM_SHAPE,
    chest_phantom,
)
from tunisian_lung.errors import PreprocessError
from tunisian_lung.io.volume import Volume
from tunisian_lung.preprocess import (
    PreprocessConfig,
    body_mask,
    crop_to_box,
    crop_to_mask_bbox,
    extract_patch,
    lung_mask,
    preprocess_volume,
    resample_to_spacing,
    resize_to_shape,
    window_and_normalise,
    zscore_foreground,
)

DIRECTIONS = {
    "identity": np.eye(3),
    "flipped_xy": np.diag([-1.0, -1.0, 1.0]),
    "rotated": np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]),
}


def world_ramp(shape_zyx, *, spacing, origin=(5.0, -6.0, 7.0), direction=None, axis: int = 0) -> Volume:
    """A float64 volume whose value at every voxel is that voxel centre's world coordinate `axis` (0 = x)."""
    template = Volume(np.zeros(shape_zyx), spacing=spacing, origin=origin, direction=direction)
    indices = np.stack(np.indices(shape_zyx), axis=-1).reshape(-1, 3)
    world = template.voxel_to_world(indices)[:, axis].reshape(shape_zyx)
    return template.with_array(world)


def world_coordinate(volume: Volume, axis: int) -> np.ndarray:
    indices = np.stack(np.indices(volume.shape), axis=-1).reshape(-1, 3)
    return volume.voxel_to_world(indices)[:, axis].reshape(volume.shape)


# --- intensity -------------------------------------------------------------------------------


def test_window_maps_window_to_unit_range() -> None:
    volume = Volume(np.array([-2048, -1000, -300, 400, 1200, 50], dtype=np.int16).reshape(1, 2, 3), spacing=(1, 1, 1))
    result = window_and_normalise(volume, (-1000, 400))
    expected = np.array([-1.0, -1.0, 0.0, 1.0, 1.0, 0.5], dtype=np.float32).reshape(1, 2, 3)
    assert result.array.dtype == np.float32
    np.testing.assert_allclose(result.array, expected, atol=1e-6)
    assert result.metadata["window_hu"] == [-1000.0, 400.0]
    assert result.same_geometry(volume)


def test_window_rejects_empty_window() -> None:
    volume = Volume(np.zeros((2, 2, 2)), spacing=(1, 1, 1))
    with pytest.raises(PreprocessError, match="upper > lower"):
        window_and_normalise(volume, (100, 100))


def test_zscore_uses_foreground_only() -> None:
    array = np.full((1, 2, 4), -1000.0)
    array[0, 0] = [1.0, 2.0, 3.0, 4.0]
    foreground = np.zeros(array.shape, dtype=bool)
    foreground[0, 0] = True
    volume = Volume(array, spacing=(1, 1, 1))
    result = zscore_foreground(volume, foreground, window_hu=None).array
    std = np.std([1.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(result[0, 0], (np.array([1, 2, 3, 4]) - 2.5) / std, rtol=1e-6)
    assert np.all(result[0, 1] == 0.0)
    assert result.dtype == np.float32


def test_zscore_empty_foreground_raises() -> None:
    volume = Volume(np.arange(8.0).reshape(2, 2, 2), spacing=(1, 1, 1), metadata={"series_uid": "1.2.3"})
    with pytest.raises(PreprocessError, match="1.2.3"):
        zscore_foreground(volume, np.zeros((2, 2, 2), dtype=bool))


# --- resize and resample ---------------------------------------------------------------------


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_resize_keeps_world_positions(direction: str) -> None:
    source = world_ramp((10, 20, 30), spacing=(1.0, 2.0, 3.0), direction=DIRECTIONS[direction], axis=0)
    result = resize_to_shape(source, (5, 10, 15))
    assert result.shape == (5, 10, 15)
    np.testing.assert_allclose(result.spacing, (2.0, 4.0, 6.0))
    # Linear interpolation reproduces a linear function exactly, so every output voxel equals
    # its own world x coordinate when the geometry is right.
    np.testing.assert_allclose(result.array, world_coordinate(result, 0), atol=1e-4)


def test_resize_preserves_outer_edges() -> None:
    source = Volume(np.zeros((10, 20, 30), dtype=np.int16), spacing=(1.0, 2.0, 3.0), origin=(5.0, 6.0, 7.0))
    result = resize_to_shape(source, (5, 10, 15))
    np.testing.assert_allclose(result.origin, (5.5, 7.0, 8.5))
    first_edge_source = np.asarray(source.origin) - np.asarray(source.spacing) / 2
    first_edge_result = np.asarray(result.origin) - np.asarray(result.spacing) / 2
    np.testing.assert_allclose(first_edge_result, first_edge_source)
    np.testing.assert_allclose(result.extent_mm, source.extent_mm)


def test_resize_upsamples_constant_exactly() -> None:
    source = Volume(np.full((3, 4, 5), 7, dtype=np.int16), spacing=(1, 1, 1))
    result = resize_to_shape(source, (7, 9, 11), order=3)
    assert result.array.dtype == np.float32
    np.testing.assert_allclose(result.array, 7.0, atol=1e-5)


def test_resize_rejects_zero_shape() -> None:
    source = Volume(np.zeros((3, 4, 5)), spacing=(1, 1, 1))
    with pytest.raises(PreprocessError, match=r"\(0, 4, 5\)"):
        resize_to_shape(source, (0, 4, 5))


@pytest.mark.parametrize("direction", list(DIRECTIONS))
def test_resample_to_isotropic_spacing(direction: str) -> None:
    source = world_ramp((9, 21, 21), spacing=(0.5, 0.75, 2.5), direction=DIRECTIONS[direction], axis=2)
    result = resample_to_spacing(source, 1.5)
    np.testing.assert_allclose(result.spacing, (1.5, 1.5, 1.5))
    np.testing.assert_allclose(result.origin, source.origin)
    # x extent 10 mm -> 7 voxels, y 15 mm -> 11, z 20 mm -> 14.
    assert result.shape == (14, 11, 7)
    np.testing.assert_allclose(result.array, world_coordinate(result, 2), atol=1e-4)


def test_resample_rejects_non_positive_spacing() -> None:
    source = Volume(np.zeros((3, 4, 5)), spacing=(1, 1, 1))
    with pytest.raises(PreprocessError, match="-1"):
        resample_to_spacing(source, -1.0)


# --- crop ------------------------------------------------------------------------------------


def test_crop_box_maps_back_to_source_voxel() -> None:
    source = world_ramp((20, 30, 40), spacing=(0.7, 0.8, 2.5), direction=DIRECTIONS["rotated"], axis=1)
    cropped = crop_to_box(source, (slice(3, 10), slice(4, 20), slice(5, 30)))
    np.testing.assert_allclose(cropped.voxel_to_world((0, 0, 0)), source.voxel_to_world((3, 4, 5)))
    assert cropped.array[2, 3, 4] == source.array[5, 7, 9]
    back = source.world_to_voxel(cropped.voxel_to_world((2, 3, 4)))
    np.testing.assert_allclose(back, (5, 7, 9), atol=1e-9)


def test_crop_to_mask_adds_margin_in_mm() -> None:
    volume = Volume(np.zeros((30, 40, 50), dtype=np.int16), spacing=(2.0, 2.0, 2.5))
    mask = np.zeros(volume.shape, dtype=bool)
    mask[10, 20, 30] = True
    cropped = crop_to_mask_bbox(volume, mask, margin_mm=5.0)
    # 5 mm is 2 slices of 2.5 mm and 3 voxels of 2 mm (rounded up).
    assert cropped.shape == (5, 7, 7)
    np.testing.assert_allclose(cropped.voxel_to_world((0, 0, 0)), volume.voxel_to_world((8, 17, 27)))


def test_crop_to_mask_clips_margin_at_border() -> None:
    volume = Volume(np.zeros((30, 40, 50), dtype=np.int16), spacing=(2.0, 2.0, 2.5))
    mask = np.zeros(volume.shape, dtype=bool)
    mask[0, 0, 49] = True
    cropped = crop_to_mask_bbox(volume, mask, margin_mm=5.0)
    assert cropped.shape == (3, 4, 4)
    np.testing.assert_allclose(cropped.origin, volume.voxel_to_world((0, 0, 46)))


def test_crop_to_empty_mask_names_series() -> None:
    volume = Volume(np.zeros((3, 4, 5)), spacing=(1, 1, 1))
    with pytest.raises(PreprocessError, match="series S7"):
        crop_to_mask_bbox(volume, np.zeros((3, 4, 5), dtype=bool), series_id="S7")


# --- masks -----------------------------------------------------------------------------------


def phantom_lungs() -> np.ndarray:
    z, y, x = np.indices(PHANTOM_SHAPE)
    lungs = np.zeros(PHANTOM_SHAPE, dtype=bool)
    for centre in PHANTOM_LUNG_CENTRES:
        lungs |= sum(((axis - c) / r) ** 2 for axis, c, r in zip((z, y, x), centre, PHANTOM_LUNG_RADII)) <= 1.0
    return lungs


def test_lung_mask_matches_phantom_lungs() -> None:
    phantom = chest_phantom()
    mask = lung_mask(phantom)
    expected = phantom_lungs()
    assert mask.dtype == bool
    # Outside air, the -2048 HU corners and the air under the table are not lung. The nodule is
    # filled in because lung surrounds it in every slice.
    assert mask[PHANTOM_NODULE_CENTRE]
    assert not mask[0, 0, 0]
    assert not mask[20, 84, 48]
    np.testing.assert_array_equal(mask, expected)


def test_lung_mask_empty_without_lungs() -> None:
    array = np.full((10, 40, 40), -1000, dtype=np.int16)
    array[:, 5:35, 5:35] = 40
    mask = lung_mask(Volume(array, spacing=(1, 1, 1)))
    assert not mask.any()


def test_lung_mask_ignores_small_air_pocket() -> None:
    phantom = chest_phantom()
    array = phantom.array.copy()
    array[phantom_lungs()] = 40
    array[18:21, 60:63, 45:48] = -900  # 27 voxels of 10 mm^3: 0.27 mL of gas
    assert not lung_mask(phantom.with_array(array)).any()


def test_body_mask_excludes_table_and_outside_air() -> None:
    phantom = chest_phantom()
    mask = body_mask(phantom)
    _, y, x = np.indices(PHANTOM_SHAPE)
    expected = ((y - 44) / 38.0) ** 2 + ((x - 48) / 44.0) ** 2 <= 1.0
    np.testing.assert_array_equal(mask, expected)
    assert not mask[:, 86:90, :].any()


# --- patches ---------------------------------------------------------------------------------


def test_patch_is_centred_on_world_point() -> None:
    source = world_ramp((40, 50, 60), spacing=(0.8, 0.8, 2.0), origin=(-20.0, -30.0, -40.0), axis=0)
    centre = source.voxel_to_world((20.3, 25.1, 30.7))
    patch = extract_patch(source, centre, 12.0, (6, 8, 8))
    assert patch.shape == (6, 8, 8)
    assert patch.array.dtype == np.float32
    np.testing.assert_allclose(patch.spacing, (1.5, 1.5, 2.0))
    np.testing.assert_allclose(patch.world_to_voxel(centre), (2.5, 3.5, 3.5))
    np.testing.assert_allclose(patch.array, world_coordinate(patch, 0), atol=1e-3)


def test_patch_pads_with_air_outside_volume() -> None:
    source = Volume(np.full((10, 10, 10), 40, dtype=np.int16), spacing=(1, 1, 1))
    corner = source.voxel_to_world((0, 0, 0))
    patch = extract_patch(source, corner, 8.0, (8, 8, 8), order=0)
    # Voxel centres at -3.5..3.5 around the corner voxel: the first 4 along each axis are outside.
    assert np.all(patch.array[:4] == -1000.0)
    assert np.all(patch.array[:, :4] == -1000.0)
    assert np.all(patch.array[4:, 4:, 4:] == 40.0)
    normalised = extract_patch(source, corner, 8.0, (8, 8, 8), order=0, fill_value=-1.0)
    assert normalised.array[0, 0, 0] == -1.0


def test_patch_rejects_bad_size() -> None:
    source = Volume(np.zeros((4, 4, 4)), spacing=(1, 1, 1))
    with pytest.raises(PreprocessError, match="size"):
        extract_patch(source, (0, 0, 0), 0.0, (4, 4, 4))


# --- pipeline --------------------------------------------------------------------------------


def test_pipeline_reference_on_phantom() -> None:
    result = preprocess_volume(chest_phantom(), PreprocessConfig())
    assert result.shape == (64, 64, 64)
    assert result.array.dtype == np.float32
    assert result.array.min() >= -1.0
    assert result.array.max() <= 1.0
    assert PreprocessConfig.from_json(result.metadata["preprocess_config"]) == PreprocessConfig()
    assert result.metadata["source_shape_zyx"] == list(PHANTOM_SHAPE)


def test_pipeline_lung_crop_keeps_nodule_position() -> None:
    phantom = chest_phantom()
    config = PreprocessConfig(crop="lung", crop_margin_mm=4.0, target_spacing_mm=1.5, target_shape_zyx=(32, 48, 48))
    result = preprocess_volume(phantom, config)
    nodule_world = phantom.voxel_to_world(PHANTOM_NODULE_CENTRE)
    index = result.world_to_voxel(nodule_world)
    assert np.all(index >= 0)
    assert np.all(index <= np.asarray(result.shape) - 1)
    # After windowing the nodule (30 HU) is 0.47 and the lung (-850 HU) is -0.79.
    assert result.array[tuple(np.round(index).astype(int))] == pytest.approx(0.4714, abs=1e-3)
    back = phantom.world_to_voxel(result.voxel_to_world(index))
    np.testing.assert_allclose(back, PHANTOM_NODULE_CENTRE, atol=1e-6)
    lung_far_from_nodule = phantom.voxel_to_world(PHANTOM_LUNG_CENTRES[1])
    assert result.array[tuple(np.round(result.world_to_voxel(lung_far_from_nodule)).astype(int))] < -0.5


def test_pipeline_zscore_foreground_on_phantom() -> None:
    result = preprocess_volume(chest_phantom(), PreprocessConfig(normalisation="zscore_foreground", crop="body"))
    array = result.array
    assert array.dtype == np.float32
    foreground = array != 0.0
    assert abs(float(array[foreground].mean())) < 0.05
    assert abs(float(array[foreground].std()) - 1.0) < 0.05


def test_pipeline_rejects_nan_with_series_name() -> None:
    array = chest_phantom().array.astype(np.float32)
    array[3, 4, 5] = np.nan
    volume = Volume(array, spacing=(1, 1, 1), metadata={"series_uid": "1.2.840.99"})
    with pytest.raises(PreprocessError, match=r"series 1\.2\.840\.99: 1 voxel\(s\) are NaN"):
        preprocess_volume(volume, PreprocessConfig())


def test_pipeline_rejects_constant_volume() -> None:
    volume = Volume(np.full((8, 8, 8), -1000, dtype=np.int16), spacing=(1, 1, 1))
    with pytest.raises(PreprocessError, match="series S1: every voxel has the value -1000"):
        preprocess_volume(volume, PreprocessConfig(), series_id="S1")


def test_pipeline_rejects_empty_lung_mask() -> None:
    array = np.full((10, 40, 40), -1000, dtype=np.int16)
    array[:, 5:35, 5:35] = 40
    volume = Volume(array, spacing=(1, 1, 1), metadata={"series_id": "P9-S1"})
    with pytest.raises(PreprocessError, match="series P9-S1: the lung mask is empty"):
        preprocess_volume(volume, PreprocessConfig(crop="lung"))


def test_pipeline_rejects_crop_thinner_than_two_voxels() -> None:
    y, x = np.indices((40, 40))
    array = np.full((3, 40, 40), -1000, dtype=np.int16)
    array[:, (y - 20) ** 2 + (x - 20) ** 2 <= 18**2] = 40
    array[1, (y - 20) ** 2 + (x - 20) ** 2 <= 10**2] = -850  # 314 voxels of 0.25 mL: a 78 mL lung in one slice
    volume = Volume(array, spacing=(5.0, 5.0, 10.0))
    with pytest.raises(PreprocessError, match="too thin"):
        preprocess_volume(volume, PreprocessConfig(crop="lung", crop_margin_mm=0.0), series_id="thin")


def test_pipeline_rejects_single_slice() -> None:
    volume = Volume(np.arange(100, dtype=np.int16).reshape(1, 10, 10), spacing=(1, 1, 1))
    with pytest.raises(PreprocessError, match="fewer than 2 voxels"):
        preprocess_volume(volume, PreprocessConfig(), series_id="one-slice")
