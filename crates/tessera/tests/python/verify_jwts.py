"""Verifies tessera's JWTs with joserfc, a JOSE implementation tessera did not write.

Usage: python3 verify_jwts.py JWKS_URL ISSUER AUDIENCE NOW < tokens.json

Reads a JSON list of tokens on stdin, fetches the JWKS from JWKS_URL, and prints a JSON
object: the joserfc version and, for each token, whether it verified (signature through the
JWKS, typ at+jwt, iss, aud, exp and nbf at NOW with 30 s leeway) and why not.
Exits non-zero if joserfc cannot be imported, so the calling test fails rather than skips.
"""

import json
import sys
import urllib.request

import joserfc
from joserfc import jwt
from joserfc.jwk import KeySet


def main() -> None:
    jwks_url, issuer, audience, now = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with urllib.request.urlopen(jwks_url, timeout=10) as response:
        jwks = json.load(response)
    keys = KeySet.import_key_set(jwks)
    claims_rules = jwt.JWTClaimsRegistry(
        now=now,
        leeway=30,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        sub={"essential": True},
    )
    results = []
    for token in json.load(sys.stdin):
        try:
            decoded = jwt.decode(token, keys, algorithms=["EdDSA", "ES256"])
            if decoded.header.get("typ") != "at+jwt":
                raise ValueError(f"typ is {decoded.header.get('typ')!r}")
            claims_rules.validate(decoded.claims)
            results.append({"valid": True, "alg": decoded.header["alg"], "sub": decoded.claims["sub"]})
        except Exception as error:  # noqa: BLE001 - every failure is a refusal to report
            results.append({"valid": False, "error": f"{type(error).__name__}: {error}"})
    json.dump({"joserfc": joserfc.__version__, "results": results}, sys.stdout)


if __name__ == "__main__":
    main()
