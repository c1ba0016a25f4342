"""Meta's official Python SDK (``facebook-business``) as the reference for ``relay.hashing``.

One place knows how the SDK is asked to normalize and hash a ``user_data`` value, so the
differential tests compare outcomes, not SDK calls: a hash, nothing (dropped), or a refusal.
"""

from __future__ import annotations

from facebook_business.adobjects.serverside.gender import Gender
from facebook_business.adobjects.serverside.user_data import UserData

from relay.hashing import NO_CONTEXT, Context, UnnormalizableValue, hash_value

REFUSED = "refused"
DROPPED = "dropped"

# user_data key -> the SDK's UserData list argument
_SDK_ARGUMENT = {
    "em": "emails", "ph": "phones", "fn": "first_names", "ln": "last_names",
    "db": "dates_of_birth", "ge": "genders", "ct": "cities", "st": "states",
    "zp": "zip_codes", "country": "country_codes", "external_id": "external_ids",
}
# the older keys the SDK takes as one string each, under their own names
_SDK_SINGLE = frozenset({"f5first", "f5last", "fi", "dobd", "dobm", "doby"})


def sdk_outcome(key: str, raw: str) -> str:
    """What the SDK sends for ``raw``: its hash (or clear value), ``DROPPED`` or ``REFUSED``."""
    value: object = raw
    if key == "ge":  # the SDK takes only its Gender enum: f or m
        try:
            value = Gender(raw.strip().lower())
        except ValueError:
            return REFUSED
    try:
        if key in _SDK_SINGLE:
            sent = UserData(**{key: value}).normalize().get(key)
            return sent or DROPPED
        sent = UserData(**{_SDK_ARGUMENT[key]: [value]}).normalize().get(key)
    except (TypeError, ValueError):
        return REFUSED
    return sent[0] if sent and sent[0] else DROPPED


def project_outcome(key: str, raw: str, context: Context = NO_CONTEXT) -> str:
    try:
        hashed = hash_value(key, raw, context)
    except UnnormalizableValue:
        return REFUSED
    return DROPPED if hashed is None else hashed
