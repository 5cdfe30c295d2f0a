"""Test keys and tokens for the jwt filter tests: real signatures with jwcrypto, attacks by hand."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any

from jwcrypto import jwk, jws

ISSUER = "https://issuer.example.com"
AUDIENCE = "api.example.com"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(obj: Any) -> str:
    return b64(json.dumps(obj, separators=(",", ":")).encode())


@dataclass
class Keys:
    """An RSA and an EC signing key (kids ``rsa-1``/``ec-1``) plus a second RSA key not in the JWKS."""

    rsa: jwk.JWK = field(default_factory=lambda: jwk.JWK.generate(kty="RSA", size=2048, kid="rsa-1"))
    ec: jwk.JWK = field(default_factory=lambda: jwk.JWK.generate(kty="EC", crv="P-256", kid="ec-1"))
    other: jwk.JWK = field(default_factory=lambda: jwk.JWK.generate(kty="RSA", size=2048, kid="rsa-2"))

    def jwks(self, *which: str) -> str:
        """The public JWKS (JSON) with the named keys (default ``rsa`` and ``ec``)."""
        names = which or ("rsa", "ec")
        return json.dumps({"keys": [json.loads(getattr(self, n).export_public()) for n in names]})

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "sub": "alice",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 600,
            "scope": "read write",
        }
        for name, value in overrides.items():
            if value is None:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        key: str = "rsa",
        alg: str | None = None,
        kid: Any = ...,
    ) -> str:
        k: jwk.JWK = getattr(self, key)
        alg = alg or ("ES256" if k.get("kty") == "EC" else "RS256")
        header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
        header["kid"] = k.get("kid") if kid is ... else kid
        if header["kid"] is None:
            del header["kid"]
        token = jws.JWS(json.dumps(claims if claims is not None else self.claims()).encode())
        token.add_signature(k, alg=alg, protected=json.dumps(header))
        return str(token.serialize(compact=True))

    def token(self, **claim_overrides: Any) -> str:
        return self.sign(self.claims(**claim_overrides))

    # -- attacks --------------------------------------------------------------------------
    def alg_none(self) -> str:
        return f"{b64json({'alg': 'none', 'typ': 'JWT'})}.{b64json(self.claims())}."

    def hs256_with_public_key(self) -> str:
        """HS256 'signed' with the RSA public key (PEM) as the HMAC secret: key confusion."""
        secret = self.rsa.export_to_pem().strip()
        head = f"{b64json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}.{b64json(self.claims())}"
        sig = hmac.new(secret, head.encode(), hashlib.sha256).digest()
        return f"{head}.{b64(sig)}"

    def tampered(self) -> str:
        head, _, sig = self.token().split(".")
        return f"{head}.{b64json(self.claims(sub='mallory'))}.{sig}"
