"""relay.consent: who may receive an event, and a pixel's Limited Data Use default."""

from __future__ import annotations

import pytest

from relay.config import PixelSettings, settings_from_mapping
from relay.consent import consent_from_cookie, with_pixel_defaults, withheld_reason
from relay.errors import ConfigError
from tests.relay.factories import meta_event


@pytest.mark.parametrize(("consent", "required", "reason"), [
    (True, True, None), (True, False, None),
    (None, True, "no_consent"), (None, False, None),
    (False, True, "consent_denied"), (False, False, "consent_denied"),
])
def test_a_denial_is_never_overridden_and_silence_counts_only_where_required(
        consent: bool | None, required: bool, reason: str | None) -> None:
    assert reason == withheld_reason(consent, required=required)


@pytest.mark.parametrize(("cookie", "consent"), [("1", True), ("0", False), ("", None),
                                                 (None, None), ("yes", None)])
def test_the_consent_cookie_says_granted_denied_or_nothing(cookie: str | None,
                                                           consent: bool | None) -> None:
    assert consent is consent_from_cookie(cookie)


def test_a_pixel_without_processing_options_leaves_the_event_alone() -> None:
    event = meta_event("e1")

    assert event is with_pixel_defaults(event, PixelSettings(id="12345"))


def test_an_ldu_pixel_gives_its_default_to_events_that_set_none() -> None:
    pixel = PixelSettings(id="12345", data_processing_options=["LDU"],
                          data_processing_options_country=1,
                          data_processing_options_state=1000)

    event = with_pixel_defaults(meta_event("e1"), pixel)

    assert (["LDU"], 1, 1000) == (event.data_processing_options,
                                  event.data_processing_options_country,
                                  event.data_processing_options_state)


def test_an_unknown_processing_option_fails_at_start() -> None:
    with pytest.raises(ConfigError, match=r"^pixels\[0\]\.data_processing_options "):
        settings_from_mapping({"pixels": [{"id": "12345", "data_processing_options": ["GDPR"]}]},
                              environ={})
