"""The operators' command line: a third adapter beside ``http_api`` and ``queue_worker``.

``python -m shared.cli`` (or the ``product-upgrades`` console script) reads the same settings as the functions
and drives the same runtime and workflow; it adds CSV campaigns, progress, reports and the consent sign-in.
"""
