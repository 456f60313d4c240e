"""The data catalog: which scenes to segment with which model, where outputs go, and when.

A ``data_catalog.yaml`` is read with a ``yaml.SafeLoader`` that also refuses duplicate keys and
tags that would build Python objects (:class:`CatalogLoader`), and mapped straight onto frozen
dataclasses whose fields are the keyword arguments of the functions they feed
(:class:`Defaults` -> :class:`geoseg.engine.scene.TilingOptions`, ``device``, ``tta``;
:class:`Execution` -> :func:`geoseg.engine.executors.make_executor`; :class:`Outputs` ->
``predict_scene``'s output options). There is no second config layer and no registry of class
names: a key is valid exactly when it is a field.

Every problem raises :class:`~geoseg.errors.CatalogError` whose one-line message names the file
and the YAML path, e.g. ``data_catalog.yaml: scenes[3].path: file not found: /data/x.tif``.

Example::

    models:
      unet: model.safetensors          # relative to this file's folder
    scenes:
      - id: demo
        path: scenes/scene_??.tif      # a file, a glob (expanded at every run) or a GDAL URL
        model: unet
        tags: [synthetic]
    outputs:
      path: catalog_out
      vector_formats: [gpkg]
    defaults: {tile: 256, overlap: 32}
    execution: {workers: 2}            # or {scheduler: tcp://host:8786}; neither: in-process
    schedule: {cron: "0 2 * * *", timezone: Europe/Berlin}
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from geoseg.errors import CatalogError, GeosegError
from geoseg.io.files import is_virtual_path
from geoseg.models.contract import ModelContract
from geoseg.models.modelfile import read_contract
from geoseg.options import InferenceOptions, InputOptions, OutputOptions, TilingOptions

GLOB_CHARS = frozenset("*?[")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")


@dataclass(frozen=True)
class SceneEntry:
    """One ``scenes:`` entry: a file, a glob or a GDAL URL, and how to read it.

    ``path`` is absolute (resolved against the catalog's folder) unless it is a URL.
    """

    id: str
    path: str
    model: str = ""
    bands: tuple[int, ...] | None = None
    nodata: float | None = None
    tags: tuple[str, ...] = ()

    @property
    def input(self) -> InputOptions:
        """How to read this entry's files."""
        return InputOptions(bands=self.bands, nodata=self.nodata)

    @property
    def is_glob(self) -> bool:
        """True when ``path`` is a pattern expanded at run time."""
        return not is_virtual_path(self.path) and bool(GLOB_CHARS & set(self.path))


@dataclass(frozen=True)
class Outputs:
    """Where products go and which ones: ``predict_scene``'s output options.

    ``path`` is a folder (relative to the catalog's folder) or a ``file://`` URI; each scene
    entry writes into ``<path>/<entry id>/``.
    """

    path: str
    vector_formats: tuple[str, ...] = ("gpkg",)
    confidence: bool = False
    simplify: float = 0.0
    min_area: float = 0.0

    @property
    def options(self) -> OutputOptions:
        """The :class:`~geoseg.options.OutputOptions` of this section."""
        return OutputOptions(
            vector_formats=self.vector_formats,
            confidence=self.confidence,
            simplify=self.simplify,
            min_area=self.min_area,
        )


@dataclass(frozen=True)
class Defaults:
    """Tiling and inference options shared by every scene."""

    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 4
    block_size: int | None = None
    device: str = "auto"
    tta: bool = False

    @property
    def tiling(self) -> TilingOptions:
        """The :class:`~geoseg.options.TilingOptions` these defaults describe."""
        return TilingOptions(
            tile=self.tile,
            overlap=self.overlap,
            batch_size=self.batch_size,
            block_size=self.block_size,
        )

    @property
    def inference(self) -> InferenceOptions:
        """The :class:`~geoseg.options.InferenceOptions` these defaults describe."""
        return InferenceOptions(device=self.device, tta=self.tta)


@dataclass(frozen=True)
class Execution:
    """Where blocks run: the keyword arguments of :func:`geoseg.engine.executors.make_executor`.

    Neither field: in this process. ``workers``: a local Dask cluster of that many processes.
    ``scheduler``: an existing Dask scheduler (``tcp://host:8786``).
    """

    workers: int | None = None
    scheduler: str | None = None


@dataclass(frozen=True)
class Schedule:
    """When a deployment runs the catalog: a cron expression in an IANA timezone."""

    cron: str
    timezone: str = "UTC"


@dataclass(frozen=True)
class Catalog:
    """A parsed and validated data catalog."""

    path: Path
    models: Mapping[str, Path]
    scenes: tuple[SceneEntry, ...]
    outputs: Outputs
    defaults: Defaults = field(default_factory=Defaults)
    execution: Execution = field(default_factory=Execution)
    schedule: Schedule | None = None
    name: str = ""

    @property
    def folder(self) -> Path:
        """The folder relative paths in the catalog resolve against."""
        return self.path.parent

    @property
    def output_dir(self) -> Path:
        """The local output folder."""
        return Path(self.outputs.path)


SECTIONS: dict[str, type] = {
    "outputs": Outputs,
    "defaults": Defaults,
    "execution": Execution,
    "schedule": Schedule,
}
TOP_LEVEL = ("name", "models", "scenes", "outputs", "defaults", "execution", "schedule")
REQUIRED = ("models", "scenes", "outputs")


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read, validate and resolve a data catalog file.

    Checks the schema, the types, references between sections and that every model file
    exists. Scene files are looked for by :func:`discover_files` (globs expand at run time).

    Raises
    ------
    CatalogError
        With the YAML path of the first problem.

    Examples
    --------
    >>> catalog = load_catalog("data_catalog.yaml")  # doctest: +SKIP
    >>> catalog.defaults.tiling  # doctest: +SKIP
    TilingOptions(tile=64, overlap=16, batch_size=4, block_size=None)
    """
    file = Path(path)
    if not file.is_file():
        raise CatalogError(f"{file}: catalog file not found; check the path")
    data = _read_yaml(file)
    try:
        return _parse(file.resolve(), data)
    except _YamlPathError as problem:
        raise CatalogError(f"{file.name}: {problem.where}: {problem.message}") from None


def discover_files(entry: SceneEntry) -> list[str]:
    """The scene files an entry names right now: a glob's sorted matches, else the path itself.

    A literal local path is returned whether or not it exists (a missing file is reported when
    the scene runs); a glob that matches nothing gives an empty list.
    """
    if entry.is_glob:
        return sorted(p for p in glob.glob(entry.path, recursive=True) if os.path.isfile(p))
    return [entry.path]


def scene_id(entry: SceneEntry, file: str) -> str:
    """``<entry id>/<file stem>`` for a glob's match, the entry's id otherwise."""
    return f"{entry.id}/{Path(file).stem}" if entry.is_glob else entry.id


def entry_where(catalog: Catalog, entry: SceneEntry) -> str:
    """The YAML path of an entry, e.g. ``scenes[3]``."""
    return f"scenes[{catalog.scenes.index(entry)}]"


@dataclass(frozen=True)
class CatalogReport:
    """What :func:`validate_catalog` found: the catalog, model contracts, each entry's files."""

    catalog: Catalog
    contracts: Mapping[str, ModelContract]
    files: Mapping[str, tuple[str, ...]]


def validate_catalog(path: str | os.PathLike[str]) -> CatalogReport:
    """Load a catalog, read every model's contract and list the scene files each entry names now.

    Raises
    ------
    CatalogError
        For a schema problem, a model file that is not a geoseg model, or a literal scene path
        that does not exist (``scenes[3].path: file not found: ...``). A glob that matches
        nothing is not an error (files may arrive later): its list is empty.
    """
    catalog = load_catalog(path)
    contracts = {}
    for name, model in catalog.models.items():
        try:
            contracts[name] = read_contract(model)
        except GeosegError as exc:
            raise CatalogError(f"{catalog.path.name}: models.{name}: {exc}") from None
    files = {}
    for i, entry in enumerate(catalog.scenes):
        local = not entry.is_glob and not is_virtual_path(entry.path)
        if local and not os.path.isfile(entry.path):
            raise CatalogError(
                f"{catalog.path.name}: scenes[{i}].path: file not found: {entry.path}"
            )
        files[entry.id] = tuple(discover_files(entry))
    return CatalogReport(catalog, contracts, files)


class _YamlPathError(Exception):
    """A validation problem at a YAML path (turned into a CatalogError with the file name)."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


PLAIN_TAG = "tag:yaml.org,2002:"
"""Prefix of YAML's own tags (str, int, map, ...); ``python/...`` ones are refused."""
MERGE_KEY = "<<"


class CatalogLoader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys and tags outside YAML's plain ones.

    Both are checked on the composed node tree before anything is constructed, so the problem
    is reported at its YAML path (``scenes[1].path``) instead of the last value silently winning.

    Examples
    --------
    >>> yaml.load("b: {c: 2, c: 3}", Loader=CatalogLoader)
    Traceback (most recent call last):
    ...
    geoseg.batch.catalog._YamlPathError: b.c: duplicate key (lines 1 and 1); keep one
    """

    def get_single_data(self) -> Any:
        node = self.get_single_node()
        if node is None:
            return None
        check_nodes(node, "")
        return self.construct_document(node)


def check_nodes(node: yaml.Node, where: str) -> None:
    """Raise :class:`_YamlPathError` for a foreign tag or a duplicate key under ``node``."""
    check_tag(node, where)
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            check_nodes(item, f"{where}[{i}]")
    elif isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key, value in node.value:
            check_tag(key, where or "(top level)")
            path = f"{where}.{key.value}" if where else str(key.value)
            if key.value in lines and key.value != MERGE_KEY:
                first, line = lines[key.value], key.start_mark.line + 1
                raise _YamlPathError(path, f"duplicate key (lines {first} and {line}); keep one")
            lines[key.value] = key.start_mark.line + 1
            check_nodes(value, path)


def check_tag(node: yaml.Node, where: str) -> None:
    """Refuse tags that construct Python objects (or anything but YAML's plain types)."""
    tag = node.tag or ""
    if not tag.startswith(PLAIN_TAG) or tag.startswith(PLAIN_TAG + "python/"):
        shown = "!!" + tag.removeprefix(PLAIN_TAG) if tag.startswith(PLAIN_TAG) else tag
        raise _YamlPathError(
            where or "(top level)",
            f"YAML tag {shown} (line {node.start_mark.line + 1}) is not allowed: a catalog "
            "holds plain values (text, numbers, lists, mappings); remove the tag",
        )


def _read_yaml(file: Path) -> Any:
    try:
        return yaml.load(file.read_text(encoding="utf-8"), Loader=CatalogLoader)
    except _YamlPathError as bad:
        raise CatalogError(f"{file.name}: {bad.where}: {bad.message}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise CatalogError(f"{file.name}: {at}YAML syntax error ({problem})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{file.name}: cannot read the catalog ({exc})") from None


def _parse(file: Path, data: Any) -> Catalog:
    if not isinstance(data, dict):
        raise _YamlPathError("(top level)", f"expected a mapping with keys {', '.join(TOP_LEVEL)}")
    _check_keys(data, TOP_LEVEL, "(top level)")
    for key in REQUIRED:
        if key not in data:
            raise _YamlPathError(
                key, f"required section missing; valid keys: {', '.join(TOP_LEVEL)}"
            )
    folder = file.parent
    models = _models(data["models"], folder)
    sections = {key: _section(cls, data.get(key), key) for key, cls in SECTIONS.items()}
    outputs = _resolve_outputs(sections["outputs"], folder)
    _check_options(outputs, sections["defaults"], sections["execution"], sections["schedule"])
    return Catalog(
        path=file,
        models=models,
        scenes=_scenes(data["scenes"], folder, models),
        outputs=outputs,
        defaults=sections["defaults"] or Defaults(),
        execution=sections["execution"] or Execution(),
        schedule=sections["schedule"],
        name=_coerce(data.get("name") or file.stem, str, "name"),
    )


def _check_keys(data: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    for key in data:
        if key not in valid:
            at = f"{where}.{key}" if where != "(top level)" else str(key)
            raise _YamlPathError(at, f"unknown key; valid keys: {', '.join(valid)}")


def _section(cls: type, data: Any, where: str) -> Any:
    """Build a frozen dataclass from a mapping, checking keys and types field by field."""
    if data is None:
        return None
    if not isinstance(data, dict):
        raise _YamlPathError(where, f"expected a mapping, got {_show(data)}")
    fields = [f.name for f in dataclasses.fields(cls)]
    _check_keys(data, fields, where)
    hints = typing.get_type_hints(cls)
    missing = [f.name for f in dataclasses.fields(cls) if _required(f) and f.name not in data]
    if missing:
        raise _YamlPathError(f"{where}.{missing[0]}", "required")
    kwargs = {key: _coerce(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    return cls(**kwargs)


def _required(f: dataclasses.Field[Any]) -> bool:
    no_default = f.default is dataclasses.MISSING
    return no_default and f.default_factory is dataclasses.MISSING


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a simple type hint (scalars, optionals, homogeneous tuples)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, where)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise _YamlPathError(where, f"expected a list, got {_show(value)}")
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(items))
    return _scalar(value, hint, where)


def _scalar(value: Any, hint: type, where: str) -> Any:
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, int | float) and not isinstance(value, bool),
        str: isinstance(value, str),
    }[hint]
    if not ok:
        hint_text = " (quote it)" if hint is str and value is not None else ""
        raise _YamlPathError(where, f"expected {_TYPE_NAMES[hint]}, got {_show(value)}{hint_text}")
    return float(value) if hint is float else value


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "text"}


def _show(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _resolve(text: str, folder: Path) -> str:
    """An absolute local path (``~`` expanded, relative to ``folder``); URLs unchanged."""
    if is_virtual_path(text):
        return text
    return os.path.normpath(folder / Path(text).expanduser())


def _models(data: Any, folder: Path) -> dict[str, Path]:
    if not isinstance(data, dict) or not data:
        raise _YamlPathError("models", "expected a mapping of model name -> model file")
    models = {}
    for name, value in data.items():
        where = f"models.{name}"
        path = Path(_resolve(_coerce(value, str, where), folder))
        if not path.is_file():
            raise _YamlPathError(where, f"file not found: {path}")
        models[str(name)] = path
    return models


def _scenes(data: Any, folder: Path, models: Mapping[str, Path]) -> tuple[SceneEntry, ...]:
    if not isinstance(data, list) or not data:
        raise _YamlPathError("scenes", "expected a list of scene entries (id, path, model)")
    entries: list[SceneEntry] = []
    for i, item in enumerate(data):
        entry = _section(SceneEntry, item, f"scenes[{i}]")
        entries.append(_check_entry(entry, f"scenes[{i}]", folder, models, entries))
    return tuple(entries)


def _check_entry(
    entry: SceneEntry, where: str, folder: Path, models: Mapping[str, Path], seen: list[SceneEntry]
) -> SceneEntry:
    if not ID_PATTERN.match(entry.id):
        raise _YamlPathError(f"{where}.id", f"{entry.id!r}: use letters, digits, '.', '_' or '-'")
    previous = [i for i, e in enumerate(seen) if e.id == entry.id]
    if previous:
        raise _YamlPathError(
            f"{where}.id", f"duplicate id {entry.id!r} (also scenes[{previous[0]}])"
        )
    model = entry.model or (next(iter(models)) if len(models) == 1 else "")
    if model not in models:
        problem = f"unknown model {entry.model!r}" if entry.model else "required"
        raise _YamlPathError(f"{where}.model", f"{problem}; choose one of: {', '.join(models)}")
    _options(where, lambda: entry.input)
    return dataclasses.replace(entry, path=_resolve(entry.path, folder), model=model)


def _resolve_outputs(outputs: Outputs | None, folder: Path) -> Outputs:
    if outputs is None:
        raise _YamlPathError("outputs", "expected a mapping with at least 'path'")
    text = outputs.path.removeprefix("file://")
    if is_virtual_path(text):
        raise _YamlPathError(
            "outputs.path",
            f"{outputs.path!r}: only local folders and file:// URIs are supported; "
            "write locally and sync the folder to object storage",
        )
    return dataclasses.replace(outputs, path=_resolve(text, folder))


def _check_options(
    outputs: Outputs,
    defaults: Defaults | None,
    execution: Execution | None,
    schedule: Schedule | None,
) -> None:
    """Build each section's option bundles once, so their own checks run with YAML paths."""
    _options("outputs", lambda: outputs.options)
    if defaults is not None:
        _options("defaults", lambda: (defaults.tiling, defaults.inference))
    if execution is not None:
        _check_execution(execution)
    if schedule is not None:
        _check_schedule(schedule)


def _options(section: str, build: Callable[[], object]) -> None:
    """Run ``build``; an option error becomes a problem at ``<section>.<option>``."""
    try:
        build()
    except GeosegError as exc:
        where = f"{section}.{exc.option}" if exc.option else section
        raise _YamlPathError(where, exc.render(lambda name: f"{section}.{name}")) from None


def _check_execution(execution: Execution) -> None:
    if execution.workers is not None and execution.scheduler is not None:
        raise _YamlPathError(
            "execution", "give workers (a local Dask cluster) or scheduler, not both"
        )
    if execution.workers is not None and execution.workers < 1:
        raise _YamlPathError("execution.workers", f"must be >= 1, got {execution.workers}")


def _check_schedule(schedule: Schedule) -> None:
    import zoneinfo

    parts = schedule.cron.split()
    if len(parts) != 5 or not all(CRON_FIELD.match(p) for p in parts):
        raise _YamlPathError(
            "schedule.cron",
            f"{schedule.cron!r} is not a cron expression; give 5 fields: "
            "minute hour day-of-month month day-of-week, e.g. '0 2 * * *'",
        )
    try:
        zoneinfo.ZoneInfo(schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise _YamlPathError(
            "schedule.timezone",
            f"unknown timezone {schedule.timezone!r}; use an IANA name such as Europe/Berlin",
        ) from None


SECTION_OF = {
    **{
        name: "defaults"
        for name in ("tile", "overlap", "batch_size", "block_size", "device", "tta")
    },
    **{name: "outputs" for name in ("vector_formats", "confidence", "simplify", "min_area")},
    **{name: "execution" for name in ("workers", "scheduler")},
}
"""The catalog section of each option that is not set per scene entry."""


def yaml_path(option: str, entry: str) -> str:
    """Where the catalog sets ``option``: its section, or the scene entry ``entry`` (``scenes[3]``).

    Examples
    --------
    >>> yaml_path("tile", "scenes[3]"), yaml_path("bands", "scenes[3]")
    ('defaults.tile', 'scenes[3].bands')
    """
    return f"{SECTION_OF.get(option, entry)}.{option}"
