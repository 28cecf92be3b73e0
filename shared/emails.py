"""One email, one person: the normal form of an email address.

The whole address is trimmed and casefolded, and its domain IDNA-normalised
(UTS #46, Unicode form; a punycode `xn--` domain maps to the same form), so
`Bob@Example.COM`, ` bob@example.com ` and `BOB@EXAMPLE.com` are one person.
Syntax is checked by email-validator; no DNS is consulted.
"""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

from shared.errors import InvalidInput

MAX_EMAIL_LENGTH = 254


def normalize_email(raw: str) -> str:
    """Return the normal form of `raw`, or raise InvalidInput."""
    if not isinstance(raw, str):
        raise InvalidInput("email must be a string")
    candidate = raw.strip()
    if not candidate or len(candidate) > MAX_EMAIL_LENGTH:
        raise InvalidInput("email must be a non-empty address of at most 254 characters")
    try:
        checked = validate_email(candidate, check_deliverability=False, test_environment=True)
    except EmailNotValidError as e:
        raise InvalidInput(f"malformed email: {e}") from e
    return f"{checked.local_part.casefold()}@{checked.domain.casefold()}"
