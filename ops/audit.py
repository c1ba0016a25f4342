"""``make audit``: ``pip-audit --strict`` over the installed packages, against PyPI's advisories.

``--strict`` fails the audit when a package could not be checked, so an advisory service that
cannot be reached never passes as "no known vulnerabilities". pip-audit then reports it as
"Dependency not found on PyPI", which reads like a packaging problem; when the audit fails this
script asks PyPI's per-version JSON API (where the advisories are) about a release that surely
exists, pip-audit's own, and if that does not answer either, says in one sentence that the
advisory service was unreachable and nothing was audited. The exit status stays pip-audit's.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path

PIP_AUDIT_ARGS = ("--strict", "--skip-editable", "--progress-spinner", "off")
ADVISORY_API = "https://pypi.org/pypi/{name}/{version}/json"

Fetch = Callable[[str], int]  # GET url -> HTTP status; raises OSError when unreachable


def fetch_status(url: str, timeout_s: float = 15.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def advisory_service_unreachable(fetch: Fetch = fetch_status) -> str | None:
    """Why PyPI's advisory API cannot be used from here, or None if it answers."""
    url = ADVISORY_API.format(name="pip-audit", version=metadata.version("pip-audit"))
    try:
        status = fetch(url)
    except OSError as exc:
        return f"{url} could not be reached ({exc})"
    return None if status == 200 else f"{url}, a release that exists, answered HTTP {status}"


def explain_failure(fetch: Fetch = fetch_status) -> str | None:
    reason = advisory_service_unreachable(fetch)
    if reason is None:
        return None  # the service answers: pip-audit's own report stands
    return ("make audit FAILED without auditing: PyPI's advisory service is unreachable from "
            f"this machine: {reason}. The \"not found on PyPI\" lines above mean the advisories "
            "could not be fetched, not that a package is unknown or safe; run make audit where "
            "pypi.org is reached directly.")


def main(argv: Sequence[str] = ()) -> int:
    pip_audit = Path(sys.executable).with_name("pip-audit")
    status = subprocess.run([str(pip_audit), *PIP_AUDIT_ARGS, *argv], check=False).returncode
    if status != 0 and (message := explain_failure()) is not None:
        print(message, file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
