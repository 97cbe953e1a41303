# Verifies tessera access tokens with PyJWT: pip install "PyJWT[crypto]"
import os

import jwt

TESSERA_URL = os.environ.get("TESSERA_URL", "http://127.0.0.1:8080")  # its public base URL
ISSUER = os.environ.get("TESSERA_ISSUER", "tessera")  # tessera's `issuer` setting
AUDIENCE = os.environ.get("TESSERA_AUDIENCE", "tessera")  # tessera's `audience` setting
CLAIMS = ["iss", "aud", "sub", "sid", "name", "roles", "perms", "iat", "nbf", "exp", "jti"]

# Fetched at the first token, again after 60 s, and when a token names a kid it lacks.
jwks = jwt.PyJWKClient(f"{TESSERA_URL}/.well-known/jwks.json", lifespan=60)


def verify_access_token(token: str) -> dict:
    """The token's claims; raises jwt.PyJWTError when the token is to be refused."""
    key = jwks.get_signing_key_from_jwt(token)  # the key its kid names, pinned to its alg
    verified = jwt.decode_complete(
        token,
        key,
        algorithms=["EdDSA", "ES256"],  # what tessera signs with, never HS256 or "none"
        issuer=ISSUER,
        audience=AUDIENCE,
        leeway=30,
        options={"require": CLAIMS},
    )
    if verified["header"].get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("not an access token: typ is not at+jwt")
    return verified["payload"]
