"""Console sessions: the user's bearer token in an encrypted, signed cookie.

The session cookie holds the token the user logged in with, the name recorded as
author of their changes, a CSRF token and the use cases they named. It is a Fernet
token (AES-128-CBC and HMAC-SHA256, with its issue time): the browser cannot read or
change it, and it is sent ``HttpOnly``, ``SameSite=Strict`` and, with
``LOOPWISE_CONSOLE_SECURE_COOKIES``, ``Secure``. Its key is derived from
``LOOPWISE_CONSOLE_SESSION_KEY`` (or drawn at random per process when that is empty).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken

SESSION_COOKIE = "loopwise_console"
LOGIN_COOKIE = "loopwise_console_login"
FLASH_COOKIE = "loopwise_console_flash"
# A session lasts this long after login.
SESSION_TTL_S = 12 * 3600
# A login form is valid this long after it was shown.
LOGIN_TTL_S = 3600
FLASH_TTL_S = 120
# Use cases a user may name at login (a token scoped to some use cases cannot list them).
MAX_USE_CASES = 20
MAX_NAME = 64
NAME_RE = re.compile(r"[^\w .@+-]", re.UNICODE)


def clean_name(name: str) -> str:
    """A display name fit for audit fields: printable, at most 64 characters."""
    return " ".join(NAME_RE.sub("", name).split())[:MAX_NAME]


def name_slug(name: str) -> str:
    """The name as it goes into request ids (letters, digits, ``._@-``)."""
    return re.sub(r"[^A-Za-z0-9._@-]", "-", name)[:MAX_NAME] or "user"


@dataclass
class Session:
    """A logged-in user: token, display name, CSRF token, use cases named at login."""

    token: str
    name: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    use_cases: list[str] = field(default_factory=list)

    @property
    def author(self) -> str:
        """The author recorded with the user's changes."""
        return f"{self.name} (console)"

    def csrf_ok(self, value: str | None) -> bool:
        """True when a form's CSRF token is this session's."""
        return bool(value) and hmac.compare_digest(value.encode(), self.csrf.encode())


class Codec:
    """Encrypts and signs cookie values (Fernet) with a key derived from a secret."""

    def __init__(self, secret: str) -> None:
        if secret:
            digest = hashlib.sha256(b"loopwise console session\0" + secret.encode()).digest()
            key = base64.urlsafe_b64encode(digest)
        else:
            key = Fernet.generate_key()
        self._fernet = Fernet(key)

    def dump(self, value: dict) -> str:
        """The cookie value of ``value`` (JSON inside)."""
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()

    def load(self, cookie: str | None, ttl_s: int) -> dict | None:
        """The value of a cookie made by :meth:`dump` at most ``ttl_s`` ago, else None."""
        if not cookie:
            return None
        try:
            data = json.loads(self._fernet.decrypt(cookie.encode(), ttl=ttl_s))
        except (InvalidToken, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def dump_session(self, session: Session) -> str:
        """The session cookie's value."""
        return self.dump({"t": session.token, "n": session.name, "c": session.csrf,
                          "u": session.use_cases, "i": int(time.time())})

    def load_session(self, cookie: str | None) -> Session | None:
        """The session of a cookie, or None when absent, forged, altered or expired."""
        data = self.load(cookie, SESSION_TTL_S)
        if not data or not isinstance(data.get("t"), str) or not data["t"]:
            return None
        use_cases = [u for u in data.get("u") or [] if isinstance(u, str)][:MAX_USE_CASES]
        return Session(token=data["t"], name=str(data.get("n") or "user"),
                       csrf=str(data.get("c") or ""), use_cases=use_cases)
