"""Model registry, model file (weights + contract), safety of loading, predictors."""

from __future__ import annotations

import pickle
import socket
import warnings
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from geoseg.cli.options import flag
from geoseg.errors import (
    ContractMismatchError,
    GsdMismatchWarning,
    ModelFileError,
    UnknownChoiceError,
)
from geoseg.models.contract import ModelContract, Normalization, check_input
from geoseg.models.modelfile import load_model_file, read_contract, read_state_dict
from geoseg.models.predictor import D4Predictor, TorchPredictor, load_predictor, network_from_state
from geoseg.models.registry import build_network
from geoseg.testing import PixelwisePredictor, create_test_model, test_contract

ARCH_SAMPLES = [
    ("unet", "resnet18", 64),
    ("unetplusplus", "resnet18", 64),
    ("fpn", "resnet18", 64),
    ("pspnet", "resnet18", 64),
    ("deeplabv3", "resnet18", 64),
    ("deeplabv3plus", "resnet18", 64),
    ("linknet", "resnet18", 64),
    ("manet", "resnet18", 64),
    ("pan", "resnet18", 128),
    ("upernet", "resnet18", 64),
    ("segformer", "mit_b0", 64),
    ("dpt", "tu-vit_tiny_patch16_224", 224),
]


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to resolve a name or open a connection is recorded and refused."""
    attempts: list[str] = []

    def refuse(name):
        def blocked(*args, **kwargs):
            attempts.append(f"{name}{args[1:] if name.endswith('connect') else args}")
            raise OSError(f"network blocked in tests: {name}")

        return blocked

    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
    return attempts


@pytest.mark.parametrize(("arch", "encoder", "size"), ARCH_SAMPLES)
def test_every_smp_architecture_builds_offline(arch, encoder, size, no_network):
    net = build_network(arch, encoder, in_channels=4, outputs=3).eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 4, size, size)).shape == (1, 3, size, size)
    assert no_network == []  # not even a failed (and swallowed) download attempt


def test_unknown_names_list_valid_choices():
    with pytest.raises(UnknownChoiceError, match="deeplabv3plus"):
        build_network("deeplab4", "resnet18", 3, 2)
    with pytest.raises(UnknownChoiceError, match="resnet18"):
        build_network("unet", "resnet19", 3, 2)


def test_contract_json_round_trip():
    contract = ModelContract(
        arch="unet", encoder="resnet18", bands=4, dtype="uint16", classes=("bg", "roof"),
        colors=((0, 0, 0), (255, 0, 0)), mode="binary",
        normalization=Normalization((10.0,) * 4, (3000.0,) * 4, (0.4,) * 4, (0.2,) * 4),
        gsd=0.3, tile_size=256, band_names=("r", "g", "b", "nir"),
    )  # fmt: skip
    assert ModelContract.from_json(contract.to_json()) == contract


def test_model_file_round_trip_and_probabilities(tmp_path):
    path = create_test_model(tmp_path / "m.safetensors", "unet", "resnet18", 3, ["bg", "a", "b"],
                             tile_size=64, gsd=0.5)  # fmt: skip
    model = load_model_file(path)
    assert model.contract.classes == ("bg", "a", "b") and model.contract.gsd == 0.5
    assert len(model.sha256) == 64
    predictor = TorchPredictor(network_from_state(model.contract, model.state_dict), model.contract)
    probs = predictor(np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32))
    assert probs.shape == (2, 3, 64, 64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_binary_mode_gives_two_class_probabilities(tmp_path):
    path = create_test_model(tmp_path / "b.safetensors", "fpn", "resnet18", 3, ["bg", "roof"],
                             mode="binary", tile_size=64)  # fmt: skip
    predictor = load_predictor(path, device="cpu")
    probs = predictor(np.zeros((1, 3, 64, 64), np.float32))
    assert probs.shape == (1, 2, 64, 64)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)


def test_weights_trained_elsewhere_are_wrapped(tmp_path):
    net = build_network("deeplabv3plus", "resnet18", 4, 2)
    torch.save(net.state_dict(), tmp_path / "trained.pt")
    path = create_test_model(tmp_path / "m.safetensors", "deeplabv3plus", "resnet18", 4,
                             ["bg", "x"], weights=tmp_path / "trained.pt")  # fmt: skip
    loaded = load_model_file(path).state_dict
    for key, value in net.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_mismatched_weights_are_explained(tmp_path):
    torch.save(build_network("unet", "resnet18", 3, 5).state_dict(), tmp_path / "w.pt")
    fix = r"w\.pt: .*do not fit.*check arch, encoder, bands and classes"
    with pytest.raises(ModelFileError, match=fix) as err:
        create_test_model(tmp_path / "m.safetensors", "unet", "resnet18", 3, ["bg", "x"],
                          weights=tmp_path / "w.pt")  # fmt: skip
    assert "--classes" in err.value.render(flag)  # the CLI names the flag


def test_local_encoder_weights_are_loaded(tmp_path):
    encoder = build_network("unet", "resnet18", 3, 2).encoder
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    path = create_test_model(tmp_path / "m.safetensors", "unet", "resnet18", 3, ["bg", "x"],
                             encoder_weights=tmp_path / "encoder.pt")  # fmt: skip
    loaded = load_model_file(path).state_dict
    for key, value in encoder.state_dict().items():
        assert torch.equal(loaded[f"encoder.{key}"], value)


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "x": Payload(str(marker))}, evil)
    with pytest.raises(ModelFileError, match="refused"):
        read_state_dict(evil)
    with pytest.raises(ModelFileError):
        create_test_model(
            tmp_path / "m.safetensors", "unet", "resnet18", 3, ["bg", "x"], weights=evil
        )
    # a raw pickle posing as a model file
    fake_model = tmp_path / "model.safetensors"
    fake_model.write_bytes(pickle.dumps(Payload(str(marker))))
    with pytest.raises(ModelFileError, match="not a geoseg model"):
        load_model_file(fake_model)
    assert not marker.exists()


def test_safetensors_without_contract_is_refused(tmp_path):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(
        ModelFileError, match=r"plain\.safetensors: .* wrap the weights .* model-create"
    ):
        read_contract(tmp_path / "plain.safetensors")


def test_input_is_checked_against_the_contract():
    contract = test_contract(bands=4, dtype="uint16")
    with pytest.raises(ContractMismatchError, match="has 3 band"):
        check_input(contract, "s.tif", 3, "uint16", 0.5)
    with pytest.raises(ContractMismatchError, match="uint8 but the model expects uint16"):
        check_input(contract, "s.tif", 4, "uint8", 0.5)
    with pytest.warns(GsdMismatchWarning, match="pixel size 2 m"):
        check_input(contract, "s.tif", 4, "uint16", 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_input(contract, "s.tif", 4, "uint16", 0.6)


def explicit_d4_mean(predictor, batch):
    """The mean over the 8 symmetries of the square, each undone, spelt out one by one."""
    outputs = []
    for flip in (False, True):
        for k in range(4):
            x = batch[..., ::-1] if flip else batch
            y = predictor(np.ascontiguousarray(np.rot90(x, k, axes=(2, 3))))
            y = np.rot90(y, -k, axes=(2, 3))
            outputs.append(y[..., ::-1] if flip else y)
    return np.mean(outputs, axis=0)


@dataclass
class LeftLeaningPredictor:
    """Not equivariant: favours class 0 on the left of a tile and class 1 on the right."""

    num_classes: int = 3

    def __call__(self, batch):
        probs = PixelwisePredictor(batch.shape[1], self.num_classes)(batch)
        ramp = np.linspace(0, 1, batch.shape[-1], dtype=np.float32)
        probs[:, 0] += 1 - ramp
        probs[:, 1] += ramp * np.linspace(0.5, 1.5, batch.shape[-2])[:, None]
        return probs / probs.sum(axis=1, keepdims=True)


def test_d4_tta_of_an_equivariant_predictor_is_unchanged():
    batch = np.random.default_rng(1).normal(size=(2, 3, 32, 32)).astype(np.float32)
    inner = PixelwisePredictor(3, 4)
    np.testing.assert_allclose(D4Predictor(inner)(batch), inner(batch), atol=1e-6)
    lopsided = LeftLeaningPredictor()
    tta = D4Predictor(lopsided)(batch)
    assert np.abs(tta - lopsided(batch)).max() > 0.05  # TTA changes a non-equivariant model
    np.testing.assert_allclose(tta, explicit_d4_mean(lopsided, batch), atol=1e-6)


def test_normalization_scales_then_standardises():
    norm = Normalization((100.0,), (300.0,), (0.5,), (0.25,))
    out = norm.apply(np.array([[0, 100, 200, 300, 1000]], dtype=np.uint16))
    np.testing.assert_allclose(out[0], [-2, -2, 0, 2, 2])
