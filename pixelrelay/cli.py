"""The ``pixelrelay`` command: one entry point for every process and tool.

    pixelrelay up                   the whole stack in one terminal (make up)
    pixelrelay collector            the collector (granian serving collector.app)
    pixelrelay relay --queues high  a relay worker for one or more priority queues
    pixelrelay dashboard            the operators' dashboard
    pixelrelay fake-meta            the fake Graph API used by tests and make up
    pixelrelay config check         validate the configuration
    pixelrelay config reference     every setting as a Markdown table
    pixelrelay hash-key KEY         the sha256 to put in [[api_keys]]
    pixelrelay trace EVENT_ID       one event's life
    pixelrelay audit                reconcile accepted events with their outcome
    pixelrelay requeue KEY|--all    send dead letters again
    pixelrelay openapi              the collector's OpenAPI document (JSON)
    pixelrelay user add NAME        a dashboard operator's [[operators]] entry

Every command takes ``--config`` (default ``$PIXELRELAY_CONFIG``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from relay.config import CONFIG_ENV, Settings, hash_api_key, load_settings
from relay.errors import ConfigError


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(args.config)
    os.environ[CONFIG_ENV] = str(Path(settings.source).resolve())
    return settings


def cmd_config_check(args: argparse.Namespace) -> int:
    settings = _settings(args)
    missing = [p.id for p in settings.pixels if not p.access_token]
    print(f"configuration {settings.source} is valid: {len(settings.pixels)} pixel(s), "
          f"{len(settings.links)} link(s), {len(settings.api_keys)} API key(s), "
          f"{len(settings.operators)} operator(s)")
    if missing:
        print(f"note: no access token in the environment for pixel(s) {', '.join(missing)}; "
              "`pixelrelay up` will use the fake Graph API")
    for warning in demo_credentials_exposed(settings):
        print(f"warning: {warning}")
    return 0


DEMO_API_KEY = "demo-api-key"  # the sample config's key (pixelrelay.example.toml)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def demo_credentials_exposed(settings: Settings) -> list[str]:
    """The sample config's demo operator or API key, listening beyond loopback."""
    from dashboard.operators import DEMO_OPERATOR_PASSWORD, demo_operator

    warnings = []
    demo = demo_operator(settings) if not _loopback(settings.dashboard.host) else None
    if demo is not None:
        warnings.append(f"operator {demo.name!r} still has the demo password "
                        f"({DEMO_OPERATOR_PASSWORD!r}) and the dashboard listens on "
                        f"{settings.dashboard.host}: replace it (pixelrelay user add)")
    demo_hash = hash_api_key(DEMO_API_KEY)
    if not _loopback(settings.collector.host):
        for key in settings.api_keys:
            if key.sha256 == demo_hash:
                warnings.append(f"API key {key.name!r} is the demo key ({DEMO_API_KEY!r}) and "
                                f"the collector listens on {settings.collector.host}: replace it")
    return warnings


def cmd_config_reference(_: argparse.Namespace) -> int:
    from relay.config import reference

    print("| setting | default | meaning |\n|---|---|---|")
    for key, default, text in reference():
        print(f"| `{key}` | `{default}` | {text} |")
    return 0


def _granian_log_config(process: str) -> str:
    """Write granian's logging config (JSON lines) to a private temporary file; its path."""
    import json
    import tempfile

    from relay.logs import granian_log_config

    handle, path = tempfile.mkstemp(prefix=f"pixelrelay-{process}-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        json.dump(granian_log_config(process), file)
    return path


_METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus_client when imported
_METRICS_DIR_PREFIX = "pixelrelay-collector-metrics-"


def _collector_metrics_dir(workers: int) -> None:
    """Where the collector's workers keep their metrics, in ``$PROMETHEUS_MULTIPROC_DIR``.

    One worker keeps them in memory (the variable is removed). Several write them to files that
    ``/metrics`` adds up (collector/metrics.py), in a new empty directory for each run: files
    left by an earlier run would add its counts. The directory is named after this process,
    which becomes granian's main process (exec keeps the pid), so a later start removes it once
    that process has gone; under systemd (PrivateTmp) it also goes away when the service stops.
    """
    if workers == 1:
        os.environ.pop(_METRICS_DIR_ENV, None)
        return
    import shutil
    import tempfile

    # Set before prometheus_client is imported: it reads the variable once, on import, and the
    # workers are forked from this process (collector._granian).
    current = tempfile.mkdtemp(prefix=f"{_METRICS_DIR_PREFIX}{os.getpid()}-")
    os.environ[_METRICS_DIR_ENV] = current
    from collector.metrics import process_exists

    for old in Path(tempfile.gettempdir()).glob(f"{_METRICS_DIR_PREFIX}*-*"):
        pid = old.name.removeprefix(_METRICS_DIR_PREFIX).partition("-")[0]
        if pid.isdigit() and not process_exists(int(pid)) and str(old) != current:
            shutil.rmtree(old, ignore_errors=True)


def cmd_collector(args: argparse.Namespace) -> int:
    from collector.reload import LAST_GOOD_ENV, keep_last_good

    settings = _settings(args)
    os.environ[LAST_GOOD_ENV] = str(keep_last_good(settings.source))  # for kill -HUP reloads
    _collector_metrics_dir(settings.collector.workers)
    from collector._granian import collector_server
    from relay.logs import granian_log_config

    # This process becomes granian's main process (systemd's MAINPID), as exec did before.
    collector_server(settings.collector, granian_log_config("collector")).serve()
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from relay.logs import configure_logging
    from relay.worker import RelayWorker, parse_priorities, redis_client

    settings = _settings(args)
    configure_logging(f"relay-{args.queues}")
    try:
        priorities = parse_priorities(args.queues)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    RelayWorker(settings, priorities, redis_client(settings),
                metrics_port=args.metrics_port).run_until_signalled()
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    settings = _settings(args)
    d = settings.dashboard
    argv = [sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
            "--host", d.host, "--port", str(d.port), "--no-ws", "--log-level", "info",
            "--log-config", _granian_log_config("dashboard"), "dashboard.app:create_app"]
    os.execv(sys.executable, argv)
    return 0


def cmd_fake_meta(args: argparse.Namespace) -> int:
    import dataclasses

    from fakemeta import FakeMetaOptions, run

    options = FakeMetaOptions.from_env()
    if args.port:
        options = dataclasses.replace(options, port=args.port)
    run(options)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from pixelrelay.stack import Stack

    settings = _settings(args)
    return Stack(settings, Path(settings.source)).run()


def cmd_hash_key(args: argparse.Namespace) -> int:
    print(hash_api_key(args.key))
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from relay.tools import trace

    return trace(_settings(args), args.event_id, sys.stdout)


def cmd_audit(args: argparse.Namespace) -> int:
    from relay.tools import audit

    return audit(_settings(args), sys.stdout, hours=args.hours)


def cmd_requeue(args: argparse.Namespace) -> int:
    from relay.tools import requeue

    return requeue(_settings(args), sys.stdout, args.keys, everything=args.all)


def cmd_openapi(_: argparse.Namespace) -> int:
    import json

    from collector.openapi import openapi_document

    print(json.dumps(openapi_document(), indent=2, sort_keys=True))
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    from dashboard.operators import user_add

    return user_add(args.name, args.role)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pixelrelay", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"TOML configuration (default ${CONFIG_ENV})")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler: object, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration")
        p.set_defaults(handler=handler)
        return p

    command("up", cmd_up, "run the whole stack in one terminal")
    command("collector", cmd_collector, "run the collector")
    relay = command("relay", cmd_relay, "run a relay worker")
    relay.add_argument("--queues", default="high,normal,low",
                       help="comma-separated priority queues: high, normal, low")
    relay.add_argument("--metrics-port", type=int, default=None,
                       help="port of this worker's /metrics (default: relay.metrics_port plus "
                            "the queue set's offset; 0 = none)")
    command("dashboard", cmd_dashboard, "run the dashboard")
    fake = command("fake-meta", cmd_fake_meta, "run the fake Graph API")
    fake.add_argument("--port", type=int, default=0, help="port (default $FAKEMETA_PORT)")
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser("check", help="validate the configuration")
    check.add_argument("--config", default=argparse.SUPPRESS, help="TOML configuration")
    check.set_defaults(handler=cmd_config_check)
    ref = config_sub.add_parser("reference", help="print the settings as a Markdown table")
    ref.set_defaults(handler=cmd_config_reference)
    hk = command("hash-key", cmd_hash_key, "print the sha256 of an API key")
    hk.add_argument("key")
    tr = command("trace", cmd_trace, "print one event's life")
    tr.add_argument("event_id")
    au = command("audit", cmd_audit, "reconcile accepted events")
    au.add_argument("--hours", type=int, default=24 * 7, help="how far back to look")
    rq = command("requeue", cmd_requeue, "send dead letters again")
    rq.add_argument("keys", nargs="*", help="dead letter keys (pixel:event_name:event_id)")
    rq.add_argument("--all", action="store_true", help="requeue every dead letter")
    command("openapi", cmd_openapi, "print the collector's OpenAPI document")
    user = sub.add_parser("user", help="dashboard operators")
    user_sub = user.add_subparsers(dest="user_command", required=True)
    add = user_sub.add_parser("add", help="print an [[operators]] entry (asks the password)")
    add.add_argument("name")
    add.add_argument("--role", choices=("viewer", "operator"), default="viewer")
    add.set_defaults(handler=cmd_user_add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not hasattr(args, "config"):
        args.config = None
    try:
        return int(args.handler(args))
    except ConfigError as exc:
        print(f"pixelrelay: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
