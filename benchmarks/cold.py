"""Fresh-process measurements, one mode per run (``python -m benchmarks.cold MODE``), each printing one JSON line.

- ``azure-functions``: CPU and wall time of ``import azure.functions``;
- ``function-app``: the same for ``import function_app`` and indexing its functions (the host's cold start);
- ``first-202``: the app answering its first create, with Key Vault, a token exchange and Partner Center;
- ``first-202-floor``: the same outbound work done directly with the SDKs, nothing of ours around it.
"""

from __future__ import annotations

import json
import sys
import time

_CPU0 = time.process_time()
_WALL0 = time.perf_counter()


def imports(mode: str) -> dict[str, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    if mode == "azure-functions":
        import azure.functions  # noqa: F401
    else:
        import function_app

        function_app.app.get_functions()
    return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}


def first_202() -> dict[str, float]:
    from benchmarks.app import Functions, host_logging, new_customer

    host_logging()
    Functions().create_http(new_customer())
    return {"cpu": time.process_time(), "wall_in_process": time.perf_counter() - _WALL0, "at": time.time()}


def first_202_floor() -> dict[str, float]:
    """Three secret reads side by side with SecretClient, the refresh-token exchange with msal, a bare POST."""
    import os
    import uuid
    from concurrent.futures import ThreadPoolExecutor

    import azure.functions  # noqa: F401  (the worker has it imported before any function runs)
    import msal
    import requests
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    from benchmarks.app import host_logging
    from sandbox import APP_ID_SECRET_NAME, APP_SECRET_SECRET_NAME, REFRESH_TOKEN_SECRET_NAME

    host_logging()
    client = SecretClient(os.environ["KEY_VAULT_URL"], DefaultAzureCredential())
    names = (APP_ID_SECRET_NAME, APP_SECRET_SECRET_NAME, REFRESH_TOKEN_SECRET_NAME)
    with ThreadPoolExecutor(3) as pool:
        app_id, app_secret, refresh_token = (s.value for s in pool.map(client.get_secret, names))
    session = requests.Session()
    app = msal.ConfidentialClientApplication(
        app_id,
        client_credential=app_secret,
        authority=f"{os.environ['PARTNER_CENTER_AUTHORITY_HOST']}/{os.environ['PARTNER_CENTER_TENANT_ID']}",
        instance_discovery=False,
        http_client=session,
    )
    token = app.acquire_token_by_refresh_token(
        refresh_token, scopes=["https://api.partnercenter.microsoft.com/.default"]
    )["access_token"]
    response = session.post(
        os.environ["PARTNER_CENTER_BASE_URL"] + "/v1/productupgrades",
        json={"customerId": str(uuid.uuid4()), "productFamily": "Azure"},
        headers={"Authorization": f"Bearer {token}", "MS-RequestId": str(uuid.uuid4())},
        timeout=(5, 20),
    )
    assert response.status_code == 202, response.status_code
    return {"cpu": time.process_time(), "wall_in_process": time.perf_counter() - _WALL0, "at": time.time()}


def main(mode: str) -> dict[str, float]:
    if mode in ("azure-functions", "function-app"):
        return imports(mode)
    if mode == "first-202":
        return first_202()
    if mode == "first-202-floor":
        return first_202_floor()
    raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    result = main(sys.argv[1])
    result["startup_cpu"] = _CPU0
    print(json.dumps(result))
