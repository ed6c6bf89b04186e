"""Request ids: stable keys, and the MS-RequestId each attempt sends."""

import uuid

from shared.ids import OperationIds, request_id_for


def test_before_any_business_answer_the_ms_request_id_is_the_request_id():
    key = request_id_for("idempotency-key", "crm-1")
    assert OperationIds(key, "c").partner_center_request_id == key


def test_each_business_answer_gives_the_request_a_new_deterministic_ms_request_id():
    key = request_id_for("queue-request", "row-7")
    sent = [OperationIds(key, "c", business_answers=n).partner_center_request_id for n in range(4)]
    assert len(set(sent)) == 4 and all(uuid.UUID(value) for value in sent)
    # the same in every process: derived from the key and the count alone
    assert sent == [OperationIds(key, "other", business_answers=n).partner_center_request_id for n in range(4)]
    # another request's ids never meet these
    other = request_id_for("queue-request", "row-8")
    assert not set(sent) & {OperationIds(other, "c", business_answers=n).partner_center_request_id for n in range(4)}


def test_counting_keeps_the_larger_count_and_the_key():
    ids = OperationIds("key", "c", business_answers=2)
    assert ids.counting(None) is ids and ids.counting(1) is ids
    assert ids.counting(3) == OperationIds("key", "c", business_answers=3)
