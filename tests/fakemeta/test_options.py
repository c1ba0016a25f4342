"""FakeMetaOptions: defaults, FAKEMETA_* parsing, one clear sentence per bad value, docs."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path

import pytest

from fakemeta import FakeMetaOptions
from fakemeta._options import ENV_VARS

DOCS = Path(__file__).resolve().parents[2] / "docs" / "fake-meta.md"


def test_defaults_listen_on_loopback_8090_without_faults() -> None:
    options = FakeMetaOptions()

    assert ("127.0.0.1", 8090, frozenset(), None) == (
        options.host,
        options.port,
        options.tokens,
        options.seed,
    )
    assert (0, 0, {}, 0.0, 0.0, ()) == (
        options.latency_ms,
        options.latency_jitter_ms,
        options.error_rates,
        options.http_500_rate,
        options.throttle_events_per_s,
        options.outage_windows,
    )


def test_empty_environment_gives_the_defaults() -> None:
    assert FakeMetaOptions() == FakeMetaOptions.from_env({})


def test_every_variable_is_read_from_the_environment() -> None:
    env = {
        "FAKEMETA_HOST": "0.0.0.0",
        "FAKEMETA_PORT": "9000",
        "FAKEMETA_TOKENS": "tok-a, tok-b,",
        "FAKEMETA_APP_SECRETS": "tok-a:s3cret",
        "FAKEMETA_LATENCY_MS": "150",
        "FAKEMETA_LATENCY_JITTER_MS": "50",
        "FAKEMETA_ERROR_RATES": "2:0.1, 613:0.05",
        "FAKEMETA_HTTP_500_RATE": "0.02",
        "FAKEMETA_THROTTLE_EVENTS_PER_S": "100",
        "FAKEMETA_OUTAGES": "5-10,30-35.5",
        "FAKEMETA_SEED": "7",
        "FAKEMETA_MAX_EVENTS_KEPT": "500",
    }

    options = FakeMetaOptions.from_env(env)

    assert (
        FakeMetaOptions(
            host="0.0.0.0",
            port=9000,
            tokens=frozenset({"tok-a", "tok-b"}),
            app_secrets={"tok-a": "s3cret"},
            latency_ms=150,
            latency_jitter_ms=50,
            error_rates={2: 0.1, 613: 0.05},
            http_500_rate=0.02,
            throttle_events_per_s=100.0,
            outage_windows=((5.0, 10.0), (30.0, 35.5)),
            seed=7,
            max_events_kept=500,
        )
        == options
    )


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKEMETA_PORT", "9123")

    assert 9123 == FakeMetaOptions.from_env().port


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("FAKEMETA_PORT", "http"),
        ("FAKEMETA_PORT", "70000"),
        ("FAKEMETA_LATENCY_MS", "1.5"),
        ("FAKEMETA_LATENCY_MS", "-1"),
        ("FAKEMETA_LATENCY_JITTER_MS", "lots"),
        ("FAKEMETA_ERROR_RATES", "2=0.1"),
        ("FAKEMETA_ERROR_RATES", "2:often"),
        ("FAKEMETA_ERROR_RATES", "2:1.5"),
        ("FAKEMETA_ERROR_RATES", "0:0.1"),
        ("FAKEMETA_HTTP_500_RATE", "2"),
        ("FAKEMETA_THROTTLE_EVENTS_PER_S", "-3"),
        ("FAKEMETA_OUTAGES", "5"),
        ("FAKEMETA_OUTAGES", "10-5"),
        ("FAKEMETA_SEED", "abc"),
        ("FAKEMETA_MAX_EVENTS_KEPT", "0"),
        ("FAKEMETA_APP_SECRETS", "just-a-token"),
    ],
)
def test_bad_value_fails_with_one_sentence_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(ValueError, match=variable) as caught:
        FakeMetaOptions.from_env({variable: raw})

    message = str(caught.value)
    assert message.endswith(".")
    assert "\n" not in message


def test_app_secrets_error_does_not_echo_the_secret() -> None:
    with pytest.raises(ValueError) as caught:
        FakeMetaOptions.from_env({"FAKEMETA_APP_SECRETS": "tok:secret-1,broken-secret"})

    assert "secret-1" not in str(caught.value)


def test_error_rates_and_http_500_rate_together_must_not_exceed_one() -> None:
    env = {"FAKEMETA_ERROR_RATES": "2:0.6", "FAKEMETA_HTTP_500_RATE": "0.5"}

    with pytest.raises(ValueError, match="FAKEMETA_ERROR_RATES"):
        FakeMetaOptions.from_env(env)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("port", 0),
        ("latency_ms", -5),
        ("latency_jitter_ms", 2.5),
        ("error_rates", {613: 1.2}),
        ("http_500_rate", -0.1),
        ("throttle_events_per_s", -1),
        ("outage_windows", [(10, 5)]),
        ("max_events_kept", 0),
    ],
)
def test_constructor_refuses_out_of_range_values_naming_the_field(
    field: str, value: object
) -> None:
    with pytest.raises(ValueError, match=field):
        FakeMetaOptions(**{field: value})  # type: ignore[arg-type]


def test_constructor_keeps_private_copies_of_mutable_arguments() -> None:
    rates = {2: 0.1}
    windows = [(1.0, 2.0)]
    options = FakeMetaOptions(error_rates=rates, outage_windows=windows)

    rates[2] = 0.9
    windows.append((3.0, 4.0))

    assert ({2: 0.1}, ((1.0, 2.0),)) == (options.error_rates, options.outage_windows)


def test_repr_hides_tokens_and_app_secrets() -> None:
    options = FakeMetaOptions(tokens=frozenset({"tok-123"}), app_secrets={"tok-123": "s3cret"})

    assert "tok-123" not in repr(options)
    assert "s3cret" not in repr(options)


def test_options_survive_pickling_for_a_spawned_worker() -> None:
    options = FakeMetaOptions(tokens=frozenset({"t"}), error_rates={2: 0.5}, seed=3)

    assert options == pickle.loads(pickle.dumps(options))


def test_every_setting_and_variable_is_documented() -> None:
    docs = DOCS.read_text()
    fields = [f.name for f in dataclasses.fields(FakeMetaOptions)]

    assert sorted(fields) == sorted(ENV_VARS)
    assert [] == [name for name in fields if f"`{name}`" not in docs]
    assert [] == [var for var in ENV_VARS.values() if f"`{var}`" not in docs]
