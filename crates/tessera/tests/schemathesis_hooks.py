"""schemathesis hooks for tessera's API document (loaded through SCHEMATHESIS_HOOKS): the
admin's authentication, and the strategy for usernames.

JSON Schema cannot say which usernames tessera accepts: the rule is by Unicode general
category (no controls, format, private-use or unassigned characters, no spaces but U+0020)
and the length is counted in bytes of the NFC form. The document marks such strings
`"format": "username"` and describes the rule; this strategy generates exactly the names the
rule accepts (tessera-core's `names::new_username`), so schemathesis's positive data is
positive.
"""

import json
import os
import unicodedata
import urllib.request

import schemathesis
from hypothesis import strategies as st

MAX_USERNAME_BYTES = 256
RESERVED_USERNAMES = {"cli", "system"}
# Default-ignorable code points that are not `Cf` (names.rs `default_ignorable`).
DEFAULT_IGNORABLE = "".join(
    chr(c)
    for c in [
        0x034F,
        *range(0x115F, 0x1161),
        *range(0x17B4, 0x17B6),
        *range(0x180B, 0x1810),
        0x3164,
        *range(0xFE00, 0xFE10),
        0xFFA0,
        *range(0xE0100, 0xE01F0),
    ]
)


def _accepted(name: str) -> bool:
    nfc = unicodedata.normalize("NFC", name)
    return (
        0 < len(nfc.encode()) <= MAX_USERNAME_BYTES
        and nfc.strip(" ") == nfc
        and nfc.lower() not in RESERVED_USERNAMES
    )


# Letters, marks, numbers, punctuation, symbols and U+0020: every assigned, visible category.
USERNAME = st.text(
    alphabet=st.characters(
        categories=["L", "M", "N", "P", "S"],
        include_characters=" ",
        exclude_characters=DEFAULT_IGNORABLE,
    ),
    min_size=1,
    max_size=64,
).filter(_accepted)

schemathesis.openapi.format("username", USERNAME)


@schemathesis.auth()
class AdminBearer:
    """The admin's bearer token, from a login at the server the script started.

    Some operations end the session they are sent with (`POST /v1/logout`,
    `DELETE /v1/sessions`): schemathesis fetches a new token whenever an answer is 401, so
    the admin routes are exercised throughout the run rather than refused after the first
    logout.
    """

    def get(self, case, context):
        body = json.dumps(
            {
                "username": "admin",
                "password": os.environ["TESSERA_SCHEMATHESIS_PASSWORD"],
                "delivery": "bearer",
            }
        ).encode()
        request = urllib.request.Request(
            os.environ["TESSERA_SCHEMATHESIS_BASE"] + "/v1/login",
            data=body,
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    """Keeps the admin the run acts as: schemathesis learns the name `admin` from the user
    list and would delete that user or take its role away, after which nothing can log in to
    exercise the admin routes. Such a request goes to a user that does not exist instead."""
    if (
        case.operation.path == "/v1/admin/users/{username}"
        and case.method.upper() in ("PATCH", "DELETE")
        and (case.path_parameters or {}).get("username") == "admin"
    ):
        case.path_parameters["username"] = "not-the-admin"


@schemathesis.hook
def before_call(context, case, kwargs):
    """Shortens the revocation feed's hold: `GET /v1/revocations?wait=N` holds a request up to
    N seconds (0 to 25) when nothing is revoked, which is what it is for, and would spend the
    run's time budget waiting. A valid `wait` above 1 is sent as 1: the same path through
    the server, held for a second. Invalid values are sent as generated."""
    if case.operation.path != "/v1/revocations" or not isinstance(case.query, dict):
        return
    wait = case.query.get("wait")
    if isinstance(wait, bool):
        return
    if isinstance(wait, int) and wait > 1:
        case.query["wait"] = 1
    elif isinstance(wait, str) and wait.isdigit() and int(wait) > 1:
        case.query["wait"] = "1"
