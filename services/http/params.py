"""Query-parameter parsing shared by the API routers; a bad value is a 422 naming the parameter."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

from services.http.errors import ApiError


def invalid_param(name: str, message: str) -> ApiError:
    return ApiError(422, "invalid_parameter", f"invalid query parameter {name}: {message}",
                    [{"field": name, "message": message}])


def parse_time_param(name: str, value: str | None) -> datetime | None:
    """``2026-11-01`` (midnight UTC) or an ISO 8601 time (``Z`` or an offset; none means UTC)."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        # An unencoded "+01:00" offset in a query string arrives as " 01:00".
        parsed = datetime.fromisoformat(re.sub(r" (\d\d:?\d\d)$", r"+\1", text))
    except ValueError:
        raise invalid_param(name, f"{value!r} is not a date (2026-11-01) or an ISO 8601 time "
                                  "(2026-11-01T09:00:00Z)") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
