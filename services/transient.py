"""Which failures are a dependency's (database, broker, network) and pass on retry, not the input's.

    if is_transient(exc):     # wait and retry (consumers), or answer 503 with Retry-After (HTTP)
        ...
"""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from services.bus.base import BusError


def is_transient(exc: BaseException) -> bool:
    """Failures of a dependency, not of the event: retry, never dead-letter."""
    if isinstance(exc, IntegrityError):
        return False
    if isinstance(exc, OperationalError | OSError | TimeoutError | BusError | ConnectionError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        # Lock conflicts (deadlock, serialization failure) resolve on retry; asyncpg names them.
        orig = type(getattr(exc, "orig", None)).__name__ + str(getattr(exc, "orig", ""))
        if any(word in orig for word in ("Deadlock", "Serialization", "LockNotAvailable", "deadlock",
                                          "could not serialize", "terminating connection")):
            return True
    name = type(exc).__name__
    return "Connection" in name or "CannotConnect" in name
