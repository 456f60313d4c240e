"""Serve the catalog flow on the catalog's own schedule (``schedule:`` in data_catalog.yaml).

Run ``python -m flows.serve [data_catalog.yaml]`` with ``PREFECT_API_URL`` pointing at a Prefect
server: it registers a deployment with the catalog's cron schedule and timezone (what
``catalog_flow.serve(cron=...)`` does, plus the timezone and one run at a time) and runs the
scheduled flow runs in this process until stopped (Ctrl-C). ``prefect.yaml`` declares the same
deployment for ``prefect deploy`` and a work pool instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, cast

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from flows.catalog_flow import catalog_flow
from geoseg.batch.catalog import Catalog, load_catalog
from geoseg.errors import CatalogError, GeosegError

EXIT_USER_ERROR = 2


def deployment_options(catalog: Catalog) -> dict[str, Any]:
    """Keyword arguments of ``catalog_flow.to_deployment`` for a catalog.

    One run at a time (``concurrency_limit=1``): a scheduled run that comes while the previous one
    is still going waits instead of processing the same scenes twice.
    """
    if catalog.schedule is None:
        raise CatalogError(
            f"{catalog.path.name}: schedule: required to serve on a schedule; add "
            "'schedule: {cron: \"0 2 * * *\", timezone: UTC}'"
        )
    return {
        "name": catalog.name,
        "schedules": [Cron(catalog.schedule.cron, timezone=catalog.schedule.timezone)],
        "parameters": {"catalog": str(catalog.path)},
        "tags": ["geoseg"],
        "concurrency_limit": 1,
        "description": f"geoseg over {catalog.path}",
    }


def main(argv: list[str] | None = None) -> None:
    """``python -m flows.serve [CATALOG]``: serve until interrupted.

    A mistake in the catalog is one ``error:`` line naming the YAML path, and exit code 2.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("catalog", nargs="?", default="data_catalog.yaml")
    args = parser.parse_args(argv)
    try:
        options = deployment_options(load_catalog(args.catalog))
    except GeosegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR) from None
    deployment = catalog_flow.to_deployment(**options)
    serve(cast(RunnerDeployment, deployment))  # to_deployment is sync here


if __name__ == "__main__":
    main()
