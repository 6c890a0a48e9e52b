"""The dashboard's optional password, stored only as a salted scrypt hash.

Why scrypt from the standard library: no new dependency, memory-hard, and a
config file that leaks gives away no password. The hash is one line,
``scrypt$N$r$p$salt$hash`` (salt and hash base64), made with
``dmarclens dashboard --hash-password`` and put in the config
(``[dashboard] password_hash``) or ``DMARCLENS_DASHBOARD_PASSWORD_HASH``.
No streamlit import here: the CLI uses it too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Any

ENV_HASH = "DMARCLENS_DASHBOARD_PASSWORD_HASH"
_N, _R, _P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """A storable hash line for ``password``."""
    if not password:
        raise ValueError("empty password")
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${_N}${_R}${_P}${b64(salt)}${b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the stored hash line; False for any malformed line."""
    try:
        scheme, n, r, p, salt_b64, hash_b64 = stored.strip().split("$")
        if scheme != "scrypt":
            return False
        salt = base64.b64decode(salt_b64, validate=True)
        expected = base64.b64decode(hash_b64, validate=True)
        n_i, r_i, p_i = int(n), int(r), int(p)
        if n_i > 2**20 or r_i > 32 or p_i > 16:  # refuse hashes that would take minutes to check
            return False
        digest = hashlib.scrypt(
            password.encode("utf-8"), salt=salt, n=n_i, r=r_i, p=p_i, dklen=len(expected),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def configured_hash(raw_config: dict[str, Any] | None = None) -> str | None:
    """The password hash in force: environment first, then ``[dashboard] password_hash``."""
    env = os.environ.get(ENV_HASH, "").strip()
    if env:
        return env
    section = (raw_config or {}).get("dashboard") or {}
    value = section.get("password_hash") if isinstance(section, dict) else None
    return str(value).strip() if value else None
