"""A fake Meta Graph API (Conversions API) for tests, load tests and the dev stack.

It validates events the way Meta does, records what it accepted, and injects latency, errors,
outages and throttling on demand, so the relay can be proven without graph.facebook.com.
"""

from fakemeta._options import FakeMetaOptions
from fakemeta.app import create_app
from fakemeta.server import run

__all__ = ["FakeMetaOptions", "create_app", "run"]
