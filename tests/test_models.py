"""MedicalNet-compatible 3D ResNets and pretrained-weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tunisian_lung.errors import ConfigError, WeightLoadError
from tunisian_lung.models import MEDICALNET_LAYERS, load_pretrained, resnet3d

DEPTHS = sorted(MEDICALNET_LAYERS)

# Backbone parameter counts (millions) in MedicalNet's README "Computational Cost" table.
MEDICALNET_README_PARAMS_M = {
    10: 14.36, 18: 32.99, 34: 63.31, 50: 46.21, 101: 85.31, 152: 117.51, 200: 126.74,
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def expected_medicalnet_shapes(depth: int, shortcut: str) -> dict[str, tuple[int, ...]]:
    """Write out the parameter layout of MedicalNet's ``models/resnet.py`` for one depth.

    Only weights and biases are listed (BatchNorm buffers follow the BatchNorm weights).
    """
    layers = MEDICALNET_LAYERS[depth]
    bottleneck = depth >= 50
    expansion = 4 if bottleneck else 1
    shapes: dict[str, tuple[int, ...]] = {
        "conv1.weight": (64, 1, 7, 7, 7), "bn1.weight": (64,), "bn1.bias": (64,),
    }
    inplanes = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        stride = 2 if stage == 2 else 1
        for index in range(blocks):
            prefix = f"layer{stage}.{index}."
            if bottleneck:
                convs = [(planes, inplanes, 1), (planes, planes, 3), (planes * 4, planes, 1)]
            else:
                convs = [(planes, inplanes, 3), (planes, planes, 3)]
            for number, (out_c, in_c, kernel) in enumerate(convs, start=1):
                shapes[f"{prefix}conv{number}.weight"] = (out_c, in_c, kernel, kernel, kernel)
                shapes[f"{prefix}bn{number}.weight"] = (out_c,)
                shapes[f"{prefix}bn{number}.bias"] = (out_c,)
            needs_shortcut = index == 0 and (stride != 1 or inplanes != planes * expansion)
            if needs_shortcut and shortcut == "B":
                shapes[f"{prefix}downsample.0.weight"] = (planes * expansion, inplanes, 1, 1, 1)
                shapes[f"{prefix}downsample.1.weight"] = (planes * expansion,)
                shapes[f"{prefix}downsample.1.bias"] = (planes * expansion,)
            inplanes = planes * expansion
    return shapes


def medicalnet_checkpoint(model: torch.nn.Module) -> dict[str, object]:
    """Return a dict laid out like a released MedicalNet file, from a model's backbone."""
    state = {
        f"module.{key}": value.clone()
        for key, value in model.state_dict().items()
        if not key.startswith("fc.")
    }
    channels = model.state_dict()["fc.weight"].shape[1]
    state["module.conv_seg.0.weight"] = torch.randn(channels, 32, 2, 2, 2)
    state["module.conv_seg.0.bias"] = torch.randn(32)
    state["module.conv_seg.1.weight"] = torch.ones(32)
    state["module.conv_seg.4.weight"] = torch.randn(2, 32, 1, 1, 1)
    return {"epoch": 200, "state_dict": state}


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_layout_matches_medicalnet(depth: int) -> None:
    with torch.device("meta"):
        model = resnet3d(depth)
    shortcut = "B" if depth in (10, 50, 101, 152, 200) else "A"
    expected = expected_medicalnet_shapes(depth, shortcut)
    actual = {
        key: tuple(p.shape) for key, p in model.named_parameters() if not key.startswith("fc.")
    }
    assert actual == expected


@pytest.mark.parametrize("depth", DEPTHS)
def test_parameter_count_matches_readme(depth: int) -> None:
    with torch.device("meta"):
        model = resnet3d(depth)
    backbone = sum(p.numel() for p in model.backbone_parameters()) / 1e6
    assert backbone == pytest.approx(MEDICALNET_README_PARAMS_M[depth], rel=0.005)


def test_shortcut_type_defaults() -> None:
    with torch.device("meta"):
        keys10 = resnet3d(10).state_dict().keys()
        keys18 = resnet3d(18).state_dict().keys()
        keys18b = resnet3d(18, shortcut_type="B").state_dict().keys()
    assert "layer2.0.downsample.0.weight" in keys10
    assert "layer1.0.downsample.0.weight" not in keys10
    assert not any(".downsample." in key for key in keys18)
    assert "layer2.0.downsample.0.weight" in keys18b


def test_resnet50_has_layer1_projection() -> None:
    with torch.device("meta"):
        model = resnet3d(50)
    assert tuple(model.state_dict()["layer1.0.downsample.0.weight"].shape) == (256, 64, 1, 1, 1)
    assert tuple(model.fc.weight.shape) == (2, 2048)


@pytest.mark.parametrize("depth", [10, 18])
def test_forward_shape_and_dilation(depth: int) -> None:
    model = resnet3d(depth, num_classes=3).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, 16, 24, 32))
    assert logits.shape == (2, 3)
    assert model.layer3[0].conv1.dilation == (2, 2, 2)
    assert model.layer4[0].conv1.dilation == (4, 4, 4)
    assert model.layer3[0].conv1.stride == (1, 1, 1)
    assert model.layer2[0].conv1.stride == (2, 2, 2)


def test_forward_rejects_three_channels() -> None:
    model = resnet3d(10).eval()
    with pytest.raises(ValueError, match=r"\(N, 1, D, H, W\)"):
        model(torch.randn(1, 3, 16, 16, 16))


def test_invalid_depth_rejected() -> None:
    with pytest.raises(ConfigError, match="unsupported ResNet depth 12"):
        resnet3d(12)


def test_load_medicalnet_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = resnet3d(10)
    path = tmp_path / "resnet_10.pth"
    torch.save(medicalnet_checkpoint(source), path)

    target = resnet3d(10)
    head_before = target.fc.weight.detach().clone()
    report = load_pretrained(target, path)

    backbone_keys = [k for k in target.state_dict() if not k.startswith("fc.")]
    assert report.source_format == "medicalnet"
    assert sorted(report.matched) == sorted(backbone_keys)
    assert report.missing == ()
    assert report.unexpected == ()
    assert set(report.skipped_head) == {
        "conv_seg.0.weight", "conv_seg.0.bias", "conv_seg.1.weight", "conv_seg.4.weight",
    }
    for key in backbone_keys:
        assert torch.equal(target.state_dict()[key], source.state_dict()[key]), key
    assert torch.equal(target.fc.weight, head_before)


def test_load_legacy_serialization(tmp_path: Path) -> None:
    # MedicalNet's files were saved by PyTorch 0.4, before the zip-based format of torch 1.6.
    path = tmp_path / "legacy.pth"
    torch.save(medicalnet_checkpoint(resnet3d(10)), path, _use_new_zipfile_serialization=False)
    report = load_pretrained(resnet3d(10), path)
    assert report.complete
    assert report.source_format == "medicalnet"


def test_load_plain_state_dict_with_head(tmp_path: Path) -> None:
    source = resnet3d(18)
    path = tmp_path / "plain.pt"
    torch.save(source.state_dict(), path)
    target = resnet3d(18)
    report = load_pretrained(target, path, load_head=True)
    assert report.source_format == "state_dict"
    assert "fc.weight" in report.matched
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_load_without_batch_counters(tmp_path: Path) -> None:
    source = resnet3d(10)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save({"state_dict": state}, path)
    report = load_pretrained(resnet3d(10), path)
    assert report.complete


def test_wrong_depth_fails_with_names(tmp_path: Path) -> None:
    path = tmp_path / "resnet_18.pth"
    torch.save(medicalnet_checkpoint(resnet3d(18)), path)
    with pytest.raises(WeightLoadError) as caught:
        load_pretrained(resnet3d(10), path)
    message = str(caught.value)
    assert "ResNet18" in message
    assert "ResNet10" in message
    assert "layer2.0.downsample.0.weight" in message
    assert "layer1.1." in message


def test_wrong_shortcut_type_fails(tmp_path: Path) -> None:
    path = tmp_path / "resnet_18_b.pth"
    torch.save(medicalnet_checkpoint(resnet3d(18, shortcut_type="B")), path)
    with pytest.raises(WeightLoadError, match="shortcut type B"):
        load_pretrained(resnet3d(18), path)


def test_three_channel_conv_fails(tmp_path: Path) -> None:
    checkpoint = medicalnet_checkpoint(resnet3d(10))
    state = checkpoint["state_dict"]
    assert isinstance(state, dict)
    state["module.conv1.weight"] = torch.randn(64, 3, 7, 7, 7)
    path = tmp_path / "rgb.pth"
    torch.save(checkpoint, path)
    with pytest.raises(WeightLoadError) as caught:
        load_pretrained(resnet3d(10), path)
    message = str(caught.value)
    assert "conv1.weight: file (64, 3, 7, 7, 7) != model (64, 1, 7, 7, 7)" in message
    assert "3 channels" in message


def test_partial_load_when_not_strict(tmp_path: Path) -> None:
    path = tmp_path / "resnet_18.pth"
    torch.save(medicalnet_checkpoint(resnet3d(18)), path)
    report = load_pretrained(resnet3d(10), path, strict_backbone=False)
    assert not report.complete
    assert "layer2.0.downsample.0.weight" in report.missing
    assert "conv1.weight" in report.matched


def test_missing_file_fails(tmp_path: Path) -> None:
    with pytest.raises(WeightLoadError, match="weights file not found"):
        load_pretrained(resnet3d(10), tmp_path / "absent.pth")


def test_non_checkpoint_file_fails(tmp_path: Path) -> None:
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightLoadError, match="weights_only=True"):
        load_pretrained(resnet3d(10), path)
