"""Scene outcomes and batch summaries: the headline, the table and the quicklook page.

What :mod:`geoseg.batch.runner` returns and what ``geoseg run-catalog`` and the Prefect flows show: a
row per scene (status, why it ran or failed, hectares per class, seconds, outputs) and a
Markdown page with each scene's quicklook embedded.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from geoseg.io.quicklook import data_uri

Status = Literal["done", "skipped", "failed"]
MARKDOWN_QUICKLOOKS = 50
"""Most quicklooks embedded in one Markdown summary (the rest are listed by path)."""


@dataclass(frozen=True)
class SceneOutcome:
    """What happened to one scene.

    ``reason`` says why it ran (``new``, ``input changed``, ``model changed``...), that it was
    ``up to date``, or the error's first line.
    """

    id: str
    source: str
    status: Status
    reason: str = ""
    seconds: float = 0.0
    areas_ha: Mapping[str, float] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    quicklook: str | None = None


@dataclass(frozen=True)
class BatchSummary:
    """The outcomes of a batch, in plan order."""

    outcomes: tuple[SceneOutcome, ...]
    seconds: float = 0.0

    def count(self, status: Status) -> int:
        """Scenes with this status."""
        return sum(o.status == status for o in self.outcomes)

    @property
    def failed(self) -> list[SceneOutcome]:
        """The scenes that failed."""
        return [o for o in self.outcomes if o.status == "failed"]

    def class_names(self) -> list[str]:
        """Every class that has an area, in order of first appearance."""
        return list(dict.fromkeys(name for o in self.outcomes for name in o.areas_ha))

    def headline(self) -> str:
        """``5 scenes: 3 done, 1 skipped, 1 failed (demo/bad)`` in one line."""
        text = (
            f"{len(self.outcomes)} scene(s): {self.count('done')} done, "
            f"{self.count('skipped')} skipped, {self.count('failed')} failed"
        )
        return text + (f" ({', '.join(o.id for o in self.failed)})" if self.failed else "")

    def rows(self) -> list[dict[str, Any]]:
        """One row per scene: scene, status, reason, hectares per class, seconds, outputs."""
        names = self.class_names()
        return [
            {
                "scene": o.id,
                "status": o.status,
                "reason": o.reason,
                **{
                    f"{name} (ha)": round(o.areas_ha[name], 4) if name in o.areas_ha else None
                    for name in names
                },
                "seconds": round(o.seconds, 2),
                "outputs": ", ".join(Path(p).name for p in o.outputs),
            }
            for o in self.outcomes
        ]

    def as_json(self) -> dict[str, Any]:
        """A JSON-able summary (a flow's return value)."""
        return {
            "headline": self.headline(),
            "seconds": round(self.seconds, 2),
            "scenes": [dataclasses.asdict(o) for o in self.outcomes],
        }


def quicklook_markdown(
    summary: BatchSummary, title: str, max_images: int = MARKDOWN_QUICKLOOKS
) -> str:
    """A Markdown page with a quicklook (embedded PNG) and the class areas of each scene."""
    lines = [f"# {title}", "", summary.headline(), ""]
    shown = 0
    for o in summary.outcomes:
        lines += [f"## {o.id}: {o.status} ({o.reason}, {o.seconds:.1f} s)", ""]
        if o.status == "failed":
            lines += [f"`{o.reason}`", ""]
            continue
        if o.quicklook and os.path.isfile(o.quicklook):
            if shown < max_images:
                png = Path(o.quicklook).read_bytes()
                lines += [f"![{o.id}]({data_uri(png)})", ""]
                shown += 1
            else:
                lines += [f"quicklook: `{o.quicklook}`", ""]
        areas = " · ".join(f"{name} {ha:,.2f} ha" for name, ha in o.areas_ha.items())
        lines += [areas or "no areas recorded", ""]
    return "\n".join(lines)


def first_line(error: BaseException | str) -> str:
    """An error as one line (its type's name when the message is empty)."""
    text = str(error).strip()
    if not text and isinstance(error, BaseException):
        return type(error).__name__
    return text.splitlines()[0]
