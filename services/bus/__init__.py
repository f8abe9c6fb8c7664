"""The bus: publish events durably; consume them as a group, committing after processing."""

from services.bus.base import Bus, BusUnavailable, Consumer, Message

__all__ = ["Bus", "BusUnavailable", "Consumer", "Message"]
