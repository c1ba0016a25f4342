"""Operators: who may log in to the dashboard, checked against argon2id hashes from the config.

``argon2-cffi`` does the hashing (Argon2id with its RFC 9106 "low memory" defaults, salted,
constant-time compare): a well-kept binding of the reference implementation rather than code of
our own. ``pixelrelay user add`` prints the ``[[operators]]`` entry to paste into the config.
"""

from __future__ import annotations

import getpass
import re
import sys
from collections.abc import Callable
from typing import TextIO

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from relay.config import OperatorSettings, Settings

# The sample config's operator, so a newcomer can log in at once (`make up` prints it);
# `pixelrelay config check` warns when it is configured on a non-loopback address.
DEMO_OPERATOR_NAME = "demo"
DEMO_OPERATOR_PASSWORD = "pixelrelay-demo"
MIN_PASSWORD_LENGTH = 10
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"  # as OperatorSettings.name

_hasher = PasswordHasher()
# Verified when the name is unknown, so an unknown name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("no operator has this password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def authenticate(settings: Settings, name: str, password: str) -> OperatorSettings | None:
    """The operator if ``password`` is theirs, else None (same cost either way)."""
    operator = settings.operator(name)
    try:
        _hasher.verify(operator.argon2 if operator else _DUMMY_HASH, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    return operator


def is_demo_operator(operator: OperatorSettings) -> bool:
    """Does this operator still log in with the sample config's published password?"""
    try:
        return _hasher.verify(operator.argon2, DEMO_OPERATOR_PASSWORD)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def demo_operator(settings: Settings) -> OperatorSettings | None:
    return next((o for o in settings.operators if is_demo_operator(o)), None)


def demo_login_line(settings: Settings) -> str | None:
    """The line ``make up`` prints under the dashboard's URL while the demo operator exists."""
    demo = demo_operator(settings)
    if demo is None:
        return None
    return (f"              log in as {demo.name!r} with the password "
            f"{DEMO_OPERATOR_PASSWORD!r} (the sample config's demo operator)")


def user_add(name: str, role: str, out: TextIO = sys.stdout,
             ask: Callable[[str], str] = getpass.getpass) -> int:
    """Ask for a password twice (never an argument: it would sit in the shell history) and
    print the config entry."""
    if not re.fullmatch(NAME_PATTERN, name):
        print("pixelrelay user add: a name is letters, digits and _ . @ - (up to 64)",
              file=sys.stderr)
        return 2
    password = ask(f"Password for {name}: ")
    if len(password) < MIN_PASSWORD_LENGTH:
        print(f"pixelrelay user add: the password needs at least {MIN_PASSWORD_LENGTH} "
              "characters", file=sys.stderr)
        return 2
    if ask("Again: ") != password:
        print("pixelrelay user add: the two passwords differ", file=sys.stderr)
        return 2
    print("[[operators]]", file=out)
    print(f'name = "{name}"', file=out)
    print(f'argon2 = "{hash_password(password)}"', file=out)
    print(f'role = "{role}"', file=out)
    return 0
