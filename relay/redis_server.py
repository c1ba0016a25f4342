"""How pixelrelay runs a Redis-compatible server of its own (``pixelrelay up``'s embedded one,
the tests' and the benchmarks'): one list of settings, so all of them behave alike.

- ``appendonly yes`` with ``appendfsync everysec``: an acknowledged event survives a crash of
  the server, but for at most the last second (docs/reliability.md measures it);
- ``save ""``: no snapshots on top of the AOF;
- ``maxmemory-policy noeviction``: a full server refuses writes instead of dropping events
  (the collector spools or answers 503);
- ``hash-max-listpack-value 512``: click contexts (about 280 bytes, ``relay.clicks``) stay in
  the hashes' compact encoding; Redis's default of 64 bytes would keep each in a hashtable
  entry, about 60 bytes more a click. docs/deploy.md asks the same of an operator's own Redis.
"""

from __future__ import annotations

SERVER_SETTINGS: tuple[str, ...] = (
    "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
    "--maxmemory-policy", "noeviction", "--hash-max-listpack-value", "512",
)
