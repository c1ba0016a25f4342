"""Settings: one TOML file plus environment variables for secrets, read once into frozen structs.

Every setting has a default, a unit in its name where it has one, and a line of help (the
``description``); ``tests/relay/test_config.py`` fails when a setting is missing from the README.
Bad configuration raises :class:`ConfigError` with one sentence naming the key.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct, field

from relay.errors import ConfigError

CONFIG_ENV = "PIXELRELAY_CONFIG"
REDIS_URL_ENV = "REDIS_URL"
GRAPH_URL_ENV = "PIXELRELAY_GRAPH_URL"

Port = Annotated[int, Meta(ge=1, le=65535)]


def _help(text: str, **constraints: Any) -> Meta:
    return Meta(description=text, **constraints)


class CollectorSettings(Struct, frozen=True, forbid_unknown_fields=True):
    host: Annotated[str, _help("Address the collector listens on.")] = "127.0.0.1"
    port: Annotated[int, _help("Port the collector listens on.", ge=1, le=65535)] = 8000
    workers: Annotated[int, _help("granian worker processes.", ge=1, le=64)] = 1
    trusted_proxies: Annotated[
        list[str], _help("Networks whose X-Forwarded-For / X-Real-IP headers are believed.")
    ] = field(default_factory=lambda: ["127.0.0.1/32", "::1/128"])
    allowed_origins: Annotated[
        list[str], _help("Origins allowed to send browser beacons (CORS), e.g. https://shop.example.")
    ] = field(default_factory=list)
    spool_dir: Annotated[str, _help("Directory of the disk spool used while Redis is down.")] = (
        "var/spool"
    )
    click_ttl_days: Annotated[int, _help("How long a click's context is kept in Redis.", ge=1)] = 7
    cookie_max_age_days: Annotated[int, _help("Lifetime of the _fbc/_fbp cookies.", ge=1)] = 90
    cookie_domain: Annotated[str, _help("Domain attribute of the cookies; empty = host only.")] = ""
    max_body_bytes: Annotated[int, _help("Largest request body accepted.", ge=1024)] = 1_048_576
    redis_timeout_ms: Annotated[
        int, _help("A Redis write slower than this goes to the spool instead.", ge=10)
    ] = 500
    redis_probe_interval_ms: Annotated[
        int, _help("How often Redis is probed while the collector is spooling.", ge=50)
    ] = 500
    max_future_skew_s: Annotated[
        int, _help("Events dated further in the future than this are refused.", ge=0)
    ] = 600
    extra_bot_user_agents: Annotated[
        list[str], _help("More user-agent substrings (case-insensitive) treated as bots.")
    ] = field(default_factory=list)
    shutdown_grace_s: Annotated[
        int, _help("Seconds in-flight requests get to finish on SIGTERM.", ge=1)
    ] = 20


class RedisSettings(Struct, frozen=True, forbid_unknown_fields=True):
    url: Annotated[
        str, _help("Redis URL; empty starts the embedded server. REDIS_URL overrides it.")
    ] = ""
    embedded_port: Annotated[
        int, _help("Port of the embedded Redis-compatible server.", ge=1, le=65535)
    ] = 6390
    data_dir: Annotated[str, _help("Data directory of the embedded server (AOF).")] = "var/redis"


class MetaSettings(Struct, frozen=True, forbid_unknown_fields=True):
    graph_url: Annotated[
        str, _help("Graph API base URL. PIXELRELAY_GRAPH_URL overrides it.")
    ] = "https://graph.facebook.com"
    api_version: Annotated[
        str, _help("Default Graph API version, e.g. v26.0.", pattern=r"^v\d+\.\d+$")
    ] = "v26.0"
    timeout_ms: Annotated[int, _help("Timeout of one request to Meta.", ge=100)] = 1500
    partner_agent: Annotated[str, _help("partner_agent sent with every batch.")] = (
        "pixelrelay-0.1.0"
    )


class RelaySettings(Struct, frozen=True, forbid_unknown_fields=True):
    linger_ms: Annotated[
        int, _help("Longest a lone event waits for companions before it is sent.", ge=10)
    ] = 200
    max_batch_events: Annotated[int, _help("Events per request to Meta.", ge=1, le=1000)] = 1000
    max_attempts: Annotated[int, _help("Delivery attempts before a dead letter.", ge=1)] = 10
    min_backoff_ms: Annotated[int, _help("First retry delay (doubles each attempt).", ge=1)] = 5_000
    max_backoff_ms: Annotated[int, _help("Longest retry delay.", ge=1)] = 3_600_000
    dedup_window_hours: Annotated[
        int, _help("An event_id is sent at most once in this window.", ge=1)
    ] = 48
    ledger_ttl_days: Annotated[int, _help("How long an event's history is kept.", ge=1)] = 7
    max_event_age_days: Annotated[int, _help("Older events are dead-lettered as expired.")] = 7
    high_events: Annotated[list[str], _help("Event names on the high-priority queue.")] = field(
        default_factory=lambda: [
            "Purchase", "Lead", "CompleteRegistration", "Subscribe", "StartTrial",
            "SubmitApplication", "Schedule", "Donate",
        ]
    )
    low_events: Annotated[list[str], _help("Event names on the low-priority queue.")] = field(
        default_factory=lambda: ["PageView"]
    )
    worker_threads: Annotated[int, _help("Threads per relay worker process.", ge=1)] = 8
    queued_batches_max: Annotated[
        int, _help("Batches waiting per queue before events stay in the inbox.", ge=1)
    ] = 16
    heartbeat_timeout_ms: Annotated[
        int, _help("A worker silent this long is dead; its messages are redelivered.", ge=1000)
    ] = 10_000
    requests_per_s: Annotated[float, _help("Default request rate limit per pixel.", gt=0)] = 50.0
    events_per_s: Annotated[float, _help("Default event rate limit per pixel.", gt=0)] = 20_000.0
    metrics_host: Annotated[str, _help("Address each relay worker's /metrics listens on.")] = (
        "127.0.0.1"
    )
    metrics_port: Annotated[
        int, _help("Base port of the workers' /metrics: high +0, normal +1, low +2, other queue "
                   "sets +3..+6 (docs/metrics.md); 0 = none.", ge=0, le=65535)
    ] = 9320
    observe_interval_ms: Annotated[
        int, _help("How often the elected worker reads queue depths and evaluates alerts.",
                   ge=100)
    ] = 5_000
    pause_after_failures: Annotated[
        int, _help("Transient failures (of two batches or more, at least half of the pixel's "
                   "recent requests, within pause_window_s) that pause a pixel.", ge=2)
    ] = 3
    pause_window_s: Annotated[
        int, _help("How far back a pixel's failures count towards pausing it.", ge=1)
    ] = 30
    probe_min_ms: Annotated[
        int, _help("First wait before a paused pixel's probe (doubles per failed probe).", ge=10)
    ] = 1_000
    probe_max_ms: Annotated[
        int, _help("Longest wait between probes while Meta is failing (bounds the delay "
                   "after Meta's return).", ge=10)
    ] = 3_000
    token_probe_max_ms: Annotated[
        int, _help("Longest wait between probes of a pixel paused for its token (190) or a "
                   "missing permission (10, 200-299); bounds the delay after it is fixed at "
                   "Meta.", ge=10)
    ] = 5_000


class DashboardSettings(Struct, frozen=True, forbid_unknown_fields=True):
    host: Annotated[str, _help("Address the dashboard listens on.")] = "127.0.0.1"
    port: Annotated[int, _help("Port the dashboard listens on.", ge=1, le=65535)] = 8001
    session_idle_timeout_s: Annotated[
        int, _help("A dashboard session unused this long ends (the operator logs in again).",
                   ge=60)
    ] = 1_800
    session_max_age_s: Annotated[
        int, _help("A dashboard session ends this long after its login, used or not.", ge=300)
    ] = 43_200
    login_free_failures: Annotated[
        int, _help("Failed logins per name or address before each further try must wait.", ge=1)
    ] = 5
    login_max_delay_s: Annotated[
        int, _help("Longest wait imposed after repeated failed logins (doubling from 1 s).",
                   ge=1)
    ] = 900
    collector_url: Annotated[
        str, _help("Collector base URL whose /metrics the dashboard reads; empty = "
                   "collector.host:port.")
    ] = ""


class FakeMetaSettings(Struct, frozen=True, forbid_unknown_fields=True):
    port: Annotated[int, _help("Port of the built-in fake Graph API (make up).", ge=1,
                               le=65535)] = 8090


class AlertingSettings(Struct, frozen=True, forbid_unknown_fields=True):
    dashboard_url: Annotated[
        str, _help("Link put in every alert message; empty = the dashboard's host and port.")
    ] = ""
    cooldown_s: Annotated[
        int, _help("A condition's next message waits this long after its last (flapping).", ge=0)
    ] = 300
    success_min_percent: Annotated[
        float, _help("Alert when a pixel delivers less than this share of its events.", ge=0,
                     le=100)
    ] = 99.0
    success_window_min: Annotated[
        int, _help("Minutes over which delivery success and new dead letters are counted.",
                   ge=1, le=1440)
    ] = 15
    throttled_for_s: Annotated[
        int, _help("Alert when a pixel has been throttled by Meta this long.", ge=0)
    ] = 600
    oldest_waiting_max_s: Annotated[
        int, _help("Alert when a queue's oldest waiting event is older than this.", ge=1)
    ] = 300
    collector_metrics_url: Annotated[
        str, _help("Collector /metrics read for its spooling state; empty = collector.host/port.")
    ] = ""
    retry_max_s: Annotated[
        int, _help("Longest wait between two tries of an alert message to an endpoint.", ge=1)
    ] = 60
    outbox_max_messages: Annotated[
        int, _help("Alert messages kept in Redis per endpoint while it is unreachable; older "
                   "ones beyond this are dropped and counted in the next message.", ge=10)
    ] = 1_000


class AlertSettings(Struct, frozen=True, forbid_unknown_fields=True):
    kind: Annotated[str, _help("telegram or webhook.", pattern=r"^(telegram|webhook)$")]
    chat_id: Annotated[str, _help("Telegram chat id the bot writes to (telegram).")] = ""
    bot_token_env: Annotated[
        str, _help("Environment variable holding the Telegram bot token (telegram).")
    ] = ""
    telegram_api_url: Annotated[str, _help("Telegram Bot API base URL.")] = (
        "https://api.telegram.org"
    )
    url: Annotated[str, _help("URL the JSON alert is POSTed to (webhook).")] = ""
    secret_env: Annotated[
        str, _help("Environment variable holding the HMAC-SHA256 key of the signature (webhook).")
    ] = ""
    conditions: Annotated[
        list[str], _help("Conditions sent to this endpoint; empty = all (docs/metrics.md).")
    ] = field(default_factory=list)
    timeout_ms: Annotated[int, _help("Timeout of one request to the endpoint.", ge=100)] = 5_000
    # Resolved from the environment at load time; never in the TOML file.
    bot_token: Annotated[str, _help("Not a file setting: read from bot_token_env.")] = ""
    secret: Annotated[str, _help("Not a file setting: read from secret_env.")] = ""

    def __repr__(self) -> str:  # secrets stay out of tracebacks and logs
        return f"AlertSettings(kind={self.kind!r})"


class PixelSettings(Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[str, _help("Meta pixel (dataset) id.", pattern=r"^\d{5,20}$")]
    access_token_env: Annotated[
        str, _help("Environment variable holding the pixel's CAPI access token.")
    ] = ""
    app_secret_env: Annotated[
        str, _help("Environment variable holding the app secret (appsecret_proof).")
    ] = ""
    test_event_code: Annotated[
        str, _help("Sent as test_event_code (Events Manager tests) with events that bring none.")
    ] = ""
    api_version: Annotated[str, _help("Graph API version for this pixel; empty = meta's.")] = ""
    requests_per_s: Annotated[float, _help("Request rate limit; 0 = relay default.", ge=0)] = 0.0
    events_per_s: Annotated[float, _help("Event rate limit; 0 = relay default.", ge=0)] = 0.0
    default_phone_region: Annotated[
        str, _help("Country (ISO 3166-1 alpha-2, e.g. BR) of phone numbers sent to this pixel "
                   "without a country code; empty = none, such numbers are refused.")
    ] = ""
    require_consent: Annotated[
        bool, _help("Send only events that carry the visitor's consent (the event's consent, "
                    "the beacon's or the _prconsent cookie); others are counted, never sent.")
    ] = False
    data_processing_options: Annotated[
        list[str], _help("Default data_processing_options for events that set none: ['LDU'] "
                         "for Meta's Limited Data Use, [] for none.")
    ] = field(default_factory=list)
    data_processing_options_country: Annotated[
        int, _help("Country of the LDU default: 0 = Meta geolocates, 1 = United States.", ge=0)
    ] = 0
    data_processing_options_state: Annotated[
        int, _help("State of the LDU default: 0 = Meta geolocates, 1000 = California.", ge=0)
    ] = 0
    # Resolved from the environment at load time; never in the TOML file.
    access_token: Annotated[str, _help("Not a file setting: read from access_token_env.")] = ""
    app_secret: Annotated[str, _help("Not a file setting: read from app_secret_env.")] = ""

    def __repr__(self) -> str:  # secrets stay out of tracebacks and logs
        return f"PixelSettings(id={self.id!r})"


class LinkSettings(Struct, frozen=True, forbid_unknown_fields=True):
    slug: Annotated[str, _help("Path segment after /go/.", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
    destination: Annotated[str, _help("Redirect target; may contain {click_id}.")]
    pixels: Annotated[list[str], _help("Pixel ids the click is reported to.")] = field(
        default_factory=list
    )
    event_name: Annotated[str, _help("Event sent for a click.")] = "PageView"
    forward_query: Annotated[bool, _help("Append the link's query string to the target.")] = True
    require_consent: Annotated[
        bool, _help("Report the click only with the visitor's consent (the _prconsent cookie); "
                    "without it the redirect stores nothing and sets no cookie.")
    ] = False


class ApiKeySettings(Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, _help("Who holds the key (shown in logs).")]
    sha256: Annotated[
        str, _help("SHA-256 hex of the key (pixelrelay hash-key).", pattern=r"^[0-9a-f]{64}$")
    ]
    pixels: Annotated[list[str], _help("Pixels the key may send to; empty = all.")] = field(
        default_factory=list
    )
    default_phone_region: Annotated[
        str, _help("Country (ISO 3166-1 alpha-2, e.g. BR) of phone numbers this key sends "
                   "without a country code; empty = the pixel's.")
    ] = ""
    app_secret_env: Annotated[
        str, _help("Environment variable holding the app secret this key's clients sign "
                   "appsecret_proof with on the Graph endpoint; empty = the pixel's app secret.")
    ] = ""
    require_appsecret_proof: Annotated[
        bool, _help("Refuse Graph endpoint requests with this key that carry no "
                    "appsecret_proof (Meta's 'Require App Secret'); needs app_secret_env.")
    ] = False
    # Resolved from the environment at load time; never in the TOML file.
    app_secret: Annotated[str, _help("Not a file setting: read from app_secret_env.")] = ""

    def __repr__(self) -> str:  # the app secret stays out of tracebacks and logs
        return f"ApiKeySettings(name={self.name!r})"


class OperatorSettings(Struct, frozen=True, forbid_unknown_fields=True):
    name: Annotated[str, _help("Operator's login name (pixelrelay user add).",
                               pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")]
    argon2: Annotated[str, _help("Argon2id hash of the password (pixelrelay user add).",
                                 pattern=r"^\$argon2id\$")]
    role: Annotated[Literal["viewer", "operator"],
                    _help("viewer sees everything; operator may also requeue and discard.")] = (
        "viewer"
    )

    def __repr__(self) -> str:  # the hash stays out of tracebacks and logs
        return f"OperatorSettings(name={self.name!r}, role={self.role!r})"


class Settings(Struct, frozen=True, forbid_unknown_fields=True):
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    meta: MetaSettings = field(default_factory=MetaSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    fake_meta: FakeMetaSettings = field(default_factory=FakeMetaSettings)
    alerting: AlertingSettings = field(default_factory=AlertingSettings)
    alerts: list[AlertSettings] = field(default_factory=list)
    pixels: list[PixelSettings] = field(default_factory=list)
    links: list[LinkSettings] = field(default_factory=list)
    api_keys: list[ApiKeySettings] = field(default_factory=list)
    operators: list[OperatorSettings] = field(default_factory=list)
    source: Annotated[str, _help("Not a file setting: the file this was read from.")] = ""

    @property
    def redis_url(self) -> str:
        return self.redis.url or f"redis://127.0.0.1:{self.redis.embedded_port}/0"

    def pixel(self, pixel_id: str) -> PixelSettings | None:
        return next((p for p in self.pixels if p.id == pixel_id), None)

    def phone_region(self, api_key: ApiKeySettings | None, pixel_ids: list[str]) -> str | None:
        """Region for phone numbers without a country code: the API key's, else the one all
        ``pixel_ids`` share (pixels that disagree give none: a guess would hash a wrong number).
        """
        if api_key is not None and api_key.default_phone_region:
            return api_key.default_phone_region.upper()
        regions = {(p.default_phone_region.upper() if p else "")
                   for p in (self.pixel(pid) for pid in pixel_ids)}
        if len(regions) != 1:
            return None
        return regions.pop() or None

    def link(self, slug: str) -> LinkSettings | None:
        return next((k for k in self.links if k.slug == slug), None)

    def operator(self, name: str) -> OperatorSettings | None:
        return next((o for o in self.operators if o.name == name), None)

    @property
    def collector_url(self) -> str:
        return self.dashboard.collector_url or f"http://{self.collector.host}:{self.collector.port}"

    @property
    def dashboard_link(self) -> str:
        """The dashboard link in alert messages."""
        return self.alerting.dashboard_url or (
            f"http://{self.dashboard.host}:{self.dashboard.port}/")


def hash_api_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def load_settings(path: str | os.PathLike[str] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (argument, else $PIXELRELAY_CONFIG) and the environment; validate."""
    env = os.environ if environ is None else environ
    chosen = path or env.get(CONFIG_ENV)
    if not chosen:
        raise ConfigError(f"no configuration file: pass --config or set {CONFIG_ENV}")
    file = Path(chosen)
    try:
        raw = tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"configuration file {file} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration file {file} is not valid TOML: {exc}") from None
    return settings_from_mapping(raw, env, source=str(file))


def settings_from_mapping(raw: Mapping[str, Any], environ: Mapping[str, str] | None = None,
                          source: str = "") -> Settings:
    env = os.environ if environ is None else environ
    for table, secret_key in (("pixels", "access_token"), ("pixels", "app_secret"),
                              ("api_keys", "app_secret"), ("alerts", "bot_token"),
                              ("alerts", "secret")):
        for i, item in enumerate(raw.get(table, [])):
            if isinstance(item, dict) and secret_key in item:
                raise ConfigError(
                    f"{table}[{i}].{secret_key} must not be in the file: "
                    f"name an environment variable with {secret_key}_env"
                )
    try:
        settings = msgspec.convert(dict(raw), Settings)
    except msgspec.ValidationError as exc:
        raise ConfigError(_plain(str(exc))) from None
    settings = _resolve_environment(settings, env, source)
    _check_consistency(settings)
    return settings


def _plain(message: str) -> str:
    """Turn msgspec's 'Expected `int` - at `$.collector.port`' into 'collector.port: ...'."""
    match = re.match(r"(?P<what>.*?)(?: - at `\$\.?(?P<key>[^`]*)`)?$", message)
    if not match:
        return f"configuration: {message}"
    unknown = re.fullmatch(r"Object contains unknown field `(?P<name>[^`]*)`", match["what"])
    if unknown:  # name the unknown key itself, e.g. collector.bogus
        key = ".".join(k for k in (match["key"], unknown["name"]) if k)
        return f"configuration key {key} is not a known setting"
    what = match["what"].replace("`", "")
    return f"configuration key {match['key'] or '(top level)'}: {what}"


def _resolve_environment(settings: Settings, env: Mapping[str, str], source: str) -> Settings:
    pixels = []
    for i, pixel in enumerate(settings.pixels):
        token = env.get(pixel.access_token_env, "") if pixel.access_token_env else ""
        secret = env.get(pixel.app_secret_env, "") if pixel.app_secret_env else ""
        if pixel.app_secret_env and not secret:
            raise ConfigError(
                f"pixels[{i}].app_secret_env names {pixel.app_secret_env}, which is not set"
            )
        pixels.append(msgspec.structs.replace(pixel, access_token=token, app_secret=secret))
    api_keys = []
    for i, api_key in enumerate(settings.api_keys):
        secret = env.get(api_key.app_secret_env, "") if api_key.app_secret_env else ""
        if api_key.app_secret_env and not secret:
            raise ConfigError(f"api_keys[{i}].app_secret_env names {api_key.app_secret_env}, "
                              "which is not set")
        if api_key.require_appsecret_proof and not secret:
            raise ConfigError(f"api_keys[{i}].require_appsecret_proof needs app_secret_env: "
                              "the secret the proof is checked against")
        api_keys.append(msgspec.structs.replace(api_key, app_secret=secret))
    redis = settings.redis
    if env.get(REDIS_URL_ENV):
        redis = msgspec.structs.replace(redis, url=env[REDIS_URL_ENV])
    alerts = []
    for i, alert in enumerate(settings.alerts):
        names = {"telegram": ("bot_token_env", alert.bot_token_env),
                 "webhook": ("secret_env", alert.secret_env)}
        key, variable = names[alert.kind]
        if not variable or not env.get(variable):
            raise ConfigError(f"alerts[{i}].{key} must name a set environment variable "
                              f"(a {alert.kind} alert needs its secret)")
        alerts.append(msgspec.structs.replace(
            alert, bot_token=env[variable] if alert.kind == "telegram" else "",
            secret=env[variable] if alert.kind == "webhook" else ""))
    meta = settings.meta
    if env.get(GRAPH_URL_ENV):
        meta = msgspec.structs.replace(meta, graph_url=env[GRAPH_URL_ENV])
    return msgspec.structs.replace(
        settings, pixels=pixels, api_keys=api_keys, redis=redis, meta=meta, alerts=alerts,
        source=source,
    )


def _check_consistency(settings: Settings) -> None:
    pixel_ids = [p.id for p in settings.pixels]
    for i, pid in enumerate(pixel_ids):
        if pid in pixel_ids[:i]:
            raise ConfigError(f"pixels[{i}].id {pid} is configured twice")
    slugs = [k.slug for k in settings.links]
    for i, link in enumerate(settings.links):
        if link.slug in slugs[:i]:
            raise ConfigError(f"links[{i}].slug {link.slug!r} is configured twice")
        target = urlsplit(link.destination.replace("{click_id}", "x"))
        if target.scheme not in ("http", "https") or not target.netloc:
            raise ConfigError(f"links[{i}].destination must be an absolute http(s) URL")
        if not link.pixels:
            raise ConfigError(f"links[{i}].pixels names no pixel")
        for pid in link.pixels:
            if pid not in pixel_ids:
                raise ConfigError(f"links[{i}].pixels names {pid}, which is not a configured pixel")
    for where, region in _phone_regions(settings):
        if region and region.upper() not in _phone_region_codes():
            raise ConfigError(f"{where}.default_phone_region {region!r} is not a country code "
                              "phone numbers are known for, such as US or BR")
    from relay.validation import DATA_PROCESSING_OPTIONS  # the event rules' own set

    for i, pixel in enumerate(settings.pixels):
        if not set(pixel.data_processing_options) <= DATA_PROCESSING_OPTIONS:
            raise ConfigError(f"pixels[{i}].data_processing_options may hold only 'LDU'")
    for i, key in enumerate(settings.api_keys):
        for pid in key.pixels:
            if pid not in pixel_ids:
                raise ConfigError(
                    f"api_keys[{i}].pixels names {pid}, which is not a configured pixel"
                )
    for i, net in enumerate(settings.collector.trusted_proxies):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise ConfigError(
                f"collector.trusted_proxies[{i}] {net!r} is not an IP address or network"
            ) from None
    for i, origin in enumerate(settings.collector.allowed_origins):
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            raise ConfigError(
                f"collector.allowed_origins[{i}] {origin!r} must look like https://shop.example"
            )
    overlap = set(settings.relay.high_events) & set(settings.relay.low_events)
    if overlap:
        raise ConfigError(f"relay.high_events and relay.low_events both name {sorted(overlap)}")
    names = [o.name for o in settings.operators]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"operators[{i}].name {name!r} is configured twice")
    if settings.dashboard.session_max_age_s < settings.dashboard.session_idle_timeout_s:
        raise ConfigError("dashboard.session_max_age_s must not be smaller than "
                          "dashboard.session_idle_timeout_s")
    _check_alerts(settings)
    graph = urlsplit(settings.meta.graph_url)
    if graph.scheme not in ("http", "https") or not graph.netloc:
        raise ConfigError("meta.graph_url must be an absolute http(s) URL")
    if settings.relay.probe_max_ms < settings.relay.probe_min_ms:
        raise ConfigError("relay.probe_max_ms must not be smaller than relay.probe_min_ms")
    if settings.relay.max_backoff_ms < settings.relay.min_backoff_ms:
        raise ConfigError("relay.max_backoff_ms must not be smaller than relay.min_backoff_ms")


def _phone_regions(settings: Settings) -> list[tuple[str, str]]:
    return ([(f"pixels[{i}]", p.default_phone_region) for i, p in enumerate(settings.pixels)]
            + [(f"api_keys[{i}]", k.default_phone_region)
               for i, k in enumerate(settings.api_keys)])


def _phone_region_codes() -> frozenset[str]:
    import phonenumbers  # only when a region is configured

    return frozenset(phonenumbers.SUPPORTED_REGIONS)


ALERT_CONDITIONS = ("delivery_success_low", "dead_letters_growing", "token_invalid",
                    "throttled", "oldest_waiting", "collector_spooling", "no_live_worker",
                    "redis_unreachable", "pixel_paused")


def _check_alerts(settings: Settings) -> None:
    for i, alert in enumerate(settings.alerts):
        base = alert.telegram_api_url if alert.kind == "telegram" else alert.url
        parts = urlsplit(base)
        key = "telegram_api_url" if alert.kind == "telegram" else "url"
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"alerts[{i}].{key} must be an absolute http(s) URL")
        if alert.kind == "telegram" and not alert.chat_id:
            raise ConfigError(f"alerts[{i}].chat_id is required for a telegram alert")
        for name in alert.conditions:
            if name not in ALERT_CONDITIONS:
                raise ConfigError(f"alerts[{i}].conditions names {name!r}: choose from "
                                  f"{', '.join(ALERT_CONDITIONS)}")
    for key in ("dashboard_url", "collector_metrics_url"):
        value = getattr(settings.alerting, key)
        parts = urlsplit(value)
        if value and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ConfigError(f"alerting.{key} must be an absolute http(s) URL")


def reference() -> list[tuple[str, str, str]]:
    """(``section.key``, default, help) for every file setting: the README's reference table."""
    import typing

    sections: list[tuple[str, type[Struct]]] = [
        ("collector", CollectorSettings), ("redis", RedisSettings), ("meta", MetaSettings),
        ("relay", RelaySettings), ("dashboard", DashboardSettings),
        ("fake_meta", FakeMetaSettings), ("alerting", AlertingSettings),
        ("alerts", AlertSettings), ("pixels", PixelSettings), ("links", LinkSettings),
        ("api_keys", ApiKeySettings), ("operators", OperatorSettings),
    ]
    rows = []
    for section, struct in sections:
        hints = typing.get_type_hints(struct, include_extras=True)
        for f in msgspec.structs.fields(struct):
            meta = next((m for m in getattr(hints[f.name], "__metadata__", ())
                         if isinstance(m, Meta)), None)
            text = meta.description if meta and meta.description else ""
            if text.startswith("Not a file setting"):
                continue
            if f.default is not msgspec.NODEFAULT:
                default = repr(f.default)
            elif f.default_factory is not msgspec.NODEFAULT:
                default = repr(f.default_factory())
            else:
                default = "(required)"
            rows.append((f"{section}.{f.name}", default, text))
    return rows
