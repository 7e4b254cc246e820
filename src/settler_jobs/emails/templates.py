"""Email templates: the known set, their data rules, and rendering to subject, HTML and text.

Each template `<name>` is three Jinja2 files in ``templates/email/`` (packaged): a
one-line ``<name>.subject.txt``, ``<name>.html`` (autoescaped) and ``<name>.txt``. Data is
a JSON object of at most `MAX_DATA_BYTES`; each template names the keys it needs, and a
key the template uses but the data lacks fails rendering (StrictUndefined) instead of
printing nothing. Values used as links go through the ``url`` filter, which only lets
absolute http(s) URLs through (no ``javascript:`` links from data).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jinja2

MAX_DATA_BYTES: Final = 32 * 1024
MAX_RENDERED_BYTES: Final = 512 * 1024
"""HTML + text of one rendered email."""

TEMPLATES: Final[Mapping[str, tuple[str, ...]]] = {
    "welcome": ("name",),
    "export_ready": ("report_name", "download_url"),
    "reconciliation_completed": ("run_id", "matched", "unmatched"),
    "webhook_endpoint_disabled": ("endpoint_url", "reason"),
    "dead_letter_digest": ("entries",),
    "operator_alert": ("event", "alert", "summary", "labels", "since"),
}
"""Every template and the data keys it requires."""

_URL_RE: Final = re.compile(r"^https?://[^\s<>\"'\x00-\x1f\x7f]+$", re.IGNORECASE)


class TemplateError(ValueError):
    """The template is unknown, or its data does not fit it."""


@dataclass(frozen=True, slots=True)
class Rendered:
    """One email's content: a single-line subject, an HTML part and a text part."""

    subject: str
    html: str
    text: str


def check_template(name: str) -> str:
    """Return `name` if it is a known template; TemplateError naming the known ones."""
    if name not in TEMPLATES:
        known = ", ".join(sorted(TEMPLATES))
        raise TemplateError(f"unknown email template {name!r}; known templates: {known}")
    return name


def check_data(name: str, data: Mapping[str, Any]) -> None:
    """Refuse data that is not a small JSON object holding the template's required keys."""
    check_template(name)
    try:
        size = len(json.dumps(data, ensure_ascii=False, allow_nan=False).encode())
    except (TypeError, ValueError, RecursionError) as exc:
        raise TemplateError(f"template data must be plain JSON: {exc}") from None
    if size > MAX_DATA_BYTES:
        raise TemplateError(f"template data is {size} bytes, over the limit of {MAX_DATA_BYTES}")
    missing = [key for key in TEMPLATES[name] if key not in data]
    if missing:
        raise TemplateError(f"template {name!r} needs data keys: {', '.join(missing)}")


def _url(value: object) -> str:
    text = str(value)
    if not _URL_RE.fullmatch(text):
        raise TemplateError(f"not an absolute http(s) URL: {text[:80]!r}")
    return text


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("settler_jobs", "templates/email"),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["url"] = _url
    return env


def render(name: str, data: Mapping[str, Any]) -> Rendered:
    """Render template `name` with `data` (checked first); TemplateError if it cannot be.

    The subject keeps its characters as given: a line break in it is refused later, when
    the message is built, rather than silently joined.
    """
    check_data(name, data)
    env = _environment()
    context = dict(data)
    try:
        subject = env.get_template(f"{name}.subject.txt").render(context).strip(" \t\n")
        html = env.get_template(f"{name}.html").render(context)
        text = env.get_template(f"{name}.txt").render(context).strip("\n") + "\n"
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name!r}: {exc.message}") from None
    except (TypeError, ValueError) as exc:  # TemplateError included
        raise TemplateError(f"template {name!r}: {exc}") from None
    size = len(html.encode()) + len(text.encode())
    if size > MAX_RENDERED_BYTES:
        raise TemplateError(f"rendered email is {size} bytes, over {MAX_RENDERED_BYTES}")
    return Rendered(subject, html, text)
