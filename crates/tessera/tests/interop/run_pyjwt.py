"""Runs the documented PyJWT snippet (verify_pyjwt.py, shown in docs/api-backends.md) on tokens.

Usage: TESSERA_URL=... python3 run_pyjwt.py < tokens.json

Reads a JSON list of tokens on stdin and prints a JSON object: the PyJWT version and, for each
token, whether verify_access_token accepted it (with its sub) or why it refused it. Exits
non-zero if PyJWT cannot be imported, so the calling test fails rather than skips.
"""

import json
import sys

import jwt
from verify_pyjwt import verify_access_token


def main() -> None:
    results = []
    for token in json.load(sys.stdin):
        try:
            claims = verify_access_token(token)
            results.append(
                {
                    "valid": True,
                    "sub": claims["sub"],
                    # How the user signed in, as a back end reads it from the verified token.
                    "amr": claims.get("amr"),
                    "acr": claims.get("acr"),
                    "auth_time": claims.get("auth_time"),
                }
            )
        except jwt.PyJWTError as error:
            results.append({"valid": False, "error": f"{type(error).__name__}: {error}"})
    json.dump({"version": jwt.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
