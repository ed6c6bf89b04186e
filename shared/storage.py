"""What the ledger and the scheduler share about the storage account they use."""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def ensure_exists(create: Callable[[], object], what: str) -> None:
    """Create a queue or table on first use, as Azurite needs; where it exists already, or the app's role may
    not create it (in Azure, Bicep creates every queue and the table and the app holds data roles only), go on:
    the next read or write says whether it is really there."""
    from azure.core.exceptions import HttpResponseError, ResourceExistsError

    try:
        create()
    except ResourceExistsError:
        pass
    except HttpResponseError as exc:
        if exc.status_code != 403:
            raise
        log.debug("Not allowed to create %s; taking it as provisioned", what)
