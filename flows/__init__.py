"""Prefect flows over geoseg's batch API: these modules import geoseg, never the reverse.

- :mod:`flows.scene_flow`: one scene as a chain of tasks, and the coarse per-scene task.
- :mod:`flows.catalog_flow`: every scene of a ``data_catalog.yaml`` with skips, retries, a
  summary table and quicklooks as Prefect artifacts.
- :mod:`flows.serve`: serve the catalog flow on the catalog's cron schedule.

Telemetry is off unless the environment says otherwise. Prefect's SDK reads ``DO_NOT_TRACK``
when it is first imported; importing ``flows.<module>`` runs this file first, so it is set here.
``prefect.toml`` turns the server's analytics off, and ``prefect.yaml`` sets both variables for
flow runs started by a worker.
"""

from __future__ import annotations

import os

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
