"""Every error the package raises on purpose, and what each means to a caller.

Each error knows how it surfaces: ``http_status`` for the HTTP adapter (``application/problem+json``)
and ``transient`` for the queue adapter (raise so the host retries, or write a ``rejected`` result).
Messages never carry a secret, a token or a refresh token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal


def ending_of(transient: bool) -> Literal["failed", "rejected"]:
    """How a request that ends on an error is recorded and reported: ``failed`` when the error is transient (trying
    it again later may succeed), else ``rejected``. The one place this rule is written."""
    return "failed" if transient else "rejected"


class ProductUpgradeError(Exception):
    """Base of all errors of this package."""

    #: Stable, machine-readable name, used as ``error.code`` in result messages and in problem ``type``.
    code = "internal_error"
    title = "Internal error"
    http_status = 500
    #: True when retrying the same request later may succeed (the queue worker raises for a retry).
    transient = False
    #: Set by the workflow when a create fails: the business answers its request had had before this attempt,
    #: so a caller that records or defers the failure counts on from there (the next MS-RequestId).
    business_answers: int | None = None

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

    @property
    def ending(self) -> Literal["failed", "rejected"]:
        """How a request that ends on this error is recorded and reported: ``failed`` when trying it again later
        may succeed, else ``rejected``."""
        return ending_of(self.transient)


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


class AlreadyUpgradedError(ProductUpgradeError):
    """The customer's upgrade has already completed (what Partner Center's 900110 says, learnt another way: the
    eligibility call named an upgrade whose status is Completed)."""

    code = "already_upgraded"
    title = "The customer's upgrade has already completed"
    http_status = 409


class IdempotencyKeyReusedError(ProductUpgradeError):
    """An idempotency key (or queue ``requestId``) already stands for an upgrade of another customer."""

    code = "idempotency_key_reused"
    title = "Idempotency key already used for another request"
    http_status = 422


class CampaignNotFoundError(ProductUpgradeError):
    """The ledger holds no upgrade of the campaign asked about."""

    code = "not_found"
    title = "Campaign not found"
    http_status = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"the ledger holds no upgrade of campaign {name!r}")


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
#: Partner Center's "insufficient privileges" and "conditional access" (403): about the caller's own account,
#: not about the customer or the upgrade.
CALLER_REFUSALS = frozenset({"900308", "900309"})


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
        data: list[object] | None = None,
        source: str | None = None,
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
        #: Partner Center's ``data`` ("a list of error objects", for some errors) and ``source``, kept as given.
        self.data = data or []
        self.source = source
        # What the answer is, read once from the table below: every adapter acts on these.
        self.kind = classify(status, error_code)
        self.code = self.kind.code
        self.title = self.kind.title
        self.http_status = self.kind.http_status
        self.transient = self.kind.transient
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
        return self.kind is TOKEN_REJECTED

    @property
    def caller_refused(self) -> bool:
        """Refused for the caller's own reasons (our token, even after a refresh; 403 900308 insufficient
        privileges; 403 900309 conditional access): an answer about us, never about the upgrade."""
        return self.token_rejected or (self.status == 403 and self.error_code in CALLER_REFUSALS)

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later: transient failures and Partner Center's "try again later"."""
        return self.transient or self.try_again_later

    @property
    def try_again_later(self) -> bool:
        return self.kind is TRY_AGAIN_LATER_KIND


# -- what a Partner Center error answer is: one table, read by one pure function -------------------------------


@dataclass(frozen=True)
class PartnerCenterErrorKind:
    """What an error answer means to every adapter: its stable ``code``, the problem ``title``, the HTTP status
    our routes answer with, and whether trying the same request later may succeed."""

    code: str
    title: str
    http_status: int
    transient: bool


THROTTLED = PartnerCenterErrorKind("throttled", "Partner Center is throttling requests", 503, True)
REQUEST_TIMEOUT = PartnerCenterErrorKind("partner_center_rejected", "Partner Center rejected the request", 504, True)
TOKEN_REJECTED = PartnerCenterErrorKind(
    "partner_center_token_rejected", "Partner Center rejected our credentials", 502, True
)
UNAVAILABLE = PartnerCenterErrorKind("partner_center_unavailable", "Partner Center is unavailable", 502, True)
ALREADY_UPGRADED_KIND = PartnerCenterErrorKind(
    "already_upgraded", "The customer's upgrade has already completed", 409, False
)
NOT_FOUND = PartnerCenterErrorKind("not_found", "Not found at Partner Center", 404, False)
CONFLICT = PartnerCenterErrorKind("conflict", "Conflict at Partner Center", 409, False)
TRY_AGAIN_LATER_KIND = PartnerCenterErrorKind("try_again_later", "Partner Center asks to try again later", 422, False)
NOT_ELIGIBLE = PartnerCenterErrorKind("not_eligible", "Partner Center refused the upgrade", 422, False)
# Any other 4xx speaks of the request, not of us: the caller gets a 400.
REJECTED = PartnerCenterErrorKind("partner_center_rejected", "Partner Center rejected the request", 400, False)

#: (matches (status, Partner Center's error code), kind), in order: the first rule that matches decides.
RULES: tuple[tuple[Callable[[int, str | None], bool], PartnerCenterErrorKind], ...] = (
    (lambda status, code: status == 429, THROTTLED),
    (lambda status, code: status == 408, REQUEST_TIMEOUT),
    # 401, or 403 without a Partner Center error code: our token, not the customer, was refused.
    (lambda status, code: status == 401 or (status == 403 and not code), TOKEN_REJECTED),
    (lambda status, code: status >= 500, UNAVAILABLE),
    (lambda status, code: code == ALREADY_UPGRADED, ALREADY_UPGRADED_KIND),
    (lambda status, code: status == 404, NOT_FOUND),
    (lambda status, code: status == 409, CONFLICT),
    (lambda status, code: status == 403 and code == TRY_AGAIN_LATER, TRY_AGAIN_LATER_KIND),
    (lambda status, code: status == 403, NOT_ELIGIBLE),
)


def classify(status: int, error_code: str | None) -> PartnerCenterErrorKind:
    """The one reading of Partner Center's error answers, from its HTTP status and its error code."""
    return next((kind for matches, kind in RULES if matches(status, error_code)), REJECTED)
