"""Codes of an otpauth URI, computed by pyotp: the independent TOTP implementation of the tests.

Usage: python3 totp_codes.py < {"uri": "otpauth://totp/...", "times": [unix seconds, ...]}

Prints a JSON object: pyotp's version, the issuer and account name it read from the URI, and the
code at each time. Exits non-zero if pyotp cannot be imported, so the calling test fails rather
than skips.
"""

import importlib.metadata
import json
import sys

import pyotp


def main() -> None:
    request = json.load(sys.stdin)
    totp = pyotp.parse_uri(request["uri"])
    json.dump(
        {
            "version": importlib.metadata.version("pyotp"),
            "issuer": totp.issuer,
            "name": totp.name,
            "digits": totp.digits,
            "interval": totp.interval,
            "codes": [totp.at(t) for t in request["times"]],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
