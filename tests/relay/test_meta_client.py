"""relay.meta_client: one POST per batch, and every answer of Meta mapped to the error tree."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import msgspec
import pytest
from structlog.testing import capture_logs

from fakemeta import _errors as fake_errors
from relay import meta_client
from relay.config import MetaSettings, PixelSettings
from relay.errors import (
    DeliveryError,
    InvalidBatchError,
    PermanentError,
    ThrottledError,
    TransientError,
)
from relay.meta_client import MetaClient, appsecret_proof, classify_meta_error
from tests.relay.factories import FakeGraph, graph_error, meta_event

PIXEL = PixelSettings(id="1234567890", access_token="tok-abc")
META = MetaSettings(graph_url="https://graph.test/", api_version="v26.0",
                    partner_agent="pixelrelay-test")


def body(payload: object) -> bytes:
    return json.dumps(payload).encode()


def client_for(graph: FakeGraph, settings: MetaSettings = META) -> MetaClient:
    return MetaClient(settings, transport=graph.transport())


def send_error(respond: object, pixel: PixelSettings = PIXEL) -> DeliveryError:
    graph = FakeGraph(respond=respond)  # type: ignore[arg-type]
    with pytest.raises(DeliveryError) as caught:
        client_for(graph).send(pixel, [meta_event("e1")])
    return caught.value


# -- classify_meta_error --------------------------------------------------------------------------
@pytest.mark.parametrize("code", [1, 2, 341, 368])
def test_temporary_codes_are_transient(code: int) -> None:
    error = classify_meta_error(400, body(graph_error(code)))

    assert (TransientError, code) == (type(error), error.code)


@pytest.mark.parametrize("code", [4, 17, 32, 613, 80004])
def test_throttling_codes_are_throttled(code: int) -> None:
    error = classify_meta_error(400, body(graph_error(code)))

    assert (ThrottledError, code) == (type(error), error.code)


def test_throttled_is_a_kind_of_transient() -> None:
    assert isinstance(classify_meta_error(400, body(graph_error(613))), TransientError)


def test_is_transient_flag_makes_an_unknown_code_transient() -> None:
    error = classify_meta_error(400, body(graph_error(999, is_transient=True)))

    assert TransientError is type(error)


@pytest.mark.parametrize("code", [190, 10, 200, 250, 299])
def test_token_and_permission_codes_are_permanent(code: int) -> None:
    error = classify_meta_error(400, body(graph_error(code)))

    assert (PermanentError, code) == (type(error), error.code)


def test_code_300_is_not_a_permission_code() -> None:
    assert PermanentError is type(classify_meta_error(400, body(graph_error(300))))


@pytest.mark.parametrize("subcode", [2804001, 2804003, 2804019, 2804050, 2804099])
def test_invalid_parameter_with_an_event_subcode_is_an_invalid_batch(subcode: int) -> None:
    error = classify_meta_error(400, body(graph_error(100, subcode=subcode, fbtrace_id="T1")))

    assert (InvalidBatchError, 100, subcode, "T1", 400) == (
        type(error), error.code, error.subcode, error.fbtrace_id, error.status)


@pytest.mark.parametrize("user_msg", [
    "data[7].custom_data.currency must be a 3-letter ISO 4217 code.",
    "The parameter data[0].action_source is required.",
])
def test_invalid_parameter_naming_an_event_is_an_invalid_batch(user_msg: str) -> None:
    # Worded as the fake words it (fakemeta/_validation.py): no subcode, the event's index.
    answer = fake_errors.invalid_parameter(user_msg).body("T2")

    assert InvalidBatchError is type(classify_meta_error(400, body(answer)))


REQUEST_LEVEL_100 = {
    "subcode-33-unknown-pixel": fake_errors.unknown_object("1234567890", "POST").body("T3"),
    "no-subcode": graph_error(100, message="Invalid parameter", fbtrace_id="T3"),
    "bad-appsecret-proof": fake_errors.bad_appsecret_proof().body("T3"),
    "bad-test-event-code": fake_errors.invalid_parameter(
        "test_event_code must be a string.").body("T3"),
    "empty-data": fake_errors.invalid_parameter(
        "data must hold between 1 and 1000 events, got 0.",
        title="Invalid Number Of Events").body("T3"),
}


@pytest.mark.parametrize("answer", REQUEST_LEVEL_100.values(), ids=REQUEST_LEVEL_100.keys())
def test_invalid_parameter_about_the_request_is_permanent_for_the_batch(
        answer: dict[str, Any]) -> None:
    error = classify_meta_error(400, body(answer))

    assert (PermanentError, 100, answer["error"].get("error_subcode"), "T3") == (
        type(error), error.code, error.subcode, error.fbtrace_id)


def test_invalid_batch_is_a_kind_of_permanent() -> None:
    assert isinstance(classify_meta_error(400, body(graph_error(100, subcode=2804019))),
                      PermanentError)


def test_same_rejection_ignores_which_event_index_is_named() -> None:
    def rejection(user_msg: str, subcode: int | None = None) -> DeliveryError:
        answer = fake_errors.invalid_parameter(user_msg, subcode=subcode).body("T")
        return classify_meta_error(400, body(answer))

    currency = "data[{}].custom_data.currency must be a 3-letter ISO 4217 code."
    assert (True, False, False) == (
        meta_client.same_rejection(rejection(currency.format(0)), rejection(currency.format(9))),
        meta_client.same_rejection(rejection(currency.format(0)),
                                   rejection("data[0].custom_data.value must be a number.")),
        meta_client.same_rejection(rejection(currency.format(0)),
                                   rejection(currency.format(0), subcode=2804019)))


@pytest.mark.parametrize("status", [500, 502, 503, 504, 429, 408])
def test_server_errors_without_graph_body_are_transient(status: int) -> None:
    error = classify_meta_error(status, b"<html>Bad gateway</html>")

    assert (TransientError, status) == (type(error), error.status)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_without_graph_body_are_permanent(status: int) -> None:
    error = classify_meta_error(status, b"not json")

    assert (PermanentError, status) == (type(error), error.status)


@pytest.mark.parametrize("payload", [{}, {"error": "nope"}, [1, 2]])
def test_json_that_is_not_a_graph_error_counts_as_no_body(payload: object) -> None:
    assert PermanentError is type(classify_meta_error(400, body(payload)))


def test_unknown_code_with_5xx_is_transient() -> None:
    assert TransientError is type(classify_meta_error(503, body(graph_error(999))))


def test_user_message_is_preferred_over_the_technical_one() -> None:
    payload = graph_error(100, message="Invalid parameter")
    payload["error"]["error_user_msg"] = "The fbc parameter is malformed"

    assert "The fbc parameter is malformed" == classify_meta_error(400, body(payload)).message


def test_error_as_dict_carries_meta_fields() -> None:
    error = classify_meta_error(400, body(graph_error(190, subcode=463, message="expired",
                                                      fbtrace_id="T9")))

    assert {"kind": "PermanentError", "message": "expired", "code": 190, "subcode": 463,
            "fbtrace_id": "T9", "status": 400} == error.as_dict()


# -- send -----------------------------------------------------------------------------------------
def test_send_posts_to_the_pixel_events_path() -> None:
    graph = FakeGraph()

    client_for(graph).send(PIXEL, [meta_event("e1")])

    assert ("POST", "graph.test", "/v26.0/1234567890/events") == (
        graph.requests[0].method, graph.requests[0].url.host, graph.requests[0].url.path)


def test_pixel_api_version_overrides_the_default() -> None:
    graph = FakeGraph()
    pixel = msgspec.structs.replace(PIXEL, api_version="v25.0")

    client_for(graph).send(pixel, [meta_event("e1")])

    assert "/v25.0/1234567890/events" == graph.requests[0].url.path


def test_send_passes_the_access_token() -> None:
    graph = FakeGraph()

    client_for(graph).send(PIXEL, [meta_event("e1")])

    assert ("tok-abc", None) == (graph.requests[0].url.params.get("access_token"),
                                 graph.requests[0].url.params.get("appsecret_proof"))


def test_send_passes_appsecret_proof_when_there_is_an_app_secret() -> None:
    graph = FakeGraph()
    pixel = msgspec.structs.replace(PIXEL, app_secret="app-secret")

    client_for(graph).send(pixel, [meta_event("e1")])

    expected = hmac.new(b"app-secret", b"tok-abc", hashlib.sha256).hexdigest()
    assert expected == graph.requests[0].url.params.get("appsecret_proof")


def test_appsecret_proof_is_hmac_sha256_of_the_token_keyed_by_the_secret() -> None:
    expected = hmac.new(b"secret", b"token", hashlib.sha256).hexdigest()

    assert expected == appsecret_proof("token", "secret")


def test_send_body_is_json_with_data_and_partner_agent() -> None:
    graph = FakeGraph()
    events = [meta_event("e1"), meta_event("e2")]

    client_for(graph).send(PIXEL, events)

    request = graph.requests[0]
    assert ("application/json", {
        "data": msgspec.to_builtins(events),
        "partner_agent": "pixelrelay-test",
    }) == (request.headers["content-type"], json.loads(request.content))


def test_a_batchs_own_test_event_code_wins_over_the_pixels() -> None:
    graph = FakeGraph()
    pixel = msgspec.structs.replace(PIXEL, test_event_code="PIXEL1")

    client_for(graph).send(pixel, [meta_event()], "TEST9")

    assert "TEST9" == json.loads(graph.requests[0].content)["test_event_code"]


def test_send_body_carries_the_test_event_code() -> None:
    graph = FakeGraph()
    pixel = msgspec.structs.replace(PIXEL, test_event_code="TEST123")

    client_for(graph).send(pixel, [meta_event("e1")])

    assert "TEST123" == json.loads(graph.requests[0].content)["test_event_code"]


def test_send_returns_meta_counts_and_trace() -> None:
    result = client_for(FakeGraph()).send(PIXEL, [meta_event("e1"), meta_event("e2")])

    assert (2, "ok-trace", True) == (result.events_received, result.fbtrace_id,
                                     result.latency_ms >= 0)


def test_success_with_a_count_other_than_sent_is_delivered_and_logged() -> None:
    # Meta has the batch: sending it again would make duplicates there.
    graph = FakeGraph(respond=lambda request, data: httpx.Response(
        200, json={"events_received": len(data) - 1, "fbtrace_id": "T"}))

    with capture_logs() as logs:
        result = client_for(graph).send(PIXEL, [meta_event("e1"), meta_event("e2")])

    assert ((1, "T"), [{"event": "meta_accepted_with_anomaly", "log_level": "warning",
                        "pixel_id": PIXEL.id, "sent": 2, "events_received": 1,
                        "fbtrace_id": "T", "status": 200}]) == (
        (result.events_received, result.fbtrace_id), logs)


UNREADABLE_SUCCESS = {
    "html": (httpx.Response(200, content=b"<html>", headers={"x-fb-trace-id": "H"}), "H"),
    "count-not-a-number": (httpx.Response(200, json={"events_received": "all",
                                                     "fbtrace_id": "T"}), "T"),
    "no-count": (httpx.Response(200, json={"fbtrace_id": "T"},
                                headers={"x-fb-trace-id": "H"}), "T"),
}


@pytest.mark.parametrize(("answer", "trace"), UNREADABLE_SUCCESS.values(),
                         ids=UNREADABLE_SUCCESS.keys())
def test_success_with_an_unreadable_body_is_delivered_and_logged(
        answer: httpx.Response, trace: str | None) -> None:
    graph = FakeGraph(respond=lambda request, data: answer)

    with capture_logs() as logs:
        result = client_for(graph).send(PIXEL, [meta_event("e1")])

    assert ((None, trace), [("meta_accepted_with_anomaly", "warning", 1, None, trace)]) == (
        (result.events_received, result.fbtrace_id),
        [(e["event"], e["log_level"], e["sent"], e["events_received"], e["fbtrace_id"])
         for e in logs])


@pytest.mark.parametrize("body", [b"", b"<html><title>Welcome to nginx!</title></html>",
                                  b'{"status": "ok"}'], ids=["empty", "html", "other-json"])
def test_a_2xx_that_is_not_a_graph_api_answer_is_a_permanent_error(body: bytes) -> None:
    error = send_error(lambda request, data: httpx.Response(200, content=body))

    assert (PermanentError, "check meta.graph_url") == (
        type(error), error.message[-len("check meta.graph_url"):])


def test_success_anomaly_log_never_carries_the_token() -> None:
    graph = FakeGraph(respond=lambda request, data: httpx.Response(
        200, content=b"<html>", headers={"x-fb-trace-id": "H"}))

    with capture_logs() as logs:
        client_for(graph).send(msgspec.structs.replace(PIXEL, app_secret="s"), [meta_event()])

    assert (1, False) == (len(logs), "tok-abc" in repr(logs))


def test_graph_error_answer_is_classified() -> None:
    error = send_error(lambda request, data: httpx.Response(
        400, json=graph_error(100, subcode=2804050, fbtrace_id="T7")))

    assert (InvalidBatchError, 2804050, "T7") == (type(error), error.subcode, error.fbtrace_id)


@pytest.mark.parametrize(
    "exception",
    [httpx.ReadTimeout, httpx.ConnectTimeout, httpx.WriteTimeout, httpx.PoolTimeout],
)
def test_timeouts_are_transient(exception: type[httpx.TimeoutException]) -> None:
    def respond(request: httpx.Request, data: list[dict[str, Any]]) -> httpx.Response:
        raise exception("too slow", request=request)

    error = send_error(respond)

    assert (TransientError, True) == (type(error), error.message.startswith("timeout"))


@pytest.mark.parametrize("exception", [httpx.ConnectError, httpx.RemoteProtocolError,
                                       httpx.ReadError])
def test_transport_errors_are_transient(exception: type[httpx.TransportError]) -> None:
    def respond(request: httpx.Request, data: list[dict[str, Any]]) -> httpx.Response:
        raise exception("connection refused", request=request)

    error = send_error(respond)

    assert (TransientError, True) == (type(error), error.message.startswith("transport error"))


def test_errors_never_carry_the_token() -> None:
    def respond(request: httpx.Request, data: list[dict[str, Any]]) -> httpx.Response:
        raise httpx.ConnectError(f"failed {request.url}", request=request)

    error = send_error(respond)

    assert "tok-abc" not in str(error) + repr(error.as_dict())


def test_timeout_setting_reaches_the_request() -> None:
    graph = FakeGraph()
    settings = msgspec.structs.replace(META, timeout_ms=1500)

    client_for(graph, settings).send(PIXEL, [meta_event("e1")])

    assert {"connect": 1.5, "read": 1.5, "write": 1.5, "pool": 1.5} == \
        graph.requests[0].extensions["timeout"]


# -- check_pixel ----------------------------------------------------------------------------------
def test_check_pixel_is_none_when_the_token_works() -> None:
    graph = FakeGraph(respond=lambda request, data: httpx.Response(200, json={"id": "1"}))

    assert None is client_for(graph).check_pixel(PIXEL)


def test_check_pixel_gets_the_pixel_node_with_the_token() -> None:
    graph = FakeGraph(respond=lambda request, data: httpx.Response(200, json={"id": "1"}))

    client_for(graph).check_pixel(PIXEL)

    request = graph.requests[0]
    assert ("GET", "/v26.0/1234567890", "tok-abc") == (
        request.method, request.url.path, request.url.params["access_token"])


def test_check_pixel_reports_an_expired_token() -> None:
    graph = FakeGraph(respond=lambda request, data: httpx.Response(
        400, json=graph_error(190, message="token expired")))

    error = client_for(graph).check_pixel(PIXEL)

    assert (PermanentError, 190) == (type(error), error.code if error else None)


def test_check_pixel_reports_an_unreachable_api() -> None:
    def respond(request: httpx.Request, data: list[dict[str, Any]]) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    error = client_for(FakeGraph(respond=respond)).check_pixel(PIXEL)

    assert TransientError is type(error)


def test_fields_passed_through_go_to_meta_at_the_top_level_of_the_event() -> None:
    graph = FakeGraph()
    event = msgspec.structs.replace(
        meta_event("e1"), messaging_channel="whatsapp",
        original_event_data={"event_name": "Purchase", "event_time": 1_700_000_000},
        passthrough={"a_field_meta_adds_next_year": {"x": [1, 2]}})

    client_for(graph).send(PIXEL, [event, meta_event("e2")])

    first, second = msgspec.json.decode(graph.requests[0].content)["data"]
    assert ({"x": [1, 2]}, "whatsapp", "Purchase") == (
        first["a_field_meta_adds_next_year"], first["messaging_channel"],
        first["original_event_data"]["event_name"])
    assert "passthrough" not in first and "passthrough" not in second
