"""Password hashing: argon2id at OWASP's parameters, off the event loop.

OWASP Password Storage Cheat Sheet: argon2id with m=19 MiB, t=2, p=1. The
work runs in a worker thread (argon2-cffi releases the GIL), so a login never
stalls the switches served by the same event loop.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16,
                        type=Type.ID)

# Verified against when the email is unknown, so both answers take as long.
_DUMMY_HASH = HASHER.hash("not a real password, only for timing")


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(HASHER.hash, password)


def _verify(stored: str | None, password: str) -> tuple[bool, bool]:
    try:
        HASHER.verify(stored or _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, False
    if stored is None:
        return False, False
    return True, HASHER.check_needs_rehash(stored)


async def verify_password(stored: str | None, password: str) -> tuple[bool, bool]:
    """(matches, needs_rehash). `stored=None` (unknown person) never matches."""
    return await asyncio.to_thread(_verify, stored, password)
