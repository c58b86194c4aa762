"""Merging the workers' answers to one control call (phantom.merging)."""

from __future__ import annotations

from phantom.merging import merge_answers


def test_counts_are_summed_and_other_fields_taken_once() -> None:
    answers = [(200, {"pattern": "GET:/a*", "invalidated": n}) for n in (1, 0, 4)]
    assert merge_answers(answers) == (200, {"pattern": "GET:/a*", "invalidated": 5})


def test_an_error_of_one_worker_is_the_answer() -> None:
    answers = [(200, {"invalidated": 1}), (404, {"error": "no server named 'x'"})]
    assert merge_answers(answers) == (404, {"error": "no server named 'x'"})


def test_bulk_items_merge_one_by_one_and_fail_where_any_worker_failed() -> None:
    def bulk(*items: dict[str, object]) -> tuple[int, dict[str, object]]:
        failed = sum(1 for item in items if not item["ok"])
        body = {"requested": len(items), "succeeded": len(items) - failed, "failed": failed}
        return 200, {**body, "results": list(items)}

    ok = {"path": "/a", "ok": True, "bytes": 10}
    broken = {"path": "/a", "ok": False, "status": 502, "error": "backend down"}
    gone = {"pattern": "*", "ok": True, "invalidated": 2}
    status, merged = merge_answers([bulk(ok, gone), bulk(broken, gone)])
    assert status == 200
    assert merged == {
        "requested": 2,
        "succeeded": 1,
        "failed": 1,
        "results": [broken, {**gone, "invalidated": 4}],
    }
