"""Pretrained encoder weights from local files: key mapping, first-conv adaptation, provenance."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from geoseg.errors import ModelFileError
from geoseg.models.modelfile import file_sha256, read_contract
from geoseg.models.registry import build_network, load_encoder_weights


def torchvision_resnet18(path, prefix="", fmt="pth"):
    """A torchvision-style resnet18 state dict (with its classifier), random but reproducible."""
    torch.manual_seed(7)
    encoder = build_network("unet", "resnet18", 3, 2).encoder
    for value in encoder.state_dict().values():
        if value.is_floating_point():
            value.normal_()  # far from any fresh initialisation
    state = {f"{prefix}{k}": v.clone() for k, v in encoder.state_dict().items()}
    state.update(
        {f"{prefix}fc.weight": torch.zeros(1000, 512), f"{prefix}fc.bias": torch.zeros(1000)}
    )
    if fmt == "pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    return {k.removeprefix(prefix): v for k, v in state.items()}


@pytest.mark.parametrize(
    ("encoder", "bands", "prefix", "fmt"),
    [("resnet18", 1, "module.", "pth"), ("resnet18", 3, "", "safetensors"),
     ("resnet18", 4, "model.", "pth"), ("tu-resnet18", 3, "", "safetensors")],
)  # fmt: skip
def test_encoder_takes_the_file_weights_and_adapts_the_first_conv(
    tmp_path, encoder, bands, prefix, fmt
):
    path = tmp_path / f"r18.{fmt}"
    source = torchvision_resnet18(path, prefix, fmt)
    net = build_network("unet", encoder, bands, 2)
    report = load_encoder_weights(net, path)
    loaded = {k.removeprefix("model."): v for k, v in net.encoder.state_dict().items()}
    assert report.matched == report.total == 100 and report.sha256 == file_sha256(path)
    for key, value in loaded.items():
        if key != "conv1.weight":
            assert torch.equal(value, source[key]), key
    rgb = source["conv1.weight"]
    if bands == 1:
        expected = rgb.sum(dim=1, keepdim=True)
    else:
        expected = torch.cat([rgb[:, i % 3 : i % 3 + 1] for i in range(bands)], 1) * 3 / bands
    torch.testing.assert_close(loaded["conv1.weight"], expected)
    assert (report.adapted is None) is (bands == 3)


def test_a_file_for_another_encoder_is_refused_in_one_line(tmp_path):
    torchvision_resnet18(tmp_path / "r18.pth")
    with pytest.raises(ModelFileError, match=r"r18.pth: only \d+ of the encoder's \d+ tensors"):
        load_encoder_weights(build_network("unet", "resnet34", 3, 2), tmp_path / "r18.pth")


def test_training_records_the_encoder_file_hash(tmp_path):
    from test_train import FAST, easy_scene

    from geoseg.options import TrainOptions
    from geoseg.training.train import train_model

    image, labels, _, _ = easy_scene(tmp_path, size=64)
    torchvision_resnet18(tmp_path / "r18.pth")
    options = TrainOptions(epochs=1, steps_per_epoch=1, val_fraction=0,
                           encoder_weights=str(tmp_path / "r18.pth"), **FAST)  # fmt: skip
    result = train_model([image], labels, tmp_path / "m.safetensors", options)
    assert result.encoder_weights is not None and result.encoder_weights.matched == 100
    sha = read_contract(result.model_path).encoder_weights_sha256
    assert sha == file_sha256(tmp_path / "r18.pth")
