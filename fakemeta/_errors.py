"""Meta-shaped Graph API errors: one exception type, rendered the way graph.facebook.com does.

Everything the fake refuses is a ``MetaError``; the app renders it once, at the edge, as
``{"error": {...}}`` with the matching HTTP status. The tree is flat on purpose:

    MetaError            any refusal; ``code``/``error_subcode`` say which (see CODE_MESSAGES)
      is_transient=True  1, 2, 4, 17, 32, 341, 613, 80004 (downtime and throttling: retry later)
      is_transient=False everything else (100 invalid parameter, 190 token, 10/200-299 permission)

Optional keys (``error_subcode``, ``error_user_title``, ``error_user_msg``) are left out when
unset, as Meta does, so clients learn to treat them as optional.
"""

from __future__ import annotations

from typing import Any

# Meta's own wording where it is well known; the rest is close enough for a fake.
CODE_MESSAGES: dict[int, str] = {
    1: "An unknown error occurred",
    2: "An unexpected error has occurred. Please retry your request later.",
    4: "(#4) Application request limit reached",
    10: "(#10) Application does not have permission for this action",
    17: "(#17) User request limit reached",
    32: "(#32) Page request limit reached",
    100: "Invalid parameter",
    104: "An access token is required to request this resource.",
    190: "Invalid OAuth access token - Cannot parse access token",
    200: "(#200) Permissions error",
    341: "(#341) Application limit reached",
    368: "The action attempted has been deemed abusive or is otherwise disallowed",
    613: "(#613) Calls to this api have exceeded the rate limit.",
    2500: "Unknown path components",
    80004: "(#80004) There have been too many calls to this ad-account. Wait a bit and try again.",
}

THROTTLING_CODES = frozenset({4, 17, 32, 613, 80004})
# Meta marks downtime and rate limits transient (e.g. code 4 arrives with is_transient: true).
TRANSIENT_CODES = frozenset({1, 2, 341}) | THROTTLING_CODES

SUBCODE_BAD_FBC = 2804001
SUBCODE_TOO_OLD = 2804003
SUBCODE_MALFORMED = 2804019
SUBCODE_TOO_LITTLE_USER_DATA = 2804050
SUBCODE_UNKNOWN_OBJECT = 33
SUBCODE_ADACCOUNT_THROTTLED = 2446079


def http_status_for(code: int) -> int:
    """The HTTP status the fake answers with for a Meta error code."""
    if code == 190:
        return 401
    if code == 10 or 200 <= code <= 299:
        return 403
    return 400


class MetaError(Exception):
    """A refusal the fake renders as a Graph API error body."""

    def __init__(
        self,
        code: int,
        *,
        message: str | None = None,
        subcode: int | None = None,
        user_title: str | None = None,
        user_msg: str | None = None,
        http_status: int | None = None,
        is_transient: bool | None = None,
        error_type: str = "OAuthException",
    ) -> None:
        self.code = code
        self.error_type = error_type
        self.message = message or CODE_MESSAGES.get(code, "An unknown error occurred")
        self.subcode = subcode
        self.user_title = user_title
        self.user_msg = user_msg
        self.http_status = http_status or http_status_for(code)
        self.is_transient = code in TRANSIENT_CODES if is_transient is None else is_transient
        super().__init__(f"({code}) {self.message}")

    def body(self, fbtrace_id: str) -> dict[str, Any]:
        """The JSON body Meta sends for this error."""
        error: dict[str, Any] = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.user_title is not None:
            error["error_user_title"] = self.user_title
        if self.user_msg is not None:
            error["error_user_msg"] = self.user_msg
        error["fbtrace_id"] = fbtrace_id
        error["is_transient"] = self.is_transient
        return {"error": error}


def invalid_parameter(
    user_msg: str, *, title: str = "Invalid Parameter", subcode: int | None = None
) -> MetaError:
    """Code 100: the request or one of its events breaks a rule; never worth retrying as is."""
    return MetaError(100, subcode=subcode, user_title=title, user_msg=user_msg)


def injected_error(code: int) -> MetaError:
    """The error a fault-injection draw produces for ``code``."""
    subcode = SUBCODE_ADACCOUNT_THROTTLED if code == 80004 else None
    return MetaError(code, subcode=subcode)


def server_error() -> MetaError:
    """An injected HTTP 500, as Meta sends when something breaks on its side."""
    return MetaError(1, http_status=500, is_transient=True)


def service_unavailable() -> MetaError:
    """An outage window: HTTP 503 with the transient downtime code 2."""
    return MetaError(
        2, message="Service temporarily unavailable", http_status=503, is_transient=True
    )


def throttled() -> MetaError:
    """Over the per-pixel events budget."""
    return MetaError(80004, subcode=SUBCODE_ADACCOUNT_THROTTLED)


def token_missing() -> MetaError:
    """No access token anywhere in the request (Meta's code 104)."""
    return MetaError(104)


def token_invalid() -> MetaError:
    """The access token is not one the fake accepts."""
    return MetaError(190)


def bad_appsecret_proof() -> MetaError:
    """A wrong ``appsecret_proof`` for a token whose app secret the fake knows (Meta's words
    and type; HTTP 400, code 100, no subcode)."""
    return MetaError(100, message="Invalid appsecret_proof provided in the API argument",
                     error_type="GraphMethodException")


def missing_appsecret_proof() -> MetaError:
    """No ``appsecret_proof`` from an app that requires one (Meta's "Require App Secret")."""
    return MetaError(100, message="API calls from the server require an appsecret_proof argument",
                     error_type="GraphMethodException")


def unknown_path(path: str) -> MetaError:
    """A path the Graph API would not route (bad version segment, unknown edge)."""
    return MetaError(2500, message=f"Unknown path components: {path}")


def unknown_object(object_id: str, method: str) -> MetaError:
    """A pixel id that cannot exist (Graph object ids are digits)."""
    return MetaError(
        100,
        subcode=SUBCODE_UNKNOWN_OBJECT,
        message=(
            f"Unsupported {method.lower()} request. Object with ID '{object_id}' does not exist, "
            "cannot be loaded due to missing permissions, or does not support this operation."
        ),
    )
