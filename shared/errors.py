"""Every error the package raises on purpose, and what each means to a caller.

Each error knows how it surfaces: ``http_status`` for the HTTP adapter (``application/problem+json``)
and ``transient`` for the queue adapter (raise so the host retries, or write a ``rejected`` result).
Messages never carry a secret, a token or a refresh token.
"""

from __future__ import annotations


class ProductUpgradeError(Exception):
    """Base of all errors of this package."""

    #: Stable, machine-readable name, used as ``error.code`` in result messages and in problem ``type``.
    code = "internal_error"
    title = "Internal error"
    http_status = 500
    #: True when retrying the same request later may succeed (the queue worker raises for a retry).
    transient = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def partner_center_error_code(self) -> str | None:
        return None

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (``retryable`` in problems and result messages)."""
        return self.transient

    @property
    def retry_after(self) -> int | None:
        """Whole seconds a caller should wait before trying again, when known."""
        return None


class SettingError(ProductUpgradeError):
    """A required setting is missing or malformed. The operator must act; the message names the setting."""

    code = "configuration_error"
    title = "Configuration error"
    http_status = 500
    transient = True

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"setting {name} {problem}")
        self.name = name


class MissingSettingError(SettingError):
    def __init__(self, name: str) -> None:
        super().__init__(name, "is required but not set")


class InvalidSettingError(SettingError):
    def __init__(self, name: str, expected: str) -> None:
        # The value itself is left out: a misplaced secret must not travel into a log.
        super().__init__(name, f"is malformed: expected {expected}")


class ValidationError(ProductUpgradeError):
    """The caller's request is not acceptable; nothing was sent to Partner Center."""

    code = "invalid_request"
    title = "Invalid request"
    http_status = 400


class NotEligibleError(ProductUpgradeError):
    """Partner Center's eligibility check says no; carries its reason."""

    code = "not_eligible"
    title = "Customer is not eligible for the upgrade"
    http_status = 422

    def __init__(self, customer_id: str, reason: str | None) -> None:
        super().__init__(f"customer {customer_id} is not eligible for the upgrade: {reason or 'no reason given'}")
        self.reason = reason


class IdempotencyKeyReusedError(ProductUpgradeError):
    """An idempotency key (or queue ``requestId``) already stands for an upgrade of another customer."""

    code = "idempotency_key_reused"
    title = "Idempotency key already used for another request"
    http_status = 422


class CredentialError(ProductUpgradeError):
    """Our own credentials failed: Key Vault, the token endpoint, or Partner Center refusing our token."""

    code = "credential_error"
    title = "Partner Center credentials failed"
    http_status = 502
    transient = True


class SecretStoreError(CredentialError):
    code = "secret_store_error"
    title = "Secrets could not be read"

    def __init__(self, message: str, *, unreachable: bool = False, url: str | None = None) -> None:
        super().__init__(message)
        #: Key Vault was not reached at all (``url``: the vault); else it answered and refused.
        self.unreachable = unreachable
        self.url = url


class TokenError(CredentialError):
    """The token endpoint refused to issue an App+User token (``invalid_grant``, ``invalid_client``, ...)."""

    code = "token_error"
    title = "Partner Center token could not be acquired"

    def __init__(self, message: str, error: str | None = None) -> None:
        super().__init__(message)
        self.error = error


class StorageUnavailableError(ProductUpgradeError):
    """The ledger's storage is not configured or cannot be reached (only where the ledger itself is asked for)."""

    code = "storage_unavailable"
    title = "The ledger is unavailable"
    http_status = 503
    transient = True

    @property
    def retry_after(self) -> int | None:
        return 30


class UpstreamUnavailableError(ProductUpgradeError):
    """An outbound call failed: for transport reasons (connection, TLS, timeout) after bounded retries, or with an
    answer we cannot use.

    ``unreachable`` says the service was not reached at all; then ``url`` (the service's address, without a
    query) and ``hint`` (what an operator checks: the setting naming it, the CA bundle in use) are for operators
    only: the command line prints them, logs may carry them, callers of the HTTP routes never see them.
    """

    code = "upstream_unavailable"
    title = "Upstream service unavailable"
    http_status = 502
    transient = True

    def __init__(
        self, message: str, *, unreachable: bool = False, url: str | None = None, hint: str | None = None
    ) -> None:
        super().__init__(message)
        self.unreachable = unreachable
        self.url = url
        self.hint = hint


class UpstreamTimeoutError(UpstreamUnavailableError):
    code = "upstream_timeout"
    title = "Upstream service too slow"
    http_status = 504


#: Partner Center's "the customer's upgrade has already completed" (400): the customer is on the Azure plan.
ALREADY_UPGRADED = "900110"
#: Partner Center's "subscriptions were purchased recently; try again later" (403): a "not yet", not a "no".
TRY_AGAIN_LATER = "900130"


class PartnerCenterError(ProductUpgradeError):
    """Partner Center answered with an HTTP error.

    Carries the HTTP ``status``, Partner Center's ``error_code`` (a string: the API documents it as one,
    some responses carry a number), its ``description``, the ``Retry-After`` it sent and the ids of the
    call, for support cases.
    """

    def __init__(
        self,
        status: int,
        error_code: str | None,
        description: str,
        *,
        retry_after: int | None = None,
        correlation_id: str | None = None,
        request_id: str | None = None,
        customer_throttled: bool = False,
    ) -> None:
        detail = f"Partner Center answered {status}"
        if error_code:
            detail += f" with error {error_code}"
        if description:
            detail += f": {description}"
        super().__init__(detail)
        self.status = status
        self.error_code = error_code
        self.description = description
        self._retry_after = retry_after
        self.correlation_id = correlation_id
        self.request_id = request_id
        #: A 429 Partner Center keeps giving for this one customer (its per-partner-and-customer limit) while
        #: other customers go through: the customer is held until Retry-After, the rest of a campaign goes on.
        self.customer_throttled = customer_throttled

    @property
    def partner_center_error_code(self) -> str | None:
        return self.error_code

    @property
    def retry_after(self) -> int | None:
        return self._retry_after

    @property
    def token_rejected(self) -> bool:
        """401, or 403 without a Partner Center error code: our token, not the customer, was refused."""
        return self.status == 401 or (self.status == 403 and not self.error_code)

    @property
    def http_status(self) -> int:  # type: ignore[override]
        if self.status == 429:
            return 503
        if self.status == 408:
            return 504
        if self.status >= 500 or self.token_rejected:
            return 502
        if self.error_code == ALREADY_UPGRADED:
            return 409
        if self.status == 403:
            return 422
        if self.status in (400, 404, 409):
            return self.status
        # Any other 4xx speaks of the request, not of us: pass the caller a 400.
        return 400 if self.status < 500 else 502

    @property
    def transient(self) -> bool:  # type: ignore[override]
        return self.status == 429 or self.status >= 500 or self.status == 408 or self.token_rejected

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later: transient failures and Partner Center's "try again later"."""
        return self.transient or self.try_again_later

    @property
    def try_again_later(self) -> bool:
        return self.status == 403 and self.error_code == TRY_AGAIN_LATER

    @property
    def code(self) -> str:  # type: ignore[override]
        if self.status == 429:
            return "throttled"
        if self.token_rejected:
            return "partner_center_token_rejected"
        if self.status >= 500:
            return "partner_center_unavailable"
        if self.status == 404:
            return "not_found"
        if self.error_code == ALREADY_UPGRADED:
            return "already_upgraded"
        if self.status == 409:
            return "conflict"
        if self.try_again_later:
            return "try_again_later"
        if self.status == 403:
            return "not_eligible"
        return "partner_center_rejected"

    @property
    def title(self) -> str:  # type: ignore[override]
        return {
            "throttled": "Partner Center is throttling requests",
            "partner_center_token_rejected": "Partner Center rejected our credentials",
            "partner_center_unavailable": "Partner Center is unavailable",
            "not_found": "Not found at Partner Center",
            "conflict": "Conflict at Partner Center",
            "not_eligible": "Partner Center refused the upgrade",
            "already_upgraded": "The customer's upgrade has already completed",
            "try_again_later": "Partner Center asks to try again later",
        }.get(self.code, "Partner Center rejected the request")
