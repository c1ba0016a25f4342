"""Consent and Limited Data Use: which events may go to which pixel, and in what form.

An event carries a consent signal or none: ``True`` (granted), ``False`` (denied), ``None``
(not said). The server API takes it as the event's ``consent``, a beacon as its ``consent`` or,
failing that, the ``_prconsent`` cookie an earlier beacon set; a redirect reads the cookie.

    denied   never sent, to any pixel: a visitor's "no" is not overridden by configuration
    granted  sent
    not said sent, unless the pixel sets ``require_consent`` (or the link does, for its click)

An event kept back is never stored: it is counted (``collector.withheld``) and dropped. What
Meta receives for a pixel with ``data_processing_options`` gets them as a default when the
event names none (Limited Data Use).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from relay.config import PixelSettings
from relay.events import MetaEvent

CONSENT_COOKIE = "_prconsent"
Withheld = Literal["consent_denied", "no_consent"]


def consent_from_cookie(value: str | None) -> bool | None:
    """``1`` granted, ``0`` denied, anything else not said."""
    return {"1": True, "0": False}.get(value or "")


def cookie_value(consent: bool) -> str:
    return "1" if consent else "0"


def withheld_reason(consent: bool | None, *, required: bool) -> Withheld | None:
    """Why an event must not go to a pixel (or link) that ``required`` consent, or ``None``."""
    if consent is False:
        return "consent_denied"
    if consent is None and required:
        return "no_consent"
    return None


def with_pixel_defaults(event: MetaEvent, pixel: PixelSettings | None) -> MetaEvent:
    """The pixel's ``data_processing_options`` (LDU) when the event sets none itself."""
    if pixel is None or not pixel.data_processing_options or \
            event.data_processing_options is not None:
        return event
    return msgspec.structs.replace(
        event, data_processing_options=list(pixel.data_processing_options),
        data_processing_options_country=pixel.data_processing_options_country,
        data_processing_options_state=pixel.data_processing_options_state)
