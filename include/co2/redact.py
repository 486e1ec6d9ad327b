"""What of a URL may be shown: a source URL in a version's lineage can carry credentials.

`https://user:secret@host/path?token=abc` is shown as `https://host/path`: the user information,
query parameters whose name or value looks like a secret, and the fragment are dropped.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_NAME = re.compile(r"token|key|secret|pass|pwd|auth|sig|credential|session|code", re.IGNORECASE)
# a long run of letters and digits mixed: what API tokens, signatures and session ids look like
TOKEN_LIKE = re.compile(r"(?=.*[A-Za-z])(?=.*\d)[A-Za-z0-9_\-.~+/=%]{16,}")


def redact_url(url: str) -> str:
    """The URL without credentials; text that is not a URL is returned as it is."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(a URL that cannot be read)"
    if not parts.scheme or not parts.netloc:
        return url
    kept = [
        (name, value)
        for name, value in parse_qsl(parts.query, keep_blank_values=True)
        if not SECRET_NAME.search(name) and not TOKEN_LIKE.fullmatch(name) and not TOKEN_LIKE.fullmatch(value)
    ]
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, urlencode(kept), ""))


def redact_urls(values: dict[str, str]) -> dict[str, str]:
    """Every value that is a URL, redacted; the others as they are."""
    return {name: redact_url(value) if "://" in value else value for name, value in values.items()}
