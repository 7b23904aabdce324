"""What a PanDA server does with a bearer token, for the fake one: verify it against its issuer.

The real server accepts an id token only when its signature verifies with one of the
issuer's published keys (JWKS), it was issued by that issuer for the expected audience,
and it has not expired.  :class:`TokenVerifier` does the same with PyJWT, so a test's
expired or forged token really fails, and a token the host renewed really passes.
"""

from __future__ import annotations

from typing import Any


class TokenRejected(ValueError):
    """The token would be refused by the server; the message says why."""


class TokenVerifier:
    """Verifies RS256 tokens of one issuer (its keys fetched from its discovery document)."""

    def __init__(self, issuer: str, *, audience: str | None = None, leeway: float = 0.0) -> None:
        import jwt
        import requests

        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.leeway = leeway
        config = requests.get(
            f"{self.issuer}/.well-known/openid-configuration", timeout=10
        ).json()
        self._keys = jwt.PyJWKClient(config["jwks_uri"], cache_keys=True)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or :class:`TokenRejected`."""
        import jwt

        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=["RS256"],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"verify_aud": self.audience is not None, "verify_iat": False,
                         "require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("token expired") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"invalid token: {exc}") from None
        return claims
