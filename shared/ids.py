"""The identifiers of an operation: deterministic request ids (idempotency), outcome ids and Partner Center's
correlation ids."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

#: Namespace of our name-based UUIDs: the same key gives the same id in every process, after restarts.
ID_NAMESPACE = uuid.UUID("6f1f7a52-3c0e-4f7e-9a39-3a4c8c1e0b5d")


def request_id_for(kind: str, key: str) -> str:
    """A deterministic ``MS-RequestId`` for an idempotency key.

    ``kind`` keeps key spaces apart (an HTTP Idempotency-Key, a queue message's requestId, a message id), for
    GUID keys too: the same GUID sent over HTTP and on the queue names two requests, not one.
    """
    return str(uuid.uuid5(ID_NAMESPACE, f"{kind}:{key}"))


def outcome_id_for(upgrade_id: str) -> str:
    """The ``outcomeId`` of an upgrade's outcome message: the same in every copy, process and restart, so a
    consumer can tell a second copy (a send whose answer storage lost) from a second outcome."""
    return str(uuid.uuid5(ID_NAMESPACE, f"outcome:{upgrade_id.strip().lower()}"))


def correlation_guid(value: str) -> str:
    """Partner Center wants a GUID in ``MS-CorrelationId``: a caller's GUID as it is, anything else mapped."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        return str(uuid.uuid5(ID_NAMESPACE, f"correlation:{value}"))


@dataclass(frozen=True)
class OperationIds:
    """The ids of one logical operation: ``request_id`` is the same on every retry of it."""

    request_id: str
    correlation_id: str
    #: Business answers (a refusal, a recorded failure, a "try again later") the request has had so far.
    business_answers: int = 0
    #: The request id is the caller's (an Idempotency-Key, a queue message, a CSV row): the same on every retry
    #: of the caller's request, so the ledger reserves it before Partner Center is asked.
    keyed: bool = False

    @property
    def partner_center_correlation_id(self) -> str:
        return correlation_guid(self.correlation_id)

    @property
    def partner_center_request_id(self) -> str:
        """The ``MS-RequestId`` of this attempt. Partner Center's rule: reuse an id only to retry a call that got
        no answer (timeout, 5xx, 429); after an answer the next call takes a new one, or a cached refusal could be
        replayed. So ``request_id`` itself until the request's first business answer, then one derived from it and
        the count: the same in every process, while ``request_id`` stays the ledger's key."""
        if self.business_answers <= 0:
            return self.request_id
        return str(uuid.uuid5(ID_NAMESPACE, f"answered:{self.business_answers}:{self.request_id}"))

    def counting(self, business_answers: int | None) -> OperationIds:
        """These ids with at least ``business_answers`` answers counted (the larger count is the later attempt)."""
        if business_answers is None or business_answers <= self.business_answers:
            return self
        return replace(self, business_answers=business_answers)

    @classmethod
    def of_caller(cls, request_id: str, correlation_id: str, business_answers: int = 0) -> OperationIds:
        """Ids whose request id the caller fixed (see ``keyed``)."""
        return cls(request_id, correlation_id, business_answers, keyed=True)

    @classmethod
    def new(cls, correlation_id: str) -> OperationIds:
        """Ids for a read (eligibility, status): a fresh request id, nothing to deduplicate."""
        return cls(str(uuid.uuid4()), correlation_id)
