"""relay.logs: JSON lines for granian's own loggers, and redaction of tokens in URLs."""

from __future__ import annotations

import json
import logging
import logging.config

from relay.logs import JsonLineFormatter, granian_log_config, redact


def test_a_foreign_log_record_becomes_one_json_line() -> None:
    record = logging.LogRecord("_granian", logging.INFO, __file__, 1, "Listening at: %s",
                               ("http://127.0.0.1:8000",), None)

    entry = json.loads(JsonLineFormatter(process="collector").format(record))

    assert ("Listening at: http://127.0.0.1:8000", "info", "_granian", "collector") == (
        entry["event"], entry["level"], entry["logger"], entry["process"])


def test_access_tokens_are_redacted_from_foreign_lines() -> None:
    record = logging.LogRecord("httpx", logging.WARNING, __file__, 1,
                               "GET https://graph.example/v26.0/1?access_token=EAAB123&x=1",
                               (), None)

    line = JsonLineFormatter().format(record)

    assert "EAAB123" not in line and "access_token=[redacted]&x=1" in line


def test_redact_leaves_other_text_alone() -> None:
    assert "appsecret_proof=[redacted] and more" == redact("appsecret_proof=abc123 and more")


def test_granian_config_is_a_valid_dict_config() -> None:
    config = {"version": 1, "disable_existing_loggers": False, "handlers": {},
              **granian_log_config("dashboard")}

    logging.config.dictConfig(config)  # raises on a bad formatter reference
