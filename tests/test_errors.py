"""What each Partner Center error answer means: one table (shared.errors.RULES), read by one pure function.

The rows are the contract's error mapping (HTTP status our routes answer, the stable code in problems and
results, whether trying again later may succeed) for each answer Partner Center gives.
"""

from __future__ import annotations

import pytest

from shared.errors import PartnerCenterError, classify

# (Partner Center's status, its error code) -> (code, our HTTP status, transient, retryable, result status)
TABLE = [
    ((429, None), ("throttled", 503, True, True, "failed")),
    ((408, None), ("partner_center_rejected", 504, True, True, "failed")),
    ((401, "900420"), ("partner_center_token_rejected", 502, True, True, "failed")),
    ((401, None), ("partner_center_token_rejected", 502, True, True, "failed")),
    ((403, None), ("partner_center_token_rejected", 502, True, True, "failed")),
    ((500, None), ("partner_center_unavailable", 502, True, True, "failed")),
    ((503, "1234"), ("partner_center_unavailable", 502, True, True, "failed")),
    ((400, "900110"), ("already_upgraded", 409, False, False, "rejected")),
    ((404, "900106"), ("not_found", 404, False, False, "rejected")),
    ((409, "900109"), ("conflict", 409, False, False, "rejected")),
    ((403, "900130"), ("try_again_later", 422, False, True, "rejected")),
    ((403, "900108"), ("not_eligible", 422, False, False, "rejected")),
    ((403, "900308"), ("not_eligible", 422, False, False, "rejected")),
    ((403, "13605"), ("not_eligible", 422, False, False, "rejected")),
    ((400, "900118"), ("partner_center_rejected", 400, False, False, "rejected")),
    ((422, None), ("partner_center_rejected", 400, False, False, "rejected")),
]


@pytest.mark.parametrize(("answer", "meaning"), TABLE, ids=[f"{s}-{c}" for (s, c), _ in TABLE])
def test_each_partner_center_answer_means_one_thing_to_every_adapter(
    answer: tuple[int, str | None], meaning: tuple[str, int, bool, bool, str]
) -> None:
    status, code = answer
    error = PartnerCenterError(status, code, "description")
    assert (error.code, error.http_status, error.transient, error.retryable, error.ending) == meaning
    assert error.kind is classify(status, code)
    assert error.title == error.kind.title and error.title


def test_our_own_account_refused_is_told_apart_from_the_customer() -> None:
    assert PartnerCenterError(401, None, "").token_rejected
    assert PartnerCenterError(403, None, "").token_rejected
    assert not PartnerCenterError(403, "900108", "").token_rejected
    assert PartnerCenterError(403, "900308", "").caller_refused
    assert PartnerCenterError(403, "900309", "").caller_refused
    assert not PartnerCenterError(403, "900130", "").caller_refused
