"""collector.cookies.PlainCookie writes the same Set-Cookie bytes as Litestar's Cookie."""

from __future__ import annotations

import itertools

import pytest
from litestar.datastructures import Cookie

from collector.cookies import PlainCookie

VALUES = ["fb.1.1796011692227.AbC-123_x", "dAEkb7eYkY3sLxBe", "with space", 'quote"d',
          "semi;colon", "comma,value", "", "ümlaut"]
SETTINGS = [
    {"max_age": 7_776_000, "path": "/", "samesite": "lax", "secure": False, "httponly": False},
    {"max_age": 60, "path": "/", "samesite": "lax", "secure": True, "httponly": False,
     "domain": "shop.example"},
    {"max_age": None, "path": "/x", "samesite": "strict", "secure": None, "httponly": True},
]


@pytest.mark.parametrize(("value", "settings"), list(itertools.product(VALUES, SETTINGS)))
def test_plain_cookie_header_is_litestars(value: str, settings: dict[str, object]) -> None:
    expected = Cookie(key="_fbc", value=value, **settings).to_encoded_header()  # type: ignore[arg-type]

    assert expected == PlainCookie(key="_fbc", value=value, **settings).to_encoded_header()  # type: ignore[arg-type]
