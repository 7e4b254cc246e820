"""Email addresses and header values that are safe to send (pure; no I/O).

Header injection is refused, not repaired: a CR, LF or NUL in any header value or
address raises `UnsafeEmail` naming the header. Addresses are a sane RFC 5322 subset
checked by `email-validator` without DNS: a bare ``local@domain`` (ASCII local part,
internationalised domains sent in IDNA form, no special-use domains), at most
`MAX_ADDRESS_CHARS`. Only the From address may carry a display name.

Core: settings, the tenant directory and the email capability all check addresses here.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.utils import getaddresses
from typing import Final

import email_validator

MAX_ADDRESS_CHARS: Final = 254
MAX_SUBJECT_CHARS: Final = 255
MAX_DISPLAY_NAME_CHARS: Final = 128
_FORBIDDEN: Final = {"\r": "CR", "\n": "LF", "\x00": "NUL"}


class UnsafeEmail(ValueError):
    """An address or header value that must not be sent."""


def check_header(name: str, value: str, *, limit: int = MAX_SUBJECT_CHARS) -> str:
    """Return `value` if it is one safe header line; UnsafeEmail naming what is wrong."""
    found = [label for char, label in _FORBIDDEN.items() if char in value]
    if found:
        raise UnsafeEmail(
            f"{name} contains {'/'.join(found)}: line breaks and NUL are refused in "
            "headers (header injection)"
        )
    if len(value) > limit:
        raise UnsafeEmail(f"{name} is {len(value)} characters, over the limit of {limit}")
    return value


def check_address(value: str, *, header: str = "address") -> str:
    """The normalised form of a bare address (``local@domain``); UnsafeEmail if unusable."""
    if not isinstance(value, str):
        raise UnsafeEmail(f"{header} must be a string")
    check_header(header, value, limit=MAX_ADDRESS_CHARS)
    try:
        checked = email_validator.validate_email(
            value, check_deliverability=False, allow_smtputf8=False, allow_display_name=False
        )
    except email_validator.EmailNotValidError as exc:
        raise UnsafeEmail(f"{header} {value!r} is not a usable email address: {exc}") from None
    return str(checked.ascii_email)


def check_sender(value: str) -> str:
    """A From value, ``addr`` or ``Name <addr>``, normalised; UnsafeEmail if unusable."""
    check_header("From", value, limit=MAX_ADDRESS_CHARS + MAX_DISPLAY_NAME_CHARS + 3)
    found = getaddresses([value])
    name, addr = found[0] if len(found) == 1 else ("", "")
    if not addr:
        raise UnsafeEmail(f"From {value!r} is not an address or 'Name <address>'")
    addr = check_address(addr, header="From")
    if not name:
        return addr
    check_header("From display name", name, limit=MAX_DISPLAY_NAME_CHARS)
    local, domain = addr.rsplit("@", 1)
    return str(Address(display_name=name, username=local, domain=domain))
