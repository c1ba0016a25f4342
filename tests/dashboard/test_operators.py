"""Operators in the config: `pixelrelay user add`, the demo operator, config check warnings."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path

import pytest

from dashboard.operators import (
    DEMO_OPERATOR_PASSWORD,
    authenticate,
    demo_login_line,
    user_add,
)
from pixelrelay.cli import demo_credentials_exposed
from relay.config import load_settings, settings_from_mapping

EXAMPLE = Path(__file__).resolve().parents[2] / "pixelrelay.example.toml"


def test_user_add_prints_an_entry_that_logs_in() -> None:
    out = io.StringIO()
    answers = iter(["correct horse battery", "correct horse battery"])

    code = user_add("ops@shop", "operator", out, ask=lambda _: next(answers))

    entry = tomllib.loads(out.getvalue())["operators"][0]
    settings = settings_from_mapping({"operators": [entry]}, environ={})
    assert (0, "ops@shop", "operator", True, False) == (
        code, entry["name"], entry["role"], entry["argon2"].startswith("$argon2id$"),
        "correct horse" in out.getvalue())
    assert authenticate(settings, "ops@shop", "correct horse battery") is not None
    assert authenticate(settings, "ops@shop", "wrong horse battery") is None


@pytest.mark.parametrize(("answers", "why"), [
    (["long enough pass", "different pass!"], "the two passwords differ"),
    (["short", "short"], "at least 10 characters"),
])
def test_user_add_refuses_a_bad_password(answers: list[str], why: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    replies = iter(answers)

    code = user_add("ops", "viewer", io.StringIO(), ask=lambda _: next(replies))

    assert (2, True) == (code, why in capsys.readouterr().err)


def test_user_add_takes_no_password_argument() -> None:
    from pixelrelay.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["user", "add", "ops", "--password", "x"])


def test_the_sample_config_has_the_demo_operator_and_make_up_says_so() -> None:
    settings = load_settings(EXAMPLE, environ={})

    line = demo_login_line(settings)

    assert line is not None and "'demo'" in line and repr(DEMO_OPERATOR_PASSWORD) in line


def test_config_check_warns_about_demo_credentials_beyond_loopback() -> None:
    raw = tomllib.loads(EXAMPLE.read_text())
    raw["dashboard"]["host"] = "0.0.0.0"
    raw["collector"]["host"] = "10.0.0.5"
    exposed = demo_credentials_exposed(settings_from_mapping(raw, environ={}))
    safe = demo_credentials_exposed(load_settings(EXAMPLE, environ={}))

    assert ([True, True], []) == (["demo" in w for w in exposed], safe)
