"""The JSON Schema of ``resilient-trading status --json`` (schema version 1).

:meth:`resilient_trading._fleet_model.FleetView.to_json` produces it; the operators' docs
(``docs/howto/operations-fleet.md``) carry a copy that ``tests/test_fleet_review.py`` checks
against this one, and it validates real output against it. Within a version, fields may be
added; none is removed, renamed or changes meaning without a new version.
"""

from __future__ import annotations

from typing import Any

__all__ = ["STATUS_SCHEMA"]

_NUM = {"type": "number"}
_OPT_NUM = {"type": ["number", "null"]}
_STR = {"type": "string"}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}


def _object(**props: Any) -> dict[str, Any]:
    return {
        "type": "object",
        "required": sorted(props),
        "properties": props,
    }


def _list(item: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": item}


_PROBLEM_KINDS = ["unreadable", "halt_unreadable", "source_unavailable", "no_state"]
#: The JSON Schema (draft 2020-12) of ``status --json``, schema version 1. Fields may be
#: added within a version; none is removed, renamed or changes meaning without a new one.
STATUS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "resilient-trading status --json, schema 1",
    **_object(
        schema={"const": 1},
        sources=_list(_STR),
        read_at=_NUM,
        halt=_object(
            state={"enum": ["halted", "unknown", "not_halted"]},
            flags=_list(_object(location=_STR, reason=_STR, since=_NUM, by=_STR)),
        ),
        budgets=_list(
            _object(
                location=_STR,
                windows=_list(_object(budget=_INT, period=_NUM, used=_INT, remaining=_INT)),
                paused_until=_OPT_NUM,
                utilisation=_NUM,
            )
        ),
        breakers=_list(
            _object(
                name=_STR,
                state={"enum": ["closed", "open", "half-open"]},
                latched=_BOOL,
                failures=_INT,
                trips=_INT,
                reason={"type": ["string", "null"]},
                opened_at=_OPT_NUM,
                location=_STR,
                store=_STR,
            )
        ),
        addresses=_list(
            _object(
                location=_STR,
                address=_STR,
                used=_INT,
                cap=_INT,
                remaining=_INT,
                per_hour=_NUM,
                runway_seconds=_OPT_NUM,
                throttled=_BOOL,
            )
        ),
        stores=_list(
            _object(
                path=_STR,
                generation=_INT,
                last_commit=_NUM,
                size_bytes=_INT,
                backup_age_seconds=_OPT_NUM,
            )
        ),
        bots=_list(
            _object(
                location=_STR,
                address=_STR,
                pid=_INT,
                beat_at=_NUM,
                deadline_seconds=_NUM,
                stopped=_BOOL,
                age_seconds=_NUM,
                stale=_BOOL,
            )
        ),
        problems=_list(_object(kind={"enum": _PROBLEM_KINDS}, where=_STR, message=_STR)),
        needs_operator=_list(
            _object(
                kind={
                    "enum": [
                        "halted",
                        "halt_unknown",
                        "breaker_latched",
                        "runway_low",
                        "bot_stale",
                        "unreadable",
                        "source_unavailable",
                        "no_state",
                    ]
                },
                subject=_STR,
                message=_STR,
            )
        ),
    ),
}
