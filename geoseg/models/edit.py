"""Edit a model file's contract (class names, colours) without touching its weights.

A safetensors file is an 8-byte little-endian header length, a JSON header (tensor offsets and
string metadata, where the contract lives) and the tensor bytes. :func:`edit_contract` rewrites
only the header: the tensor bytes are copied unchanged, so :func:`weights_sha256` stays the same.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

from geoseg.errors import InvalidInputError
from geoseg.io.files import atomic_output
from geoseg.models.contract import ModelContract
from geoseg.models.modelfile import CONTRACT_KEY, read_contract

Rgb = tuple[int, int, int]


def _read_header(fh: BinaryIO) -> dict[str, Any]:
    (size,) = struct.unpack("<Q", fh.read(8))
    header: dict[str, Any] = json.loads(fh.read(size))
    return header


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a safetensors file's tensor bytes (the part after the header)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        _read_header(fh)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def edited(
    contract: ModelContract, rename: Mapping[str, str], colors: Mapping[str, Rgb]
) -> ModelContract:
    """The contract with classes renamed and recoloured (colours name classes after renaming).

    Examples
    --------
    >>> from geoseg.testing import test_contract
    >>> c = edited(test_contract(), {"water": "lake"}, {"lake": (0, 0, 255)})
    >>> c.classes, c.colors[2]
    (('background', 'building', 'lake'), (0, 0, 255))
    """
    for option, names in (("rename", rename), ("color", colors)):
        known = set(contract.classes) if option == "rename" else set(_renamed(contract, rename))
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InvalidInputError(
                f"class {unknown[0]!r} is not in the model; `{option}` one of: "
                f"{', '.join(sorted(known))}",
                option=option,
            )
    classes = _renamed(contract, rename)
    if len(set(classes)) != len(classes):
        raise InvalidInputError(
            f"renaming gives duplicate class names {classes}; fix `rename`", option="rename"
        )
    palette = tuple(colors.get(n, c) for n, c in zip(classes, contract.colors, strict=True))
    return dataclasses.replace(contract, classes=classes, colors=palette)


def _renamed(contract: ModelContract, rename: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(rename.get(n, n) for n in contract.classes)


def edit_contract(
    path: str | os.PathLike[str],
    rename: Mapping[str, str],
    colors: Mapping[str, Rgb],
    out: str | os.PathLike[str] | None = None,
) -> Path:
    """Rewrite a model file's contract (in place unless ``out``), atomically; returns the path.

    Examples
    --------
    >>> edit_contract("m.safetensors", {"a": "water"}, {"water": (0, 0, 255)})  # doctest: +SKIP
    PosixPath('m.safetensors')
    """
    contract = edited(read_contract(path), rename, colors)
    target = Path(out or path)
    with open(path, "rb") as src, atomic_output(target, overwrite=True) as tmp:
        header = _read_header(src)
        header.setdefault("__metadata__", {})[CONTRACT_KEY] = contract.to_json()
        text = json.dumps(header, separators=(",", ":")).encode("utf-8")
        text += b" " * (-len(text) % 8)  # safetensors keeps the data 8-byte aligned
        with open(tmp, "wb") as dst:
            dst.write(struct.pack("<Q", len(text)) + text)
            shutil.copyfileobj(src, dst, 1 << 20)
    return target
