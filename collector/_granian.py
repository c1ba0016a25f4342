"""granian started from Python, with SIGHUP passed on to its workers instead of replacing them.

Everything pixelrelay knows about granian's internals is here, verified with granian
``VERIFIED_VERSION`` (``pyproject.toml`` pins that minor version) and checked against the
installed one by ``tests/collector/test_granian_contract.py``: granian's main process installs
``signal_handler_reload`` as its SIGHUP handler (``startup``), keeps its worker processes in
``wrks`` (each a ``WorkerProcess`` whose ``inner`` is a ``multiprocessing.Process``) and forks
them on Linux, so a worker inherits the handler until its app installs its own. Its own reload
(``_reload``) is never reached: it starts new workers, stops the old ones ``respawn_interval``
(3.5 s) later whether the new ones listen or not, and closes the old ones' sockets with the
connections queued on them (collector/reload.py says what the collector does instead).
"""

from __future__ import annotations

import contextlib
import os
import signal
from typing import Any

from granian.constants import Interfaces, Loops
from granian.http import HTTP1Settings, HTTP2Settings
from granian.log import LogLevels
from granian.server.mp import MPServer  # granian.Granian on a GIL build (contract test)

from relay.config import CollectorSettings

VERIFIED_VERSION = "2.8"  # major.minor read and tested; pyproject.toml pins it


class InPlaceReloadServer(MPServer):
    """granian's server; SIGHUP reaches each worker, which reloads its configuration itself."""

    def signal_handler_reload(self, *args: Any, **kwargs: Any) -> None:
        if os.getpid() != getattr(self, "pid", None):
            return  # a worker forked with this handler, before its app installed its own
        for worker in list(self.wrks):
            pid = worker.inner.pid
            if pid is not None:
                # One that has just exited is respawned by granian, on the file as it is now.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)


def collector_server(c: CollectorSettings, log_config: dict[str, Any]) -> InPlaceReloadServer:
    """The collector's granian: ``collector.app:create_app`` on ``c.host:c.port``."""
    return InPlaceReloadServer(
        "collector.app:create_app", address=c.host, port=c.port, interface=Interfaces.ASGI,
        factory=True, workers=c.workers, loop=Loops.uvloop,
        workers_kill_timeout=c.shutdown_grace_s,
        respawn_failed_workers=True,  # one worker's crash is not the whole collector's
        websockets=False, log_level=LogLevels.info, log_dictconfig=log_config,
        # What granian's CLI passes when given no HTTP options (left out, the server would
        # fall back to the Rust side's own defaults instead).
        http1_settings=HTTP1Settings(), http2_settings=HTTP2Settings(),
    )
