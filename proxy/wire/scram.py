"""SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, both ends, sans-IO.

`ScramServer` checks a client against a stored verifier; once the client's
proof checks out, it holds the client's ClientKey (the proof XOR the client
signature), which with the verifier's ServerKey is all a client needs to log
in to a server holding the same verifier. `ScramClient` logs in with a
password or with those keys. Channel binding is tls-server-end-point
(RFC 5929): a hash of the server's certificate, so that a proof made for
one TLS connection is worth nothing on another.

As in PostgreSQL: the user name inside the SCRAM messages is ignored (the
startup packet's counts), authorization identities and extensions are
refused, passwords are SASLprep'ed when they can be (else used as they are).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass, field

from pgshroud import sqlstate

SCRAM = "SCRAM-SHA-256"
SCRAM_PLUS = "SCRAM-SHA-256-PLUS"
CHANNEL_BINDING = "tls-server-end-point"
DEFAULT_ITERATIONS = 4096  # PostgreSQL's scram_iterations default
SALT_LENGTH = 16
_NONCE_BYTES = 18


class ScramError(Exception):
    """The exchange failed; `sqlstate` as PostgreSQL reports it."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail


def _malformed(detail: str) -> ScramError:
    return ScramError(sqlstate.PROTOCOL_VIOLATION, "malformed SCRAM message", detail)


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.digest(key, message, "sha256")


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _malformed(f"{what} is not valid base64") from None


def saslprep(password: str) -> str:
    """RFC 4013 SASLprep, as PostgreSQL applies it to passwords: ASCII as
    it is; otherwise mapped and NFKC-normalised, and when the result has
    prohibited characters, the password unchanged."""
    if password.isascii():
        return password
    mapped = "".join(" " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c))
    text = unicodedata.normalize("NFKC", mapped)
    prohibited = (stringprep.in_table_c12, stringprep.in_table_c21_c22, stringprep.in_table_c3,
                  stringprep.in_table_c4, stringprep.in_table_c5, stringprep.in_table_c6, stringprep.in_table_c7,
                  stringprep.in_table_c8, stringprep.in_table_c9, stringprep.in_table_a1)
    if not text or any(check(c) for c in text for check in prohibited):
        return password
    if any(stringprep.in_table_d1(c) for c in text) and (
        any(stringprep.in_table_d2(c) for c in text)
        or not (stringprep.in_table_d1(text[0]) and stringprep.in_table_d1(text[-1]))
    ):
        return password
    return text


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password).encode("utf-8"), salt, iterations)


@dataclass(frozen=True)
class Keys:
    """What a client needs to log in: ClientKey and ServerKey, for one salt and iteration count."""

    client_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    salt: bytes
    iterations: int

    @classmethod
    def from_password(cls, password: str, salt: bytes, iterations: int) -> Keys:
        salted = salted_password(password, salt, iterations)
        return cls(_hmac(salted, b"Client Key"), _hmac(salted, b"Server Key"), salt, iterations)


@dataclass(frozen=True)
class Verifier:
    """What a server stores: `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`."""

    iterations: int
    salt: bytes
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Verifier | None:
        """The verifier `text` spells, or None when it spells none."""
        try:
            mechanism, head, keys = text.split("$")
            iterations, salt = head.split(":")
            stored, server = keys.split(":")
            verifier = cls(int(iterations), base64.b64decode(salt, validate=True),
                           base64.b64decode(stored, validate=True), base64.b64decode(server, validate=True))
        except (ValueError, binascii.Error):
            return None
        if mechanism != SCRAM or verifier.iterations < 1 or not verifier.salt:
            return None
        if len(verifier.stored_key) != 32 or len(verifier.server_key) != 32:
            return None
        return verifier

    @classmethod
    def from_password(cls, password: str, *, salt: bytes | None = None,
                      iterations: int = DEFAULT_ITERATIONS) -> Verifier:
        keys = Keys.from_password(password, salt or secrets.token_bytes(SALT_LENGTH), iterations)
        return cls.from_keys(keys)

    @classmethod
    def from_keys(cls, keys: Keys) -> Verifier:
        return cls(keys.iterations, keys.salt, hashlib.sha256(keys.client_key).digest(), keys.server_key)

    def __str__(self) -> str:
        return f"{SCRAM}${self.iterations}:{_b64(self.salt)}${_b64(self.stored_key)}:{_b64(self.server_key)}"


def _nonce() -> str:
    return _b64(secrets.token_bytes(_NONCE_BYTES))


def _printable(value: str) -> bool:
    return bool(value) and all(0x21 <= ord(c) <= 0x7E and c != "," for c in value)


def _attributes(text: str, what: str) -> list[tuple[str, str]]:
    out = []
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or not item[0].isalpha():
            raise _malformed(f"{what}: expected an attribute, found {item[:20]!r}")
        out.append((item[0], item[2:]))
    return out


class ScramServer:
    """The server's side of one exchange.

    `verifier` None runs a mock exchange that always fails at the end, so
    that a user without a verifier looks like one with a wrong password.
    `end_point` is the tls-server-end-point data of the client's TLS
    connection when pgshroud offers channel binding on it, else None.
    """

    def __init__(self, verifier: Verifier | None, mock: Verifier, end_point: bytes | None) -> None:
        self._verifier = verifier or mock
        self._real = verifier is not None
        self._end_point = end_point
        self._gs2_header = ""
        self._first_bare = ""
        self._server_first = ""
        self._nonce = ""
        self.client_key: bytes | None = None  # once the proof checked out

    @property
    def mechanisms(self) -> tuple[str, ...]:
        return (SCRAM_PLUS, SCRAM) if self._end_point is not None else (SCRAM,)

    def first(self, mechanism: str, message: bytes) -> bytes:
        """The server-first-message answering the client-first-message."""
        if mechanism not in self.mechanisms:
            raise ScramError(sqlstate.PROTOCOL_VIOLATION, "client selected an invalid SASL authentication mechanism")
        text = _text(message)
        flag, sep, rest = text.partition(",")
        authzid, sep2, bare = rest.partition(",")
        if not (sep and sep2):
            raise _malformed("the GS2 header is incomplete")
        if flag == "y" and self._end_point is not None:
            raise ScramError(sqlstate.PROTOCOL_VIOLATION, "SCRAM channel binding negotiation error",
                             "The client supports SCRAM channel binding but thinks the server does not. "
                             "However, this server does support channel binding.")
        if flag.startswith("p="):
            if mechanism != SCRAM_PLUS:
                raise _malformed("The client selected SCRAM-SHA-256 without channel binding, but the SCRAM "
                                 "message includes channel binding data.")
            if flag[2:] != CHANNEL_BINDING:
                raise ScramError(sqlstate.PROTOCOL_VIOLATION, "unsupported SCRAM channel-binding type", repr(flag[2:]))
        elif flag not in ("n", "y"):
            raise _malformed(f"unexpected channel-binding flag {flag[:20]!r}")
        elif mechanism == SCRAM_PLUS:
            raise _malformed("The client selected SCRAM-SHA-256-PLUS, but the SCRAM message does not include "
                             "channel binding data.")
        if authzid:
            raise ScramError(sqlstate.FEATURE_NOT_SUPPORTED, "client uses authorization identity, but it is not supported")
        attributes = _attributes(bare, "client-first-message")
        if attributes[0][0] == "m":
            raise ScramError(sqlstate.FEATURE_NOT_SUPPORTED, "client requires an unsupported SCRAM extension")
        if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
            raise _malformed("expected n= and r= attributes")
        client_nonce = attributes[1][1]
        if not _printable(client_nonce):
            raise _malformed("the client nonce is empty or not printable")
        self._gs2_header = text[: len(text) - len(bare)]
        self._first_bare = bare
        self._nonce = client_nonce + _nonce()
        verifier = self._verifier
        self._server_first = f"r={self._nonce},s={_b64(verifier.salt)},i={verifier.iterations}"
        return self._server_first.encode("ascii")

    def final(self, message: bytes) -> bytes:
        """The server-final-message; raises ScramError when the proof is wrong."""
        text = _text(message)
        head, sep, proof_text = text.rpartition(",p=")
        if not sep:
            raise _malformed("the proof is missing")
        attributes = _attributes(head, "client-final-message")
        if len(attributes) < 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
            raise _malformed("expected c= and r= attributes")
        binding = _unb64(attributes[0][1], "the channel binding")
        expected = self._gs2_header.encode("ascii")
        if self._gs2_header.startswith("p="):
            assert self._end_point is not None
            expected += self._end_point
        if not hmac.compare_digest(binding, expected):
            raise ScramError(sqlstate.PROTOCOL_VIOLATION, "SCRAM channel binding check failed")
        if not hmac.compare_digest(attributes[1][1].encode("ascii"), self._nonce.encode("ascii")):
            raise _malformed("the nonce does not match")
        proof = _unb64(proof_text, "the proof")
        if len(proof) != 32:
            raise _malformed("the proof has the wrong length")
        auth = f"{self._first_bare},{self._server_first},{head}".encode()
        verifier = self._verifier
        client_key = _xor(proof, _hmac(verifier.stored_key, auth))
        matches = hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key)
        if not (matches and self._real):
            raise ScramError(sqlstate.INVALID_PASSWORD, "password authentication failed")
        self.client_key = client_key
        return f"v={_b64(_hmac(verifier.server_key, auth))}".encode("ascii")


class ScramClient:
    """The client's side of one exchange, with a password or with `Keys`
    (which only work with the salt and iteration count they were made for).
    `end_point` binds the exchange to the TLS connection when the server
    offers SCRAM-SHA-256-PLUS."""

    def __init__(self, *, password: str | None = None, keys: Keys | None = None,
                 end_point: bytes | None = None) -> None:
        assert (password is None) != (keys is None)
        self._password = password
        self._keys = keys
        self._end_point = end_point
        self._gs2_header = f"p={CHANNEL_BINDING},," if end_point is not None else "n,,"
        self._nonce = _nonce()
        self._first_bare = f"n=,r={self._nonce}"
        self._auth = b""
        self._server_key = b""

    @property
    def mechanism(self) -> str:
        return SCRAM_PLUS if self._end_point is not None else SCRAM

    def first(self) -> bytes:
        return (self._gs2_header + self._first_bare).encode("ascii")

    def salt_and_iterations(self, server_first: bytes) -> tuple[bytes, int]:
        attributes = dict(_attributes(_text(server_first), "server-first-message")[:3])
        try:
            salt, iterations = _unb64(attributes["s"], "the salt"), int(attributes["i"])
        except (KeyError, ValueError):
            raise _malformed("expected s= and i= attributes") from None
        if iterations < 1 or not salt:
            raise _malformed("the salt or the iteration count is empty")
        return salt, iterations

    def keys_for(self, salt: bytes, iterations: int) -> Keys:
        """The keys for the server's salt and iteration count (PBKDF2 with a
        password: run it off the event loop)."""
        if self._password is not None:
            return Keys.from_password(self._password, salt, iterations)
        assert self._keys is not None
        if (salt, iterations) != (self._keys.salt, self._keys.iterations):
            raise ScramError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, "the server's SCRAM verifier is not the one pgshroud checked the client "
                                      "against (another salt or iteration count)")
        return self._keys

    def final(self, server_first: bytes, keys: Keys) -> bytes:
        text = _text(server_first)
        attributes = _attributes(text, "server-first-message")
        if attributes[0][0] != "r" or not attributes[0][1].startswith(self._nonce) \
                or len(attributes[0][1]) <= len(self._nonce):
            raise _malformed("the server's nonce does not extend the client's")
        binding = self._gs2_header.encode("ascii") + (self._end_point or b"")
        head = f"c={_b64(binding)},r={attributes[0][1]}"
        self._auth = f"{self._first_bare},{text},{head}".encode()
        stored_key = hashlib.sha256(keys.client_key).digest()
        proof = _xor(keys.client_key, _hmac(stored_key, self._auth))
        self._server_key = keys.server_key
        return f"{head},p={_b64(proof)}".encode("ascii")

    def verify(self, server_final: bytes) -> None:
        """Raise ScramError unless the server proved it knows the verifier."""
        text = _text(server_final)
        if text.startswith("e="):
            raise ScramError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, f"the server refused the SCRAM exchange: {text[2:]}")
        expected = f"v={_b64(_hmac(self._server_key, self._auth))}".encode("ascii")
        if not hmac.compare_digest(text.encode("ascii", "replace"), expected):
            raise ScramError(sqlstate.INVALID_AUTHORIZATION_SPECIFICATION, "the server's SCRAM signature is wrong: it does not hold the user's verifier")


def _text(message: bytes) -> str:
    try:
        return message.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("not UTF-8") from None


# -- tls-server-end-point (RFC 5929, section 4.1) --------------------------

# The certificate's signature algorithm names the hash; MD5 and SHA-1 become
# SHA-256. Algorithms that name no single hash (RSASSA-PSS, EdDSA) have no
# end-point hash, as in PostgreSQL.
_SIGNATURE_HASHES = {
    "1.2.840.113549.1.1.4": "sha256",  # md5WithRSAEncryption
    "1.2.840.113549.1.1.5": "sha256",  # sha1WithRSAEncryption
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.10045.4.1": "sha256",  # ecdsa-with-SHA1
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.2.840.10040.4.3": "sha256",  # dsa-with-sha1
    "2.16.840.1.101.3.4.3.1": "sha224",  # dsa-with-sha224
    "2.16.840.1.101.3.4.3.2": "sha256",  # dsa-with-sha256
}


def _der(data: bytes, pos: int) -> tuple[int, int, int]:
    """The tag of the DER element at `pos`, and where its content starts and ends."""
    tag, length = data[pos], data[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos:pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _oid(content: bytes) -> str:
    parts, value = [], 0
    for byte in content:
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            parts.append(value)
            value = 0
    first = min(parts[0] // 40, 2)
    return ".".join(map(str, [first, parts[0] - 40 * first, *parts[1:]]))


def signature_algorithm(certificate: bytes) -> str:
    """The dotted OID of a DER certificate's signature algorithm."""
    tag, start, _ = _der(certificate, 0)  # Certificate
    if tag != 0x30:
        raise ValueError("not a certificate")
    _, _, after_tbs = _der(certificate, start)  # tbsCertificate
    tag, algorithm, _ = _der(certificate, after_tbs)  # signatureAlgorithm
    oid_tag, oid_start, oid_end = _der(certificate, algorithm)
    if tag != 0x30 or oid_tag != 0x06:
        raise ValueError("not a certificate")
    return _oid(certificate[oid_start:oid_end])


def end_point_hash(certificate: bytes) -> bytes | None:
    """The tls-server-end-point channel binding data of a DER certificate,
    or None when its signature algorithm names no hash to use."""
    try:
        name = _SIGNATURE_HASHES.get(signature_algorithm(certificate))
    except (ValueError, IndexError):
        return None
    return hashlib.new(name, certificate).digest() if name is not None else None
