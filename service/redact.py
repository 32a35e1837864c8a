"""Secrets in URLs, masked wherever a URL is shown: the start banner, error messages, log lines.

A URL may carry a password (`nats://user:secret@host`, `postgresql://user:secret@host/db`) and a
NATS URL a token (`nats://token@host`). Shown, the password or token becomes `***`; the user
name, hosts and everything else stay, so that the line still says which server was meant.

A password given as a query parameter (`postgresql://user@host/db?password=secret`, which
asyncpg reads) is masked the same way.

A URL that does not parse is masked all the same: whatever stands between the first `:` after
the user name and the last `@` counts as the password (an unencoded `@` or `/` in a password is
a common reason for a URL not to parse, and must not show the rest of it).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MASK", "mask_nats_urls", "mask_secrets", "mask_url"]

MASK: Final = "***"
# Schemes whose URLs take a lone user name as a token (nats-py reads nats://TOKEN@host so).
_TOKEN_SCHEMES: Final = frozenset({"nats", "tls", "ws", "wss"})
# A URL's userinfo in free text: scheme://user[:password]@. The password runs to the last @
# before a blank or a quote (which end a URL in a sentence), an unencoded @ in it included, but
# never into the next URL of a list (across a "://").
_USERINFO: Final = re.compile(
    r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s:/@'\"]*)"
    r"(?P<password>:(?:(?!://)[^\s'\"])*)?@"
)
# ?password=... or &password=... (asyncpg takes a password so), and the like.
_SECRET_PARAMETER: Final = re.compile(
    r"(?P<name>[?&](?:password|sslpassword|token)=)[^&\s'\"#]*", re.IGNORECASE
)
# user:password@ with no scheme before it (a URL that lost its "://", or was never given one).
_BARE_USERINFO: Final = re.compile(r"(?<![\w.+%-])(?P<user>[\w.+%-]+):[^\s@'\"/:]+@")


def _masked_userinfo(scheme: str, user: str, has_password: bool) -> str:
    if has_password:
        return f"{user}:{MASK}"
    if user and scheme.lower() in _TOKEN_SCHEMES:
        return MASK
    return user


def _masked_parameters(text: str) -> str:
    return _SECRET_PARAMETER.sub(rf"\g<name>{MASK}", text) if "=" in text else text


def mask_url(url: str) -> str:
    """One URL with its password (or a NATS URL's token) replaced by ***."""
    url = _masked_parameters(url)
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    userinfo, at, hosts = rest.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    masked = _masked_userinfo(scheme, user, bool(colon))
    return f"{scheme}{separator}{masked}@{hosts}"


def mask_nats_urls(urls: str) -> str:
    """LEDGER_NATS_URL's comma-separated URLs, each masked."""
    return ",".join(mask_url(url) for url in urls.split(","))


def mask_secrets(text: str) -> str:
    """Every URL's password (and NATS token) in a message or a log line, masked."""
    text = _masked_parameters(text)
    if "@" not in text:
        return text  # the common case, and nothing more to mask

    def masked(match: re.Match[str]) -> str:
        scheme = match["scheme"][:-3]
        return f"{match['scheme']}{_masked_userinfo(scheme, match['user'], match['password'] is not None)}@"

    return _BARE_USERINFO.sub(rf"\g<user>:{MASK}@", _USERINFO.sub(masked, text))
