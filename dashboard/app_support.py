"""Small helpers the route modules share: the context, the operator, safe redirects."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar import Request
from litestar.exceptions import HTTPException

from dashboard.context import Context
from relay.config import OperatorSettings


def ctx_of(request: Request[Any, Any, Any]) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def operator_of(request: Request[Any, Any, Any]) -> OperatorSettings:
    operator: OperatorSettings = request.scope["operator"]  # type: ignore[typeddict-item]
    return operator


def require_operator_role(request: Request[Any, Any, Any]) -> OperatorSettings:
    """Viewers see everything; only operators change anything."""
    operator = operator_of(request)
    if operator.role != "operator":
        raise HTTPException(status_code=403, detail=f"{operator.name} is a viewer: only an "
                            "operator may requeue or discard dead letters.")
    return operator


def peer_address(request: Request[Any, Any, Any]) -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


def local_path(url: str) -> str:
    """The path and query of a URL of ours (never another site's: no open redirect)."""
    parts = urlsplit(url or "/")
    if parts.scheme or parts.netloc or not parts.path.startswith("/") \
            or parts.path.startswith("//") or "\\" in parts.path:
        return "/"
    return parts.path + (f"?{parts.query}" if parts.query else "")
