"""The operators' dashboard (server-rendered Jinja2). For now a placeholder: queue depths, pixel
health and the dead-letter count; the live views (HTMX) come with the dashboard's own issue.

granian serves ``dashboard.app:create_app`` as a factory; settings from ``$PIXELRELAY_CONFIG``.
"""

from __future__ import annotations

import os
from pathlib import Path

from litestar import Litestar, get
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig
from redis.asyncio import Redis

from dashboard.queries import dead_letter_count, pixel_statuses, queue_depths
from relay.config import Settings, load_settings
from relay.logs import configure_logging

TEMPLATES = Path(__file__).parent / "templates"


def build_app(settings: Settings, redis: Redis | None = None) -> Litestar:
    client = redis or Redis.from_url(settings.redis_url, socket_timeout=2)

    @get("/")
    async def index() -> Template:
        context = {
            "depths": await queue_depths(client),
            "pixels": await pixel_statuses(client, [p.id for p in settings.pixels]),
            "dead_letters": await dead_letter_count(client),
        }
        return Template("index.html", context=context)

    @get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive"}

    return Litestar(
        route_handlers=[index, healthz],
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
        openapi_config=None,
    )


def create_app() -> Litestar:
    configure_logging("dashboard", os.environ.get("PIXELRELAY_LOG_LEVEL", "INFO"))
    return build_app(load_settings())
