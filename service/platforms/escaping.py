"""Platform room names as session ids (CONTRACT section 11).

A room name that already is a valid session id without a `~` is used as it is. Any other is
escaped: each UTF-8 byte outside `A-Z a-z 0-9 - _ = :`, and `~` itself, becomes `~` and two
upper-case hex digits. A session id from a platform that holds a `~` is therefore always an
escaped name, so `unescape_session_id` reverses `escape_session_id` without doubt."""

from __future__ import annotations

from typing import Final

from service.events import is_session_id

__all__ = ["escape_session_id", "unescape_session_id"]

_KEPT: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=:")
_HEX: Final = frozenset("0123456789ABCDEF")


def escape_session_id(name: str) -> str:
    """The session id of a platform's room `name`."""
    if "~" not in name and is_session_id(name):
        return name
    return "".join(chr(byte) if byte in _KEPT else f"~{byte:02X}" for byte in name.encode("utf-8"))


def unescape_session_id(session_id: str) -> str:
    """The room name a session id came from: the inverse of `escape_session_id`.

    Raises ValueError for a `~` not followed by two upper-case hex digits, or escaped bytes
    that are not UTF-8: no escaped name looks like that."""
    if "~" not in session_id:
        return session_id
    out = bytearray()
    index = 0
    while index < len(session_id):
        char = session_id[index]
        if char == "~":
            digits = session_id[index + 1 : index + 3]
            if len(digits) != 2 or not set(digits) <= _HEX:
                raise ValueError(f"{session_id!r}: ~ at {index} is not followed by two upper-case hex digits")
            out.append(int(digits, 16))
            index += 3
        else:
            out.extend(char.encode("utf-8"))
            index += 1
    return out.decode("utf-8")
