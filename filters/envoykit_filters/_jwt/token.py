"""Parse and verify one JWT the way Envoy's ``jwt_authn`` (jwt_verify_lib) does, with its statuses.

The checks run in Envoy's order (parse, issuer, time, audience, key), and each failure is the
``Status`` Envoy would report, so replies match its bodies word for word. Crypto is jwcrypto's;
this module decides which key and algorithm may be tried at all: only algorithms the provider
lists, a key only with an algorithm of its own family (no RSA key as an HMAC secret), never
``none``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from jwcrypto import jwa, jwk

__all__ = [
    "DEFAULT_ALGORITHMS",
    "IMPLEMENTED_ALGORITHMS",
    "ParsedJwt",
    "Status",
    "audiences_allowed",
    "check_time",
    "parse",
    "verify_signature",
]


class Status(StrEnum):
    """jwt_verify_lib's statuses; the value is the text Envoy answers with."""

    OK = "OK"
    MISSING = "Jwt is missing"
    NOT_YET_VALID = "Jwt not yet valid"
    EXPIRED = "Jwt is expired"
    BAD_FORMAT = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
    HEADER_BAD_BASE64 = "Jwt header is an invalid Base64url encoded"
    HEADER_BAD_JSON = "Jwt header is an invalid JSON"
    HEADER_BAD_ALG = "Jwt header [alg] field is required and must be a string"
    HEADER_ALG_NOT_IMPLEMENTED = "Jwt header [alg] is not supported"
    HEADER_BAD_KID = "Jwt header [kid] field is not a string"
    PAYLOAD_BAD_BASE64 = "Jwt payload is an invalid Base64url encoded"
    PAYLOAD_BAD_JSON = "Jwt payload is an invalid JSON"
    PAYLOAD_ISS_NOT_STRING = "Jwt payload [iss] field is not a string"
    PAYLOAD_SUB_NOT_STRING = "Jwt payload [sub] field is not a string"
    PAYLOAD_IAT_NOT_INTEGER = "Jwt payload [iat] field is not an integer"
    PAYLOAD_NBF_NOT_INTEGER = "Jwt payload [nbf] field is not an integer"
    PAYLOAD_EXP_NOT_INTEGER = "Jwt payload [exp] field is not an integer"
    PAYLOAD_JTI_NOT_STRING = "Jwt payload [jti] field is not a string"
    PAYLOAD_AUD_NOT_STRING = "Jwt payload [aud] field is not a string or string list"
    SIGNATURE_BAD_BASE64 = "Jwt signature is an invalid Base64url encoded"
    UNKNOWN_ISSUER = "Jwt issuer is not configured"
    AUDIENCE_NOT_ALLOWED = "Audiences in Jwt are not allowed"
    VERIFICATION_FAIL = "Jwt verification fails"
    KID_ALG_MISMATCH = "Jwks doesn't have key to match kid or alg from Jwt"
    NO_VALID_KEYS = "Jwks doesn't have valid keys"
    JWKS_FETCH_FAIL = "Jwks remote fetch is failed"


#: What Envoy implements (an ``alg`` outside this is "not supported", before any key is tried).
IMPLEMENTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "HS256", "HS384",
     "HS512", "EdDSA"}
)  # fmt: skip
#: Accepted unless a provider lists its own: asymmetric only (HS* must be asked for explicitly).
DEFAULT_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"
)  # fmt: skip
_KTY_FOR = {"RS": "RSA", "PS": "RSA", "ES": "EC", "HS": "oct", "Ed": "OKP"}
_CURVE_FOR = {"ES256": "P-256", "ES384": "P-384", "ES512": "P-521"}
_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _b64decode(text: str) -> bytes | None:
    if not _B64URL.fullmatch(text):
        return None
    text = text.rstrip("=")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class ParsedJwt:
    """A parsed (not yet verified) token."""

    token: str
    header: dict[str, Any]
    payload: dict[str, Any]
    payload_b64: str
    signing_input: bytes
    signature: bytes
    alg: str
    kid: str = ""
    iss: str = ""
    sub: str = ""
    audiences: tuple[str, ...] = ()
    nbf: int = 0
    exp: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def parse(token: str) -> ParsedJwt | Status:
    """The token's header and payload, or the first format problem (Envoy's order)."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return Status.BAD_FORMAT
    raw_header = _b64decode(parts[0])
    if raw_header is None:
        return Status.HEADER_BAD_BASE64
    header = _json_object(raw_header)
    if header is None:
        return Status.HEADER_BAD_JSON
    alg = header.get("alg")
    if not isinstance(alg, str):
        return Status.HEADER_BAD_ALG
    if alg not in IMPLEMENTED_ALGORITHMS:
        return Status.HEADER_ALG_NOT_IMPLEMENTED
    kid = header.get("kid", "")
    if not isinstance(kid, str):
        return Status.HEADER_BAD_KID
    raw_payload = _b64decode(parts[1])
    if raw_payload is None:
        return Status.PAYLOAD_BAD_BASE64
    payload = _json_object(raw_payload)
    if payload is None:
        return Status.PAYLOAD_BAD_JSON
    for claim, status in (("iss", Status.PAYLOAD_ISS_NOT_STRING), ("sub", Status.PAYLOAD_SUB_NOT_STRING),
                          ("jti", Status.PAYLOAD_JTI_NOT_STRING)):  # fmt: skip
        if claim in payload and not isinstance(payload[claim], str):
            return status
    for claim, status in (("iat", Status.PAYLOAD_IAT_NOT_INTEGER), ("nbf", Status.PAYLOAD_NBF_NOT_INTEGER),
                          ("exp", Status.PAYLOAD_EXP_NOT_INTEGER)):  # fmt: skip
        if claim in payload and not _is_number(payload[claim]):
            return status
    aud = payload.get("aud", [])
    if isinstance(aud, str):
        audiences: tuple[str, ...] = (aud,)
    elif isinstance(aud, list) and all(isinstance(a, str) for a in aud):
        audiences = tuple(aud)
    else:
        return Status.PAYLOAD_AUD_NOT_STRING
    signature = _b64decode(parts[2])
    if signature is None:
        return Status.SIGNATURE_BAD_BASE64
    return ParsedJwt(
        token=token,
        header=header,
        payload=payload,
        payload_b64=parts[1],
        signing_input=f"{parts[0]}.{parts[1]}".encode(),
        signature=signature,
        alg=alg,
        kid=kid,
        iss=payload.get("iss", ""),
        sub=payload.get("sub", ""),
        audiences=audiences,
        nbf=int(payload.get("nbf", 0)),
        exp=int(payload.get("exp", 0)),
    )


def check_time(jwt: ParsedJwt, now: int, clock_skew: int, *, require_expiration: bool = False) -> Status:
    if jwt.nbf and now + clock_skew < jwt.nbf:
        return Status.NOT_YET_VALID
    if jwt.exp and now > jwt.exp + clock_skew:
        return Status.EXPIRED
    if require_expiration and not jwt.exp:
        return Status.EXPIRED
    return Status.OK


def _sanitize_audience(aud: str) -> str:
    """Envoy compares audiences without an ``http(s)://`` prefix or a trailing slash."""
    for scheme in ("http://", "https://"):
        if aud.startswith(scheme):
            aud = aud[len(scheme) :]
            break
    return aud.rstrip("/")


def audiences_allowed(jwt: ParsedJwt, allowed: frozenset[str]) -> bool:
    """``allowed`` holds sanitized audiences; empty allows every token."""
    if not allowed:
        return True
    return any(_sanitize_audience(a) in allowed for a in jwt.audiences)


def sanitize_audiences(audiences: list[str]) -> frozenset[str]:
    return frozenset(_sanitize_audience(a) for a in audiences)


def _key_fits(key: jwk.JWK, alg: str) -> bool:
    kty = _KTY_FOR.get(alg[:2])
    if kty is None or key.get("kty") != kty:
        return False
    curve = _CURVE_FOR.get(alg)
    return curve is None or key.get("crv") == curve


def verify_signature(jwt: ParsedJwt, keys: list[jwk.JWK], allowed_algorithms: frozenset[str]) -> Status:
    """Envoy's key selection (kid, then alg) and verification; a key is only ever tried with an
    algorithm of its own family and listed in ``allowed_algorithms``."""
    matched = False
    for key in keys:
        key_kid = key.get("kid") or ""
        if jwt.kid and key_kid and key_kid != jwt.kid:
            continue
        key_alg = key.get("alg") or ""
        if key_alg and key_alg != jwt.alg:
            continue
        matched = True
        if jwt.alg not in allowed_algorithms or not _key_fits(key, jwt.alg):
            continue
        try:
            jwa.JWA.signing_alg(jwt.alg).verify(key, jwt.signing_input, jwt.signature)
        except Exception:  # noqa: BLE001 - any failure of this key means "not this key"
            continue
        return Status.OK
    return Status.VERIFICATION_FAIL if matched else Status.KID_ALG_MISMATCH


def parse_jwks(text: str) -> list[jwk.JWK]:
    """Signing keys of a JWKS document (keys for encryption, or that cannot be read, are skipped).

    Raises ``ValueError`` if the document is not a JWKS at all.
    """
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('not a JWKS: expected a JSON object with a "keys" list')
    keys: list[jwk.JWK] = []
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            keys.append(jwk.JWK(**entry))
        except Exception:  # noqa: BLE001 - one unreadable key does not spoil the others
            continue
    return keys
