"""relay.config: the TOML file plus environment, read once; bad configuration names its key."""

from __future__ import annotations

import re
import typing
from pathlib import Path
from typing import Any

import msgspec
import pytest

from relay.config import (
    CONFIG_ENV,
    GRAPH_URL_ENV,
    REDIS_URL_ENV,
    PixelSettings,
    Settings,
    hash_api_key,
    load_settings,
    reference,
    settings_from_mapping,
)
from relay.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "pixelrelay.example.toml"
README = ROOT / "README.md"

VALID = """
[collector]
port = 8000
allowed_origins = ["https://shop.example"]
trusted_proxies = ["10.0.0.0/8", "::1"]

[[pixels]]
id = "1234567890"
access_token_env = "SHOP_TOKEN"

[[pixels]]
id = "9876543210"

[[links]]
slug = "spring"
destination = "https://shop.example/landing?cid={click_id}"
pixels = ["1234567890"]

[[api_keys]]
name = "shop"
sha256 = "ca6f2e39b2ff141859b18bb5283aadd5093c8ede2869f3656231a054e54bfc22"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pixelrelay.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Settings:
    return load_settings(write(tmp_path, text), environ or {})


def load_error(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, environ)
    return str(caught.value)


# -- loading --------------------------------------------------------------------------------------
def test_example_configuration_loads() -> None:
    settings = load_settings(EXAMPLE, {})

    assert (["1234567890"], ["demo"], str(EXAMPLE)) == (
        [p.id for p in settings.pixels], [k.slug for k in settings.links], settings.source)


def test_valid_file_loads_with_defaults_for_the_rest(tmp_path: Path) -> None:
    settings = load(tmp_path, VALID)

    assert (8000, 200, "v26.0", "https://graph.facebook.com") == (
        settings.collector.port, settings.relay.linger_ms, settings.meta.api_version,
        settings.meta.graph_url)


def test_file_named_by_environment_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)

    assert str(path) == load_settings(None, {CONFIG_ENV: str(path)}).source


def test_no_file_at_all_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {})

    assert CONFIG_ENV in str(caught.value)


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path / "absent.toml", {})

    assert "absent.toml does not exist" in str(caught.value)


def test_invalid_toml_is_refused(tmp_path: Path) -> None:
    assert "is not valid TOML" in load_error(tmp_path, "[collector\nport = 1")


def test_access_token_is_read_from_the_named_variable(tmp_path: Path) -> None:
    settings = load(tmp_path, VALID, {"SHOP_TOKEN": "secret-token"})

    assert "secret-token" == settings.pixels[0].access_token


def test_app_secret_is_read_from_the_named_variable(tmp_path: Path) -> None:
    text = VALID.replace('access_token_env = "SHOP_TOKEN"',
                         'access_token_env = "SHOP_TOKEN"\napp_secret_env = "SHOP_SECRET"')

    settings = load(tmp_path, text, {"SHOP_SECRET": "app-secret"})

    assert "app-secret" == settings.pixels[0].app_secret


def test_redis_url_from_environment_overrides_the_file(tmp_path: Path) -> None:
    text = VALID + '\n[redis]\nurl = "redis://file:6379/0"\n'

    settings = load(tmp_path, text, {REDIS_URL_ENV: "redis://env:6380/1"})

    assert "redis://env:6380/1" == settings.redis_url


def test_redis_url_defaults_to_the_embedded_server(tmp_path: Path) -> None:
    assert "redis://127.0.0.1:6390/0" == load(tmp_path, VALID).redis_url


def test_graph_url_from_environment_overrides_the_file(tmp_path: Path) -> None:
    text = VALID + '\n[meta]\ngraph_url = "https://graph.file"\n'

    settings = load(tmp_path, text, {GRAPH_URL_ENV: "http://127.0.0.1:8090"})

    assert "http://127.0.0.1:8090" == settings.meta.graph_url


def test_pixel_and_link_lookup(tmp_path: Path) -> None:
    settings = load(tmp_path, VALID)

    assert ("9876543210", "spring", None, None) == (
        settings.pixel("9876543210").id, settings.link("spring").slug,  # type: ignore[union-attr]
        settings.pixel("1"), settings.link("nope"))


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load(tmp_path, VALID)

    with pytest.raises(AttributeError):
        settings.collector.port = 1  # type: ignore[misc]


def test_hash_api_key_is_sha256_hex() -> None:
    assert ("ca6f2e39b2ff141859b18bb5283aadd5093c8ede2869f3656231a054e54bfc22"
            == hash_api_key("demo-api-key"))


# -- refusals: each names its key -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VALID + "\n[relay]\nlinger_msec = 5\n", "relay.linger_msec"),
        ("bogus = 1\n" + VALID, "bogus"),
        (VALID.replace('id = "9876543210"', 'id = "9876543210"\ncolour = "red"'),
         "pixels[1].colour"),
    ],
)
def test_unknown_key_is_refused(tmp_path: Path, text: str, key: str) -> None:
    assert key in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VALID.replace("port = 8000", 'port = "8000"'), "collector.port"),
        (VALID + "\n[relay]\nlinger_ms = 1.5\n", "relay.linger_ms"),
        (VALID + "\n[relay]\nhigh_events = \"Purchase\"\n", "relay.high_events"),
        (VALID.replace('name = "shop"', "name = 3"), "api_keys[0].name"),
    ],
)
def test_wrong_type_is_refused(tmp_path: Path, text: str, key: str) -> None:
    assert key in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VALID.replace("port = 8000", "port = 0"), "collector.port"),
        (VALID.replace("port = 8000", "port = 65536"), "collector.port"),
        (VALID + "\n[dashboard]\nport = 70000\n", "dashboard.port"),
        (VALID + "\n[redis]\nembedded_port = 70000\n", "redis.embedded_port"),
        (VALID + "\n[fake_meta]\nport = 70000\n", "fake_meta.port"),
    ],
)
def test_port_out_of_range_is_refused(tmp_path: Path, text: str, key: str) -> None:
    assert key in load_error(tmp_path, text)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (VALID + "\n[relay]\nmax_batch_events = 1001\n", "relay.max_batch_events"),
        (VALID + "\n[meta]\napi_version = \"26\"\n", "meta.api_version"),
        (VALID + "\n[meta]\ntimeout_ms = 5\n", "meta.timeout_ms"),
        (VALID.replace('id = "9876543210"', 'id = "12ab"'), "pixels[1].id"),
        (VALID.replace('slug = "spring"', 'slug = "/spring"'), "links[0].slug"),
        (VALID.replace('sha256 = "ca6f', 'sha256 = "CA6F'), "api_keys[0].sha256"),
    ],
)
def test_value_breaking_its_constraint_is_refused(tmp_path: Path, text: str, key: str) -> None:
    assert key in load_error(tmp_path, text)


def test_link_naming_unknown_pixel_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('pixels = ["1234567890"]', 'pixels = ["1234567890", "5555555555"]')

    message = load_error(tmp_path, text)

    assert "links[0].pixels names 5555555555" in message


def test_link_naming_no_pixel_is_refused(tmp_path: Path) -> None:
    assert "links[0].pixels" in load_error(tmp_path, VALID.replace(
        'pixels = ["1234567890"]', "pixels = []"))


def test_link_with_relative_destination_is_refused(tmp_path: Path) -> None:
    assert "links[0].destination" in load_error(tmp_path, VALID.replace(
        "https://shop.example/landing", "/landing"))


def test_api_key_naming_unknown_pixel_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('name = "shop"', 'name = "shop"\npixels = ["5555555555"]')

    assert "api_keys[0].pixels" in load_error(tmp_path, text)


def test_duplicate_slug_is_refused(tmp_path: Path) -> None:
    text = VALID + """
[[links]]
slug = "spring"
destination = "https://shop.example/other"
pixels = ["1234567890"]
"""
    assert "links[1].slug" in load_error(tmp_path, text)


def test_duplicate_pixel_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('id = "9876543210"', 'id = "1234567890"')

    assert "pixels[1].id" in load_error(tmp_path, text)


@pytest.mark.parametrize("proxy", ["10.0.0.0/33", "proxy.local", "300.1.1.1"])
def test_bad_trusted_proxy_is_refused(tmp_path: Path, proxy: str) -> None:
    text = VALID.replace('"10.0.0.0/8"', f'"{proxy}"')

    assert "collector.trusted_proxies[0]" in load_error(tmp_path, text)


@pytest.mark.parametrize("origin", ["shop.example", "https://shop.example/path", "ftp://shop.example",
                                    "https://"])
def test_bad_allowed_origin_is_refused(tmp_path: Path, origin: str) -> None:
    text = VALID.replace('"https://shop.example"]', f'"{origin}"]')

    assert "collector.allowed_origins[0]" in load_error(tmp_path, text)


@pytest.mark.parametrize("secret", ["access_token", "app_secret"])
def test_secret_in_the_file_is_refused(tmp_path: Path, secret: str) -> None:
    text = VALID.replace('id = "9876543210"', f'id = "9876543210"\n{secret} = "leaked"')

    message = load_error(tmp_path, text)

    assert (True, False) == (f"pixels[1].{secret}" in message, "leaked" in message)


def test_unset_app_secret_variable_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('access_token_env = "SHOP_TOKEN"',
                         'access_token_env = "SHOP_TOKEN"\napp_secret_env = "SHOP_SECRET"')

    message = load_error(tmp_path, text, {"SHOP_TOKEN": "t"})

    assert (True, True) == ("pixels[0].app_secret_env" in message, "SHOP_SECRET" in message)


# -- an API key's app secret (the Graph endpoint's appsecret_proof) ------------------------------
KEY_WITH_SECRET = VALID.replace('name = "shop"', 'name = "shop"\napp_secret_env = "KEY_SECRET"')


def test_an_api_keys_app_secret_is_read_from_the_named_variable(tmp_path: Path) -> None:
    settings = load(tmp_path, KEY_WITH_SECRET, {"KEY_SECRET": "key-secret"})

    assert ("key-secret", False) == (settings.api_keys[0].app_secret,
                                     "key-secret" in repr(settings.api_keys))


def test_an_api_keys_unset_app_secret_variable_is_refused(tmp_path: Path) -> None:
    message = load_error(tmp_path, KEY_WITH_SECRET)

    assert (True, True) == ("api_keys[0].app_secret_env" in message, "KEY_SECRET" in message)


def test_requiring_appsecret_proof_without_a_secret_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('name = "shop"', 'name = "shop"\nrequire_appsecret_proof = true')

    assert "api_keys[0].require_appsecret_proof" in load_error(tmp_path, text)


def test_an_api_keys_app_secret_in_the_file_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('name = "shop"', 'name = "shop"\napp_secret = "leaked"')

    message = load_error(tmp_path, text)

    assert (True, False) == ("api_keys[0].app_secret" in message, "leaked" in message)


def test_event_on_both_priority_lists_is_refused(tmp_path: Path) -> None:
    text = VALID + '\n[relay]\nlow_events = ["PageView", "Purchase"]\n'

    assert "relay.low_events" in load_error(tmp_path, text)


def test_relative_graph_url_is_refused(tmp_path: Path) -> None:
    assert "meta.graph_url" in load_error(tmp_path, VALID + '\n[meta]\ngraph_url = "graph"\n')


def test_backoff_bounds_in_the_wrong_order_are_refused(tmp_path: Path) -> None:
    text = VALID + "\n[relay]\nmin_backoff_ms = 5000\nmax_backoff_ms = 1000\n"

    assert "relay.max_backoff_ms" in load_error(tmp_path, text)


# -- secrets stay out of reprs --------------------------------------------------------------------
def test_pixel_repr_never_shows_the_token(tmp_path: Path) -> None:
    text = VALID.replace('access_token_env = "SHOP_TOKEN"',
                         'access_token_env = "SHOP_TOKEN"\napp_secret_env = "SHOP_SECRET"')
    settings = load(tmp_path, text, {"SHOP_TOKEN": "tok-123", "SHOP_SECRET": "sec-456"})

    shown = repr(settings.pixels[0]) + repr(settings) + str(settings.pixels)

    assert ("tok-123" in shown, "sec-456" in shown, "1234567890" in shown) == (
        False, False, True)


# -- every setting is documented ------------------------------------------------------------------
def _description(hint: Any) -> str | None:
    if typing.get_origin(hint) is not typing.Annotated:
        return None
    for meta in hint.__metadata__:
        if isinstance(meta, msgspec.Meta) and meta.description:
            return str(meta.description)
    return None


def _section_struct(hint: Any) -> type[msgspec.Struct] | None:
    """The Struct a top-level field holds (``collector`` or ``pixels = [...]``), else None."""
    for candidate in (hint, *typing.get_args(hint)):
        if isinstance(candidate, type) and issubclass(candidate, msgspec.Struct):
            return candidate
    return None


def _all_settings() -> list[tuple[str, str | None]]:
    """``(section.key, description)`` of every setting, plus top-level fields that are not
    sections (``source``)."""
    found: list[tuple[str, str | None]] = []
    top_hints = typing.get_type_hints(Settings, include_extras=True)
    for top in msgspec.structs.fields(Settings):
        section = _section_struct(top_hints[top.name])
        if section is None:
            found.append((top.name, _description(top_hints[top.name])))
            continue
        hints = typing.get_type_hints(section, include_extras=True)
        found.extend((f"{top.name}.{f.name}", _description(hints[f.name]))
                     for f in msgspec.structs.fields(section))
    return found


ALL_SETTINGS = _all_settings()
FILE_SETTINGS = [name for name, text in ALL_SETTINGS
                 if not (text or "").startswith("Not a file setting")]


def test_settings_introspection_finds_every_section() -> None:
    sections = {name.split(".")[0] for name in FILE_SETTINGS}

    assert {"collector", "redis", "meta", "relay", "dashboard", "fake_meta", "alerting",
            "alerts", "pixels", "links", "api_keys", "operators"} == sections


@pytest.mark.parametrize(("name", "description"), ALL_SETTINGS, ids=[n for n, _ in ALL_SETTINGS])
def test_every_setting_has_a_description(name: str, description: str | None) -> None:
    assert (name, True) == (name, bool(description and description.strip()))


def test_secrets_and_source_are_not_file_settings() -> None:
    assert set() == {"pixels.access_token", "pixels.app_secret", "api_keys.app_secret",
                     "alerts.bot_token", "alerts.secret", "source"} & set(FILE_SETTINGS)


def test_every_setting_is_documented() -> None:
    if not README.exists():
        pytest.fail(f"{README} does not exist: its configuration reference must list "
                    f"{len(FILE_SETTINGS)} settings as section.key (e.g. collector.port)")
    text = README.read_text(encoding="utf-8")

    missing = [name for name in FILE_SETTINGS
               if not re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text)]

    assert [] == missing, "settings missing from README.md's configuration reference"


def test_pixel_settings_repr_is_overridden_by_the_struct() -> None:
    pixel = PixelSettings(id="12345", access_token="tok", app_secret="sec")

    assert "PixelSettings(id='12345')" == repr(pixel)


def test_reference_table_lists_every_file_setting() -> None:
    assert FILE_SETTINGS == [name for name, _, _ in reference()]


# -- default_phone_region ---------------------------------------------------------------------
def _regions(key: str, *pixels: str) -> Settings:
    return settings_from_mapping({
        "pixels": [{"id": f"1234{i}", "default_phone_region": r} for i, r in enumerate(pixels)],
        "api_keys": [{"name": "shop", "sha256": "0" * 64, "default_phone_region": key}],
    }, environ={})


def test_the_api_keys_phone_region_comes_before_the_pixels() -> None:
    settings = _regions("br", "PT")

    assert "BR" == settings.phone_region(settings.api_keys[0], ["12340"])


def test_pixels_that_share_a_phone_region_give_it() -> None:
    settings = _regions("", "pt", "PT")

    assert "PT" == settings.phone_region(settings.api_keys[0], ["12340", "12341"])


@pytest.mark.parametrize("pixels", [("PT", "ES"), ("PT", ""), ("", "")])
def test_pixels_that_disagree_or_have_none_give_no_phone_region(pixels: tuple[str, str]) -> None:
    settings = _regions("", *pixels)

    assert None is settings.phone_region(settings.api_keys[0], ["12340", "12341"])


@pytest.mark.parametrize(("where", "raw"), [
    ("pixels[0]", {"pixels": [{"id": "12345", "default_phone_region": "XX"}]}),
    ("api_keys[0]", {"api_keys": [{"name": "k", "sha256": "0" * 64,
                                   "default_phone_region": "Brazil"}]}),
])
def test_an_unknown_phone_region_fails_at_start_naming_the_key(where: str,
                                                               raw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=rf"^{re.escape(where)}\.default_phone_region "):
        settings_from_mapping(raw, environ={})
