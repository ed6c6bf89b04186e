"""Process-wide objects (HTTP session, credential, secret and token caches), built lazily, once.

Importing this module needs no settings. :func:`get_runtime` builds everything on first use from
:func:`shared.settings.get_settings`; tests build their own :class:`Runtime` and :func:`install` it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.retry import RetryPolicy
from shared.settings import Settings, get_settings

# The SDKs and the modules wrapping them are imported where first needed (Runtime.build), not with this
# module: importing function_app and indexing the functions stays close to importing azure.functions alone.
if TYPE_CHECKING:
    import requests
    from azure.core.credentials import TokenCredential

    from shared.partner_center.client import PartnerCenterClient
    from shared.partner_center.pace import PaceLimiter
    from shared.partner_center.secrets import SecretStore
    from shared.partner_center.state import SharedState
    from shared.partner_center.tokens import TokenProvider
    from shared.store.ledger import Ledger
    from shared.store.scheduler import Scheduler
    from shared.upgrades.tracking import UpgradeTracker
    from shared.upgrades.workflow import ProductUpgradeWorkflow


#: Seconds a poller is told to wait (``Retry-After``) while an upgrade runs.
DEFAULT_POLL_INTERVAL_SECONDS = 30


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    settings: Settings
    session: requests.Session
    secrets: SecretStore
    tokens: TokenProvider
    client: PartnerCenterClient
    workflow: ProductUpgradeWorkflow
    policy: RetryPolicy
    ledger: Ledger
    scheduler: Scheduler
    tracker: UpgradeTracker | None
    #: The pace of every Partner Center call of this process, shared with the other instances through storage.
    pace: PaceLimiter
    poll_interval_seconds: int = DEFAULT_POLL_INTERVAL_SECONDS
    #: Records every instance shares (the App+User token's state, leases), in the ledger's table.
    shared_state: SharedState | None = None
    #: The time of day for the keep-alive and the token's records (tests simulate days with their own).
    clock: Callable[[], datetime] = field(default=utc_now)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        policy: RetryPolicy | None = None,
        poll_interval_seconds: int = DEFAULT_POLL_INTERVAL_SECONDS,
        clock: Callable[[], datetime] = utc_now,
    ) -> Runtime:
        """Wire every object for ``settings``; no network call happens here."""
        from shared.partner_center.client import PartnerCenterClient
        from shared.partner_center.tokens import TokenProvider
        from shared.upgrades.workflow import ProductUpgradeWorkflow

        policy = policy or RetryPolicy()
        session = _session()
        credential = _credential(settings, policy)
        secrets = _secret_store(settings, policy, credential)
        shared_state = _shared_state(settings, credential)
        tokens = TokenProvider(
            authority_host=settings.authority_host,
            tenant_id=settings.tenant_id,
            secrets=secrets,
            session=session,
            policy=policy,
            state=shared_state,
            clock=clock,
        )
        pace = _pace(settings, credential)
        client = PartnerCenterClient(
            base_url=settings.base_url, session=session, tokens=tokens, policy=policy, pace=pace
        )
        ledger = _ledger(settings, credential)
        scheduler = _scheduler(settings, credential)
        tracker = _tracker(settings, client, ledger, scheduler)
        return cls(
            settings=settings,
            session=session,
            secrets=secrets,
            tokens=tokens,
            client=client,
            workflow=ProductUpgradeWorkflow(client, ledger, tracker),
            policy=policy,
            ledger=ledger,
            scheduler=scheduler,
            tracker=tracker,
            pace=pace,
            poll_interval_seconds=poll_interval_seconds,
            shared_state=shared_state,
            clock=clock,
        )


def _tracker(
    settings: Settings, client: PartnerCenterClient, ledger: Ledger, scheduler: Scheduler
) -> UpgradeTracker | None:
    """The tracker, when there is one to have: it needs the ledger's table and the queues."""
    from shared.store.scheduler import QueueScheduler
    from shared.store.table_ledger import TableLedger
    from shared.upgrades.tracking import UpgradeTracker

    if not (isinstance(scheduler, QueueScheduler) and isinstance(ledger, TableLedger)):
        return None
    return UpgradeTracker(
        client,
        ledger,
        scheduler,
        poll_seconds=settings.poll_seconds,
        tracking_hours=settings.tracking_hours,
        max_poll_seconds=settings.max_poll_seconds,
    )


def _session() -> requests.Session:
    """One session for the token endpoint and Partner Center; it trusts what requests trusts
    (``REQUESTS_CA_BUNDLE`` works), read from the environment once. Its pool holds a connection per
    concurrent invocation of a host batch."""
    from requests.adapters import HTTPAdapter

    from shared.http_session import POOL_SIZE, EnvironmentOnceSession

    session = EnvironmentOnceSession()
    session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE))
    return session


def _credential(settings: Settings, policy: RetryPolicy) -> TokenCredential | None:
    """One credential for Key Vault and identity-based storage; None when neither is used."""
    storage = settings.storage
    if settings.key_vault_url is None and (storage is None or storage.connection_string):
        return None
    from azure.identity import DefaultAzureCredential

    # A user-assigned identity is picked by AZURE_CLIENT_ID, else by the storage connection's client id.
    client_id = settings.azure_client_id or (storage.managed_identity_client_id if storage else None)
    from shared.azure_limits import credential_options

    # The managed-identity request takes no per-call limits: its pipeline keeps to the invocation's budget.
    options = credential_options(policy)
    if client_id:
        options["managed_identity_client_id"] = client_id
    return DefaultAzureCredential(**options)


def _pace(settings: Settings, credential: TokenCredential | None) -> PaceLimiter:
    """The pace limiter, its rate shared with the other instances through the ledger's table when there is one
    (store and partner_center never import each other: this is where they meet)."""
    from shared.partner_center.pace import PaceLimiter
    from shared.partner_center.pace_rules import PaceRules
    from shared.partner_center.pace_sharing import PaceSharing
    from shared.store.pace_state import TablePaceState

    rules = PaceRules.with_ceiling(settings.max_calls_per_minute)
    storage = settings.storage
    if storage is None or not (storage.connection_string or (storage.table_service_uri and credential)):
        return PaceLimiter(rules)
    state = TablePaceState(storage, settings.table_name, credential)
    return PaceLimiter(rules, sharing=PaceSharing(state, rules))


def _ledger(settings: Settings, credential: TokenCredential | None) -> Ledger:
    from shared.store.ledger import NoLedger
    from shared.store.table_ledger import TableLedger

    storage = settings.storage
    if storage is None or not (storage.connection_string or (storage.table_service_uri and credential)):
        return NoLedger()
    return TableLedger(storage, settings.table_name, credential, continuation_key=settings.continuation_key)


def _shared_state(settings: Settings, credential: TokenCredential | None) -> SharedState:
    """The store's shared records (the ledger's table) behind the Partner Center side's own interface."""
    from shared.partner_center.state import NoSharedState
    from shared.store.shared_state import TableSharedState

    storage = settings.storage
    if storage is None or not (storage.connection_string or (storage.table_service_uri and credential)):
        return NoSharedState()
    return TableSharedState(storage, settings.table_name, credential)


def _scheduler(settings: Settings, credential: TokenCredential | None) -> Scheduler:
    from shared.store.scheduler import NoScheduler, QueueScheduler

    storage = settings.storage
    if storage is None or not (storage.connection_string or (storage.queue_service_uri and credential)):
        return NoScheduler()
    return QueueScheduler(
        storage,
        requests_queue=settings.requests_queue,
        tracking_queue=settings.tracking_queue,
        outcomes_queue=settings.outcomes_queue,
        credential=credential,
    )


def _secret_store(settings: Settings, policy: RetryPolicy, credential: TokenCredential | None) -> SecretStore:
    from azure.keyvault.secrets import SecretClient

    from shared.azure_limits import client_options
    from shared.partner_center.secrets import EnvironmentSecretStore, KeyVaultSecretStore, SecretNames

    if settings.key_vault_url is None or credential is None:
        return EnvironmentSecretStore()
    # retry_timeout is read by no azure-core policy: the limits are in the pipeline (and per call, in secrets.py).
    client = SecretClient(vault_url=settings.key_vault_url, credential=credential, **client_options(policy))
    names = SecretNames(
        app_id=settings.app_id_secret_name,
        app_secret=settings.app_secret_secret_name,
        refresh_token=settings.refresh_token_secret_name,
    )
    return KeyVaultSecretStore(client, names)


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's runtime, built on first use. Raises :class:`SettingError` while a setting is missing."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = Runtime.build(get_settings())
        return _runtime


def install(runtime: Runtime | None) -> None:
    """Replace the process's runtime (tests, or a host that wires its own); None rebuilds on next use."""
    global _runtime
    with _lock:
        _runtime = runtime
    get_settings.cache_clear()
