"""The vault's keys, with Tink: what encrypts card data, and what encrypts those keys.

Three layers (DESIGN.md §6):

- The master key (ENCRYPTION_KEY, a KMS key later) never touches card data. HKDF-SHA256 turns
  it into the key-encryption key (KEK): an AES256-GCM Tink AEAD built from those raw bytes.
- The card-data keyset: Tink AES256-GCM keys with the TINK output prefix, so every ciphertext
  starts with the id of the key that made it. Rotation adds a new primary; older keys keep
  decrypting until the re-encryption job has moved every ciphertext off them.
- The fingerprint keyset: one Tink HMAC-SHA256 PRF key. Never rotated: a fingerprint must stay
  equal for the same card, or dedupe breaks. Kept apart from the master key (rather than derived
  from it) so that replacing the master key only re-wraps the keysets.

Both keysets are stored (in the `keysets` table) only as Tink encrypted keysets under the KEK,
with associated data naming the keyset, so the two blobs cannot be swapped for each other.

Every card ciphertext is bound by associated data to the token and merchant it belongs to:
copying a ciphertext into another row makes it undecryptable instead of revealing it there.

Tink's Python package ships no type information; this module is the only one that imports it
and exposes typed wrappers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias, cast

import tink  # type: ignore[import-untyped]
from tink import aead, prf, secret_key_access
from tink.proto import aes_gcm_pb2, tink_pb2  # type: ignore[import-untyped]

aead.register()
prf.register()

KeysetHandle: TypeAlias = Any  # tink.KeysetHandle (untyped)

MASTER_KEY_MIN_BYTES = 32
_KEK_INFO = b"paygate/vault/keyset-encryption-key/v1"
_AES_GCM_TYPE_URL = "type.googleapis.com/google.crypto.tink.AesGcmKey"
_KEK_KEY_ID = 1
_CARD_KEYSET_AD = b"paygate.vault.keyset:card-data"
_FINGERPRINT_KEYSET_AD = b"paygate.vault.keyset:fingerprint"
_TINK_PREFIX = 0x01
FINGERPRINT_PREFIX = "fp_"


class CryptoError(Exception):
    """A ciphertext or keyset did not decrypt: wrong key, tampered data, or a swapped row."""


class _Aead(Protocol):
    def encrypt(self, plaintext: bytes, associated_data: bytes) -> bytes: ...
    def decrypt(self, ciphertext: bytes, associated_data: bytes) -> bytes: ...


class _Prf(Protocol):
    def compute(self, input_data: bytes, output_length: int) -> bytes: ...


class KeyEncryptionKey:
    """The AEAD that wraps the stored keysets, derived from the master key."""

    def __init__(self, master_key: str) -> None:
        raw = master_key.encode("utf-8")
        if len(raw) < MASTER_KEY_MIN_BYTES:
            raise ValueError(f"ENCRYPTION_KEY must be at least {MASTER_KEY_MIN_BYTES} bytes")
        # HKDF because ENCRYPTION_KEY is a printable string (Helm generates 32 characters), not
        # 32 uniformly random bytes, and so that this key is used for this one purpose only.
        kek = _hkdf_sha256(raw, _KEK_INFO, 32)
        # Tink's Python API has no "import raw key" call; a one-key keyset proto holding the
        # bytes, parsed with secret-key access, is Tink's own way to do it, and keeps the KEK a
        # Tink primitive like every other key here (no second crypto library).
        keyset = tink_pb2.Keyset(
            primary_key_id=_KEK_KEY_ID,
            key=[
                tink_pb2.Keyset.Key(
                    key_data=tink_pb2.KeyData(
                        type_url=_AES_GCM_TYPE_URL,
                        value=aes_gcm_pb2.AesGcmKey(version=0, key_value=kek).SerializeToString(),
                        key_material_type=tink_pb2.KeyData.SYMMETRIC,
                    ),
                    status=tink_pb2.ENABLED,
                    key_id=_KEK_KEY_ID,
                    output_prefix_type=tink_pb2.RAW,
                )
            ],
        )
        handle = tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)
        self._aead = cast(_Aead, handle.primitive(aead.Aead))

    def seal_card_keyset(self, handle: KeysetHandle) -> bytes:
        return self._seal(handle, _CARD_KEYSET_AD)

    def seal_fingerprint_keyset(self, handle: KeysetHandle) -> bytes:
        return self._seal(handle, _FINGERPRINT_KEYSET_AD)

    def open_card_keyset(self, sealed: bytes) -> KeysetHandle:
        return self._open(sealed, _CARD_KEYSET_AD)

    def open_fingerprint_keyset(self, sealed: bytes) -> KeysetHandle:
        return self._open(sealed, _FINGERPRINT_KEYSET_AD)

    def _seal(self, handle: KeysetHandle, associated_data: bytes) -> bytes:
        sealed: bytes = tink.proto_keyset_format.serialize_encrypted(
            handle, self._aead, associated_data
        )
        return sealed

    def _open(self, sealed: bytes, associated_data: bytes) -> KeysetHandle:
        try:
            return tink.proto_keyset_format.parse_encrypted(sealed, self._aead, associated_data)
        except tink.TinkError:
            raise CryptoError(
                "the master key (ENCRYPTION_KEY) does not decrypt the vault's keysets"
            ) from None


def new_card_keyset() -> KeysetHandle:
    return tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM)


def new_fingerprint_keyset() -> KeysetHandle:
    return tink.new_keyset_handle(prf.prf_key_templates.HMAC_SHA256)


def key_ids(handle: KeysetHandle) -> tuple[int, tuple[int, ...]]:
    """(primary key id, every key id) of a keyset: metadata, no secret."""
    info = handle.keyset_info()
    return int(info.primary_key_id), tuple(sorted(int(k.key_id) for k in info.key_info))


def with_new_primary(handle: KeysetHandle) -> KeysetHandle:
    """The keyset plus a fresh AES256-GCM key, made primary; every older key stays enabled."""
    keyset = _keyset_proto(handle)
    fresh = _keyset_proto(new_card_keyset()).key[0]
    used = {key.key_id for key in keyset.key}
    while (
        fresh.key_id in used
    ):  # ids are random 32-bit numbers; a clash is unlikely, not impossible
        fresh = _keyset_proto(new_card_keyset()).key[0]
    keyset.key.append(fresh)
    keyset.primary_key_id = fresh.key_id
    return _from_proto(keyset)


def primary_only(handle: KeysetHandle) -> KeysetHandle:
    """The keyset without its older keys: once no ciphertext needs them, they are destroyed."""
    keyset = _keyset_proto(handle)
    primary = next(key for key in keyset.key if key.key_id == keyset.primary_key_id)
    return _from_proto(tink_pb2.Keyset(primary_key_id=keyset.primary_key_id, key=[primary]))


def key_id_of(ciphertext: bytes) -> int:
    """The id of the key a card ciphertext was made with (from its Tink output prefix)."""
    if len(ciphertext) < 5 or ciphertext[0] != _TINK_PREFIX:
        raise CryptoError("not a Tink-prefixed ciphertext")
    return int.from_bytes(ciphertext[1:5], "big")


def pan_context(token: str, merchant_id: str) -> bytes:
    """Associated data of a PAN ciphertext: it decrypts only in its own row."""
    return _context("pan", token, merchant_id)


def cvv_context(token: str, merchant_id: str) -> bytes:
    return _context("cvv", token, merchant_id)


@dataclass(frozen=True)
class CardKeys:
    """One version of the vault's keys, decrypted: encrypts under the primary key, decrypts
    under any key of the keyset, and computes fingerprints."""

    version: int
    primary_key_id: int
    key_ids: tuple[int, ...]
    _aead: _Aead
    _prf: _Prf

    @classmethod
    def from_keysets(
        cls, version: int, card_keyset: KeysetHandle, fingerprint_keyset: KeysetHandle
    ) -> CardKeys:
        primary, ids = key_ids(card_keyset)
        return cls(
            version=version,
            primary_key_id=primary,
            key_ids=ids,
            _aead=cast(_Aead, card_keyset.primitive(aead.Aead)),
            _prf=cast(_Prf, fingerprint_keyset.primitive(prf.PrfSet).primary()),
        )

    def encrypt(self, plaintext: bytes, context: bytes) -> bytes:
        return self._aead.encrypt(plaintext, context)

    def decrypt(self, ciphertext: bytes, context: bytes) -> bytes:
        try:
            return self._aead.decrypt(ciphertext, context)
        except tink.TinkError:
            raise CryptoError("card data did not decrypt") from None

    def fingerprint(self, merchant_id: str, pan_digits: str) -> str:
        """Equal for the same card and merchant; unrelated across merchants; and, being keyed,
        useless to someone who has the database but not the keys (no brute force of PANs)."""
        merchant = merchant_id.encode()
        message = len(merchant).to_bytes(2, "big") + merchant + pan_digits.encode()
        digest = self._prf.compute(message, 32)
        # base64url rather than hex: a hex string is full of digit runs that log masking and
        # PAN scanners would flag.
        return FINGERPRINT_PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def new_token() -> str:
    """`tok_` and 24 URL-safe characters (144 random bits): says nothing about the card."""
    return "tok_" + secrets.token_urlsafe(18)


def _context(kind: str, token: str, merchant_id: str) -> bytes:
    return f"paygate.vault.{kind}\x00{token}\x00{merchant_id}".encode()


def _keyset_proto(handle: KeysetHandle) -> Any:
    return tink_pb2.Keyset.FromString(
        tink.proto_keyset_format.serialize(handle, secret_key_access.TOKEN)
    )


def _from_proto(keyset: Any) -> KeysetHandle:
    return tink.proto_keyset_format.parse(keyset.SerializeToString(), secret_key_access.TOKEN)


def _hkdf_sha256(key: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF with SHA-256 and an all-zero salt."""
    pseudo_random_key = hmac.new(b"\x00" * 32, key, hashlib.sha256).digest()
    output, block = b"", b""
    counter = 1
    while len(output) < length:
        block = hmac.new(
            pseudo_random_key, block + info + bytes([counter]), hashlib.sha256
        ).digest()
        output += block
        counter += 1
    return output[:length]
