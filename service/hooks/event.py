"""The event a hook receives, in the style of the DOM's Event: `preventDefault()` cancels the
default action (adding or removing the connection from the live set), not the event itself,
which is recorded either way.
"""

from __future__ import annotations

from typing import Any

from service.events import Event

__all__ = ["CancelableEvent", "ConnectionView"]


class ConnectionView:
    """A read-only view of the event's `connection`, by attribute (both spellings) or by key."""

    __slots__ = ("_event",)

    def __init__(self, event: Event) -> None:
        self._event = event

    @property
    def connection_id(self) -> str:
        return self._event.connection_id

    @property
    def creation_time(self) -> int:
        return self._event.creation_time

    @property
    def data(self) -> str | None:
        return self._event.data

    # OpenTok's own spelling, so that hooks can be written as in the client SDKs.
    connectionId = connection_id  # noqa: N815
    creationTime = creation_time  # noqa: N815

    def as_dict(self) -> dict[str, Any]:
        return {
            "connectionId": self.connection_id,
            "creationTime": self.creation_time,
            "data": self.data,
        }

    def __getitem__(self, key: str) -> Any:
        return self.as_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.as_dict().get(key, default)

    def __repr__(self) -> str:
        return f"ConnectionView({self.as_dict()!r})"


class CancelableEvent:
    """`connectionCreated` / `connectionDestroyed` as hooks see it. Both types are cancelable."""

    __slots__ = ("_event", "_frozen", "_prevented", "connection")

    cancelable = True

    def __init__(self, event: Event) -> None:
        self._event = event
        self._prevented = False
        # Set once the decision is taken: a hook that timed out and still runs can change nothing.
        self._frozen = False
        self.connection = ConnectionView(event)

    @property
    def id(self) -> str:
        return self._event.id

    @property
    def type(self) -> str:
        return self._event.type.value

    @property
    def session_id(self) -> str:
        return self._event.session_id

    sessionId = session_id  # noqa: N815

    @property
    def timestamp(self) -> int:
        return self._event.timestamp

    @property
    def reason(self) -> str | None:
        return self._event.reason

    @property
    def source(self) -> str:
        """Where the event came from: native, vonage, livekit, twilio or agora."""
        return self._event.source.value

    @property
    def vendor_reason(self) -> str | None:
        """The platform's own reason for a destroy, as it sent it (None when it gave none)."""
        return self._event.vendor_reason

    vendorReason = vendor_reason  # noqa: N815

    @property
    def origin(self) -> str | None:
        """Why the ledger appended this event itself (expiry or reconcile); None on a
        producer's event. A hook prevents a synthetic event as it prevents any other."""
        return None if self._event.origin is None else self._event.origin.value

    @property
    def event(self) -> Event:
        """The underlying immutable event."""
        return self._event

    def prevent_default(self) -> None:
        if not self._frozen:
            self._prevented = True

    def is_default_prevented(self) -> bool:
        return self._prevented

    # The DOM's spelling.
    preventDefault = prevent_default  # noqa: N815
    isDefaultPrevented = is_default_prevented  # noqa: N815

    @property
    def default_prevented(self) -> bool:
        return self._prevented

    def __repr__(self) -> str:
        return (
            f"CancelableEvent(type={self.type!r}, session_id={self.session_id!r}, "
            f"connection={self.connection!r}, reason={self.reason!r}, "
            f"default_prevented={self._prevented})"
        )
