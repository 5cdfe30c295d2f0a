"""The JWT material of the JWT scenarios: one RS256 key, its JWKS file and one valid token.

Made once per run (``material()``) under ``bench/out/jwt/``. Envoy's native ``jwt_authn`` and
envoykit's ``jwt`` filter get the *same* provider block (``provider()``, jwt_authn field names,
the JWKS by file name), and wrk sends the same ``Authorization: Bearer`` token on every request
(valid for an hour, so a long run never measures 401s).
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._sidecars import BENCH_DIR

__all__ = ["ISSUER", "AUDIENCE", "JwtMaterial", "material", "provider", "rules"]

ISSUER = "https://issuer.bench.example"
AUDIENCE = "api.bench.example"
#: The provider's name in both configs.
PROVIDER = "bench"


@dataclass(frozen=True)
class JwtMaterial:
    jwks_path: Path
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


@functools.cache
def material(directory: Path = BENCH_DIR / "out" / "jwt") -> JwtMaterial:
    """A fresh 2048-bit RSA key (kid ``bench-rsa``), its public JWKS on disk, one RS256 token."""
    from jwcrypto import jwk, jws

    key = jwk.JWK.generate(kty="RSA", size=2048, kid="bench-rsa")
    directory.mkdir(parents=True, exist_ok=True)
    jwks_path = directory / "jwks.json"
    jwks_path.write_text(json.dumps({"keys": [json.loads(key.export_public())]}))
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench-user", "aud": AUDIENCE, "iat": now, "exp": now + 3600}
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(
        key, alg="RS256", protected=json.dumps({"alg": "RS256", "typ": "JWT", "kid": "bench-rsa"})
    )
    return JwtMaterial(jwks_path, str(token.serialize(compact=True)))


def provider(jwks_path: Path) -> dict[str, Any]:
    """A jwt_authn ``JwtProvider``: pasted as is into envoykit's ``jwt`` config."""
    return {
        "issuer": ISSUER,
        "audiences": [AUDIENCE],
        "local_jwks": {"filename": str(jwks_path)},
        "forward": True,
        "payload_in_metadata": "payload",
    }


def rules() -> list[dict[str, Any]]:
    """Every path requires a valid token from the one provider."""
    return [{"match": {"prefix": "/"}, "requires": {"provider_name": PROVIDER}}]
