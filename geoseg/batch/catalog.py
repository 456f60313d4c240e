"""The data catalog: which scenes to segment with which model, where outputs go, and when.

A ``data_catalog.yaml`` is read with a ``yaml.SafeLoader`` that also refuses duplicate keys and
tags that would build Python objects (:mod:`geoseg.batch.yamlfile`), and validated by pydantic
models (:class:`CatalogFile`) whose fields are the keyword arguments of the option bundles they
feed (:class:`Defaults` -> :class:`~geoseg.options.TilingOptions` and
:class:`~geoseg.options.InferenceOptions`; :class:`Execution` ->
:func:`geoseg.engine.executors.make_executor`; :class:`Outputs` ->
:class:`~geoseg.options.OutputOptions`). There is no second config layer and no registry of
class names: a key is valid exactly when it is a field. ``geoseg catalog schema`` prints the
models' JSON Schema for editors.

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

import glob
import json
import os
import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic_core import PydanticCustomError

from geoseg.batch.yamlfile import YamlPathError, read_yaml
from geoseg.errors import CatalogError, GeosegError
from geoseg.io.files import is_virtual_path
from geoseg.models.contract import ModelContract
from geoseg.models.modelfile import read_contract
from geoseg.options import InferenceOptions, InputOptions, OutputOptions, TilingOptions

GLOB_CHARS = frozenset("*?[")
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")


def _shown(value: Any) -> str:
    return "nothing" if value is None else f"{type(value).__name__} {value!r}"


def _typed(kind: type, name: str, hint: str = "") -> BeforeValidator:
    """A check that a YAML value has exactly the expected type (no coercion from text)."""

    def check(value: Any) -> Any:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok:
            extra = hint if value is not None else ""
            raise PydanticCustomError(
                "geoseg_type", "expected {name}, got {shown}{hint}",
                {"name": name, "shown": _shown(value), "hint": extra},
            )  # fmt: skip
        return float(value) if kind is float else value

    return BeforeValidator(check)


def _listed(value: Any) -> Any:
    """A single text where a list is expected stands for a list of one."""
    return [value] if isinstance(value, str) else value


Text = Annotated[str, _typed(str, "text", " (quote it)")]
Integer = Annotated[int, _typed(int, "an integer")]
Number = Annotated[float, _typed(float, "a number")]
Flag = Annotated[bool, _typed(bool, "true or false")]
Texts = Annotated[tuple[Text, ...], BeforeValidator(_listed)]


class Section(BaseModel):
    """A catalog section: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SceneEntry(Section):
    """One ``scenes:`` entry: a file, a glob or a GDAL URL, and how to read it.

    ``path`` is absolute (resolved against the catalog's folder) unless it is a URL.
    """

    id: Text
    path: Text
    model: Text = ""
    bands: tuple[Integer, ...] | None = None
    nodata: Number | None = None
    tags: Texts = ()

    @property
    def input(self) -> InputOptions:
        """How to read this entry's files."""
        return InputOptions(bands=self.bands, nodata=self.nodata)

    @property
    def is_glob(self) -> bool:
        """True when ``path`` is a pattern expanded at run time."""
        return not is_virtual_path(self.path) and bool(GLOB_CHARS & set(self.path))


class Outputs(Section):
    """Where products go and which ones: ``predict_scene``'s output options.

    ``path`` is a folder (relative to the catalog's folder) or a ``file://`` URI; each scene
    entry writes into ``<path>/<entry id>/``.
    """

    path: Text
    vector_formats: Texts = ("gpkg",)
    confidence: Flag = False
    simplify: Number = 0.0
    min_area: Number = 0.0

    @property
    def options(self) -> OutputOptions:
        """The :class:`~geoseg.options.OutputOptions` of this section."""
        return OutputOptions(
            vector_formats=self.vector_formats,
            confidence=self.confidence,
            simplify=self.simplify,
            min_area=self.min_area,
        )


class Defaults(Section):
    """Tiling and inference options shared by every scene."""

    tile: Integer | None = None
    overlap: Integer | None = None
    batch_size: Integer = 4
    block_size: Integer | None = None
    memory_mb: Integer = 512
    device: Text = "auto"
    tta: Flag = False
    crf: Flag = False

    @property
    def tiling(self) -> TilingOptions:
        """The :class:`~geoseg.options.TilingOptions` these defaults describe."""
        return TilingOptions(
            tile=self.tile,
            overlap=self.overlap,
            batch_size=self.batch_size,
            block_size=self.block_size,
            memory_mb=self.memory_mb,
        )

    @property
    def inference(self) -> InferenceOptions:
        """The :class:`~geoseg.options.InferenceOptions` these defaults describe."""
        return InferenceOptions(device=self.device, tta=self.tta, crf=self.crf)


class Execution(Section):
    """Where blocks run: the keyword arguments of :func:`geoseg.engine.executors.make_executor`.

    Neither field: in this process. ``workers``: a local Dask cluster of that many processes.
    ``scheduler``: an existing Dask scheduler (``tcp://host:8786``).
    """

    workers: Integer | None = None
    scheduler: Text | None = None


class Schedule(Section):
    """When a deployment runs the catalog: a cron expression in an IANA timezone."""

    cron: Text
    timezone: Text = "UTC"


class CatalogFile(Section):
    """The whole ``data_catalog.yaml`` as written (relative paths not resolved yet).

    Its JSON Schema (``geoseg catalog schema``) lets editors complete and check catalogs.
    """

    name: Text = ""
    models: dict[str, Text]
    scenes: list[SceneEntry]
    outputs: Outputs
    defaults: Defaults = Field(default_factory=Defaults)
    execution: Execution = Field(default_factory=Execution)
    schedule: Schedule | None = None


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
    TilingOptions(tile=64, overlap=16, batch_size=4, block_size=None, memory_mb=512)
    """
    file = Path(path)
    if not file.is_file():
        raise CatalogError(f"{file}: catalog file not found; check the path")
    data = read_yaml(file)
    try:
        return _parse(file.resolve(), data)
    except YamlPathError as problem:
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


def _parse(file: Path, data: Any) -> Catalog:
    if not isinstance(data, dict):
        raise YamlPathError("(top level)", f"expected a mapping with keys {', '.join(TOP_LEVEL)}")
    try:
        raw = CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise _yaml_problem(exc.errors()[0]) from None
    folder = file.parent
    models = _models(raw.models, folder)
    outputs = _resolve_outputs(raw.outputs, folder)
    _check_options(outputs, raw.defaults, raw.execution, raw.schedule)
    return Catalog(
        path=file,
        models=models,
        scenes=_scenes(raw.scenes, folder, models),
        outputs=outputs,
        defaults=raw.defaults,
        execution=raw.execution,
        schedule=raw.schedule,
        name=raw.name or file.stem,
    )


def yaml_location(loc: Sequence[str | int]) -> str:
    """A pydantic error location as a YAML path: ``("scenes", 3, "path")`` -> ``scenes[3].path``.

    Examples
    --------
    >>> yaml_location(("scenes", 3, "path")), yaml_location(())
    ('scenes[3].path', '(top level)')
    """
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _section_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The catalog section (model class) that holds the value at ``loc``."""
    model: Any = CatalogFile
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        if field is None:
            return None
        inner = [a for a in typing.get_args(field.annotation) or (field.annotation,)]
        inner = [a for a in inner if a is not type(None)]
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            args = [typing.get_args(a) for a in inner]
            flat = [x for group in args for x in group]
            model = next(
                (a for a in flat if isinstance(a, type) and issubclass(a, BaseModel)), None
            )
    return model if isinstance(model, type) else None


def _yaml_problem(error: Mapping[str, Any]) -> YamlPathError:
    """One pydantic error as a problem at its YAML path, in geoseg's words."""
    loc = tuple(error["loc"])
    where, kind, value = yaml_location(loc), error["type"], error.get("input")
    special = SECTION_MESSAGES.get(loc[:1]) if len(loc) == 1 and kind != "missing" else None
    if special:
        return YamlPathError(where, special)
    if kind == "extra_forbidden":
        section = _section_at(loc[:-1])
        valid = ", ".join(section.model_fields) if section else ""
        return YamlPathError(where, f"unknown key; valid keys: {valid}")
    if kind == "missing":
        if len(loc) == 1:
            return YamlPathError(
                where, f"required section missing; valid keys: {', '.join(TOP_LEVEL)}"
            )
        return YamlPathError(where, "required")
    if kind in ("list_type", "tuple_type"):
        return YamlPathError(where, f"expected a list, got {_shown(value)}")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return YamlPathError(where, f"expected a mapping, got {_shown(value)}")
    return YamlPathError(where, str(error["msg"]))


SECTION_MESSAGES = {
    ("models",): "expected a mapping of model name -> model file",
    ("scenes",): "expected a list of scene entries (id, path, model)",
}
"""Messages for a top-level section of the wrong shape."""


def _resolve(text: str, folder: Path) -> str:
    """An absolute local path (``~`` expanded, relative to ``folder``); URLs unchanged."""
    if is_virtual_path(text):
        return text
    return os.path.normpath(folder / Path(text).expanduser())


def _models(data: Mapping[str, str], folder: Path) -> dict[str, Path]:
    if not data:
        raise YamlPathError("models", SECTION_MESSAGES[("models",)])
    models = {}
    for name, value in data.items():
        where = f"models.{name}"
        path = Path(_resolve(value, folder))
        if not path.is_file():
            raise YamlPathError(where, f"file not found: {path}")
        models[str(name)] = path
    return models


def _scenes(
    data: Sequence[SceneEntry], folder: Path, models: Mapping[str, Path]
) -> tuple[SceneEntry, ...]:
    if not data:
        raise YamlPathError("scenes", SECTION_MESSAGES[("scenes",)])
    entries: list[SceneEntry] = []
    for i, entry in enumerate(data):
        entries.append(_check_entry(entry, f"scenes[{i}]", folder, models, entries))
    return tuple(entries)


def _check_entry(
    entry: SceneEntry, where: str, folder: Path, models: Mapping[str, Path], seen: list[SceneEntry]
) -> SceneEntry:
    if not ID_PATTERN.match(entry.id):
        raise YamlPathError(f"{where}.id", f"{entry.id!r}: use letters, digits, '.', '_' or '-'")
    previous = [i for i, e in enumerate(seen) if e.id == entry.id]
    if previous:
        raise YamlPathError(
            f"{where}.id", f"duplicate id {entry.id!r} (also scenes[{previous[0]}])"
        )
    model = entry.model or (next(iter(models)) if len(models) == 1 else "")
    if model not in models:
        problem = f"unknown model {entry.model!r}" if entry.model else "required"
        raise YamlPathError(f"{where}.model", f"{problem}; choose one of: {', '.join(models)}")
    _options(where, lambda: entry.input)
    return entry.model_copy(update={"path": _resolve(entry.path, folder), "model": model})


def _resolve_outputs(outputs: Outputs, folder: Path) -> Outputs:
    text = outputs.path.removeprefix("file://")
    if is_virtual_path(text):
        raise YamlPathError(
            "outputs.path",
            f"{outputs.path!r}: only local folders and file:// URIs are supported; "
            "write locally and sync the folder to object storage",
        )
    return outputs.model_copy(update={"path": _resolve(text, folder)})


def _check_options(
    outputs: Outputs,
    defaults: Defaults,
    execution: Execution,
    schedule: Schedule | None,
) -> None:
    """Build each section's option bundles once, so their own checks run with YAML paths."""
    _options("outputs", lambda: outputs.options)
    _options("defaults", lambda: (defaults.tiling, defaults.inference))
    _check_execution(execution)
    if schedule is not None:
        _check_schedule(schedule)


def _options(section: str, build: Callable[[], object]) -> None:
    """Run ``build``; an option error becomes a problem at ``<section>.<option>``."""
    try:
        build()
    except GeosegError as exc:
        where = f"{section}.{exc.option}" if exc.option else section
        raise YamlPathError(where, exc.render(lambda name: f"{section}.{name}")) from None


def _check_execution(execution: Execution) -> None:
    if execution.workers is not None and execution.scheduler is not None:
        raise YamlPathError(
            "execution", "give workers (a local Dask cluster) or scheduler, not both"
        )
    if execution.workers is not None and execution.workers < 1:
        raise YamlPathError("execution.workers", f"must be >= 1, got {execution.workers}")


def _check_schedule(schedule: Schedule) -> None:
    import zoneinfo

    parts = schedule.cron.split()
    if len(parts) != 5 or not all(CRON_FIELD.match(p) for p in parts):
        raise YamlPathError(
            "schedule.cron",
            f"{schedule.cron!r} is not a cron expression; give 5 fields: "
            "minute hour day-of-month month day-of-week, e.g. '0 2 * * *'",
        )
    try:
        zoneinfo.ZoneInfo(schedule.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise YamlPathError(
            "schedule.timezone",
            f"unknown timezone {schedule.timezone!r}; use an IANA name such as Europe/Berlin",
        ) from None


SECTION_OF = {
    **{
        name: "defaults"
        for name in ("tile", "overlap", "batch_size", "block_size", "memory_mb", "device", "tta")
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


def catalog_schema() -> dict[str, Any]:
    """The JSON Schema of ``data_catalog.yaml`` (for editors: the YAML language server).

    Examples
    --------
    >>> sorted(catalog_schema()["properties"])
    ['defaults', 'execution', 'models', 'name', 'outputs', 'scenes', 'schedule']
    """
    schema = CatalogFile.model_json_schema()
    schema["title"] = "geoseg data catalog"
    return schema


def catalog_schema_json() -> str:
    """:func:`catalog_schema` as indented JSON text."""
    return json.dumps(catalog_schema(), indent=2)
