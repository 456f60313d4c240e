"""Predictors: a NumPy batch ``(N, C, T, T)`` float32 in, class probabilities ``(N, K, T, T)`` out.

This is the boundary between the tiling engine and the network. The engine accepts anything of
that shape, so tests run with tiny deterministic fakes and a Dask worker only needs a model path.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Protocol

import numpy as np

from geoseg.errors import InvalidInputError, ModelFileError, choice_error
from geoseg.models.contract import Mode, ModelContract
from geoseg.models.modelfile import file_sha256, load_model_file
from geoseg.models.registry import build_network


class Predictor(Protocol):
    """Maps a normalised batch ``(N, C, T, T)`` to probabilities ``(N, K, T, T)``."""

    num_classes: int

    def __call__(self, batch: np.ndarray) -> np.ndarray: ...


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; validate ``cpu``/``cuda[:N]``/``mps``."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise choice_error("device", device, ["auto", "cpu", "cuda", "cuda:N", "mps"], "device")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(
            f"device {device!r} requested but CUDA is not available; set `device` to cpu",
            option="device",
        )
    return device


def scores_to_probabilities(logits: Any, mode: Mode) -> Any:
    """Softmax over classes, or for binary mode ``[1 - sigmoid, sigmoid]``."""
    import torch

    if mode == "binary":
        p = torch.sigmoid(logits)
        return torch.cat([1 - p, p], dim=1)
    return torch.softmax(logits, dim=1)


class TorchPredictor:
    """Runs an SMP network on CPU or CUDA (mixed precision on CUDA, channels-last memory).

    Parameters
    ----------
    network
        A ``torch.nn.Module`` returning logits ``(N, outputs, T, T)``.
    contract
        The model's contract (mode and class count).
    device
        ``cpu``, ``cuda``, ``cuda:1``, ...
    """

    def __init__(self, network: Any, contract: ModelContract, device: str = "cpu") -> None:
        import torch

        self.device = torch.device(device)
        self.mode = contract.mode
        self.num_classes = contract.num_classes
        self.amp = self.device.type == "cuda"
        self.network = network.eval().to(self.device, memory_format=torch.channels_last)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.tensor(batch).cpu().numpy()

    def tensor(self, batch: np.ndarray) -> Any:
        """Probabilities ``(N, K, T, T)`` float32, left on the device (a ``torch.Tensor``)."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.device.type == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=self.amp):
            return scores_to_probabilities(self.network(x).float(), self.mode)


D4 = [(k, flip) for flip in (False, True) for k in range(4)]
"""The 8 symmetries of the square: 4 rotations, each with and without a horizontal flip."""


def d4_forward(batch: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """Apply one D4 transform to the last two axes."""
    out = np.flip(batch, axis=-1) if flip else batch
    return np.rot90(out, k, axes=(-2, -1))


class D4Predictor:
    """Test-time augmentation: the mean of a predictor over the 8 D4 transforms of each tile."""

    def __init__(self, inner: Predictor) -> None:
        self.inner = inner
        self.num_classes = inner.num_classes
        self.device = getattr(inner, "device", None)

    def tensor(self, batch: np.ndarray) -> Any:
        """The mean over the 8 transforms as a tensor on the inner predictor's device."""
        import torch

        total = None
        inner = getattr(self.inner, "tensor", None)
        for k, flip in D4:
            x = np.ascontiguousarray(d4_forward(batch, k, flip))
            probs = inner(x) if callable(inner) else torch.from_numpy(self.inner(x))
            probs = torch.rot90(probs, -k, dims=(-2, -1))  # undo d4_forward
            probs = torch.flip(probs, dims=(-1,)) if flip else probs
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(D4)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.tensor(batch).cpu().numpy()


def network_from_state(contract: ModelContract, state_dict: dict[str, Any]) -> Any:
    """Build the contract's network and load the weights into it."""

    net = build_network(contract.arch, contract.encoder, contract.bands, contract.num_outputs)
    net.load_state_dict(state_dict)
    return net


@functools.lru_cache(maxsize=4)
def _cached_predictor(path: str, sha256: str, device: str, tta: bool) -> Predictor:

    model = load_model_file(path)
    try:
        net = network_from_state(model.contract, model.state_dict)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__
        raise ModelFileError(
            f"{path}: the weights do not fit the contract's network ({first}); the file's "
            "contract and weights disagree: recreate it with 'geoseg model-create' or "
            "'geoseg train'"
        ) from exc
    predictor: Predictor = TorchPredictor(net, model.contract, device)
    return D4Predictor(predictor) if tta else predictor


def load_predictor(
    path: str | os.PathLike[str], device: str = "auto", tta: bool = False, sha256: str | None = None
) -> Predictor:
    """A predictor for a model file, loaded once per process and reused (keyed by the file's hash).

    Dask workers call this for every block; only the first call loads the weights.
    """

    digest = sha256 or file_sha256(path)
    return _cached_predictor(os.fspath(path), digest, resolve_device(device), tta)
