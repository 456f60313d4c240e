"""Classic architectures (geoseg.models.classic): offline build, shapes, safetensors, learning."""

from __future__ import annotations

import copy
import math
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.nn import functional as nnf

from geoseg.models.classic import (
    CLASSIC_ARCHITECTURES,
    USES_ENCODER,
    cascade_loss,
    tile_multiple,
)

ARCHS = sorted(CLASSIC_ARCHITECTURES)
BANDS_CLASSES = [(1, 1), (3, 2), (4, 3), (12, 7)]
SIZE = 64


@pytest.fixture(autouse=True)
def one_thread():
    """Two shared cores: one intra-op thread per test process avoids oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def offline(monkeypatch):
    """Network access fails fast and is recorded; the test asserts that nothing was attempted
    (libraries that download may catch the error, so failing the call alone is not enough)."""
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[1:2]))
        raise ConnectionRefusedError("network access refused by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def build(arch: str, in_channels: int = 3, classes: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return CLASSIC_ARCHITECTURES[arch](
        encoder_name="resnet18", in_channels=in_channels, classes=classes
    )


QUADRANT_PATTERNS = ((0, 1), (2, 3), (0, 2), (1, 3))
"""Bright quadrants (0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right) of each image: every
quadrant is bright in exactly half the images, so a network that ignores its input cannot beat
a cross-entropy of ln 2."""


def quadrant_batch(size: int, bands: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with two bright quadrants each; class 1 on the bright quadrants."""
    g = torch.Generator().manual_seed(0)
    half = size // 2
    x = torch.rand(len(QUADRANT_PATTERNS), bands, size, size, generator=g) * 0.6
    y = torch.zeros(len(QUADRANT_PATTERNS), size, size, dtype=torch.long)
    for i, quadrants in enumerate(QUADRANT_PATTERNS):
        for q in quadrants:
            rows, cols = (
                slice(q // 2 * half, (q // 2 + 1) * half),
                slice(q % 2 * half, (q % 2 + 1) * half),
            )
            x[i, :, rows, cols] += 0.4
            y[i, rows, cols] = 1
    return x, y


@pytest.mark.parametrize("arch", ARCHS)
def test_builds_offline(arch, offline):
    net = build(arch)
    assert sum(p.numel() for p in net.parameters()) > 0
    assert offline == []


@pytest.mark.parametrize(("bands", "classes"), BANDS_CLASSES)
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shape_any_band_and_class_count(arch, bands, classes):
    net = build(arch, in_channels=bands, classes=classes).eval()
    with torch.no_grad():
        out = net(torch.rand(2, bands, SIZE, SIZE))
    assert out.shape == (2, classes, SIZE, SIZE)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_safetensors_round_trip(arch, tmp_path):
    net = build(arch, in_channels=4, classes=3, seed=1)
    x = torch.rand(2, 4, SIZE, SIZE)
    with torch.no_grad():
        net.train()(x)  # move the BN running statistics away from their initial values
    net.eval()
    path = tmp_path / "weights.safetensors"
    save_file(net.state_dict(), str(path))
    other = build(arch, in_channels=4, classes=3, seed=2).eval()
    with torch.no_grad():
        expected = net(x)
        assert not torch.equal(other(x), expected)  # the load below must matter
        other.load_state_dict(load_file(str(path)), strict=True)
        assert torch.equal(other(x), expected)


@pytest.mark.parametrize("arch", ARCHS)
def test_learns_bright_quadrants(arch):
    # Stride-32 encoders need two cells of 32 px to resolve a quadrant (FCN-32s has a 2 x 2 score
    # map at 64 px); the others learn the same task at 32 px, which keeps the test fast.
    size = 64 if arch in USES_ENCODER else 32
    x, y = quadrant_batch(size)
    net = build(arch, in_channels=3, classes=2).train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nnf.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # Below 0.7 x the start, and below 0.7 x ln 2, the best loss of a network blind to its input.
    assert losses[-1] < 0.7 * min(losses[0], math.log(2)), [round(v, 3) for v in losses]


@pytest.mark.parametrize("arch", ARCHS)
def test_tile_multiple_is_honest(arch):
    m = tile_multiple(arch)
    assert m == CLASSIC_ARCHITECTURES[arch].TILE_MULTIPLE
    assert m & (m - 1) == 0  # a power of two: the product of the network's strides
    # Odd multiples: a network that really needed 2 * m would break here.
    height, width = 3 * m, 5 * m if m < 32 else 3 * m
    net = build(arch, in_channels=3, classes=2).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, height, width)).shape == (1, 2, height, width)
        with pytest.raises(ValueError, match=f"multiples of {m}"):
            net(torch.rand(1, 3, height + m // 2, width))


def test_registry_names_and_encoder_set():
    assert set(CLASSIC_ARCHITECTURES) == {
        "fcn32s", "fcn16s", "fcn8s", "segnet", "frrn", "fcdensenet56", "fcdensenet67",
        "fcdensenet103", "refinenet", "gcn", "icnet", "enet",
    }  # fmt: skip
    assert set(CLASSIC_ARCHITECTURES) > USES_ENCODER
    assert tile_multiple("ENet") == 8
    with pytest.raises(KeyError, match="segnet"):
        tile_multiple("segnet2")


@pytest.mark.parametrize("arch", ARCHS)
def test_encoder_name_used_exactly_where_declared(arch):
    def count(encoder: str) -> int:
        net = CLASSIC_ARCHITECTURES[arch](encoder_name=encoder, in_channels=3, classes=2)
        return sum(p.numel() for p in net.parameters())

    assert (count("resnet18") != count("mobilenet_v2")) == (arch in USES_ENCODER)


@pytest.mark.parametrize("arch", ["segnet", "fcn8s"])
def test_refuses_pretrained_weights_and_unknown_options(arch):
    cls = CLASSIC_ARCHITECTURES[arch]
    with pytest.raises(ValueError, match="never download"):
        cls(encoder_weights="imagenet")
    with pytest.raises(TypeError, match="decoder_channels"):
        cls(decoder_channels=(1, 2))


def test_icnet_cascade_label_guidance():
    net = build("icnet", in_channels=3, classes=2)
    x, y = quadrant_batch(64)
    logits = net.train()(x)
    assert logits.shape == (4, 2, 64, 64)
    assert [tuple(a.shape[-2:]) for a in net.aux_logits] == [(4, 4), (8, 8), (16, 16)]
    loss = cascade_loss(net.aux_logits, y)
    loss.backward()
    assert math.isfinite(loss.item())
    assert next(net.parameters()).grad is not None
    assert copy.deepcopy(net).aux_logits == ()  # stored outputs are not part of a copy
    assert "aux_logits" not in net.state_dict()
    with torch.no_grad():
        net.eval()(x)
    assert net.aux_logits == ()


@pytest.mark.parametrize(("arch", "skips"), [("fcn32s", 0), ("fcn16s", 1), ("fcn8s", 2)])
def test_fcn_fuses_its_skip_scores(arch, skips):
    net = build(arch, in_channels=3, classes=2).eval()
    assert len(net.score_skips) == skips
    x = torch.rand(1, 3, SIZE, SIZE)
    with torch.no_grad():
        before = net(x)
        for skip in net.score_skips:  # zero-initialised as in the paper: make each one count
            skip.weight.normal_()
            after = net(x)
            assert not torch.allclose(after, before)
            before = after
