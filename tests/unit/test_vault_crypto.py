"""The vault's Tink layer without a database: the master key's KEK, keysets, rotation, binding."""

from __future__ import annotations

import pytest

from vault import crypto
from vault.crypto import CardKeys, CryptoError, KeyEncryptionKey

MASTER = "test-master-key-for-the-vault-32b"
PAN = b"4242424242424242"


def keys(card_keyset: crypto.KeysetHandle, fingerprint: crypto.KeysetHandle) -> CardKeys:
    return CardKeys.from_keysets(1, card_keyset, fingerprint)


@pytest.fixture(scope="module")
def fingerprint_keyset() -> crypto.KeysetHandle:
    return crypto.new_fingerprint_keyset()


def test_sealed_keysets_open_with_the_same_master_key_only(
    fingerprint_keyset: crypto.KeysetHandle,
) -> None:
    card_keyset = crypto.new_card_keyset()
    sealed = KeyEncryptionKey(MASTER).seal_card_keyset(card_keyset)

    reopened = KeyEncryptionKey(MASTER).open_card_keyset(sealed)
    ciphertext = keys(card_keyset, fingerprint_keyset).encrypt(PAN, b"ctx")
    assert keys(reopened, fingerprint_keyset).decrypt(ciphertext, b"ctx") == PAN
    with pytest.raises(CryptoError, match="ENCRYPTION_KEY"):
        KeyEncryptionKey("another-master-key-of-32-bytes-!!").open_card_keyset(sealed)


def test_the_sealed_keyset_holds_no_key_material_in_clear() -> None:
    card_keyset = crypto.new_card_keyset()
    clear = crypto._keyset_proto(card_keyset).key[0].key_data.value
    sealed = KeyEncryptionKey(MASTER).seal_card_keyset(card_keyset)

    assert clear[-32:] not in sealed


def test_the_two_keysets_cannot_be_swapped(fingerprint_keyset: crypto.KeysetHandle) -> None:
    kek = KeyEncryptionKey(MASTER)
    sealed_fingerprint = kek.seal_fingerprint_keyset(fingerprint_keyset)

    with pytest.raises(CryptoError):
        kek.open_card_keyset(sealed_fingerprint)


def test_a_short_master_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        KeyEncryptionKey("too-short")


def test_rotation_adds_a_primary_and_old_ciphertexts_still_decrypt(
    fingerprint_keyset: crypto.KeysetHandle,
) -> None:
    before = crypto.new_card_keyset()
    old_primary, _ = crypto.key_ids(before)
    old_ciphertext = keys(before, fingerprint_keyset).encrypt(PAN, b"ctx")

    after = crypto.with_new_primary(before)
    new_primary, ids = crypto.key_ids(after)
    rotated = keys(after, fingerprint_keyset)

    assert new_primary != old_primary
    assert set(ids) == {old_primary, new_primary}
    assert crypto.key_id_of(old_ciphertext) == old_primary
    assert rotated.decrypt(old_ciphertext, b"ctx") == PAN
    assert crypto.key_id_of(rotated.encrypt(PAN, b"ctx")) == new_primary


def test_retiring_keeps_the_primary_and_destroys_the_rest(
    fingerprint_keyset: crypto.KeysetHandle,
) -> None:
    before = crypto.new_card_keyset()
    old_ciphertext = keys(before, fingerprint_keyset).encrypt(PAN, b"ctx")
    rotated = crypto.with_new_primary(before)
    new_ciphertext = keys(rotated, fingerprint_keyset).encrypt(PAN, b"ctx")

    retired = keys(crypto.primary_only(rotated), fingerprint_keyset)

    assert retired.key_ids == (retired.primary_key_id,)
    assert retired.decrypt(new_ciphertext, b"ctx") == PAN
    assert crypto.key_id_of(old_ciphertext) not in retired.key_ids
    with pytest.raises(CryptoError):
        retired.decrypt(old_ciphertext, b"ctx")


def test_card_data_decrypts_only_in_its_own_row(fingerprint_keyset: crypto.KeysetHandle) -> None:
    card_keys = keys(crypto.new_card_keyset(), fingerprint_keyset)
    ciphertext = card_keys.encrypt(PAN, crypto.pan_context("tok_a", "MER_1"))

    assert card_keys.decrypt(ciphertext, crypto.pan_context("tok_a", "MER_1")) == PAN
    for elsewhere in (
        crypto.pan_context("tok_b", "MER_1"),  # another token's row
        crypto.pan_context("tok_a", "MER_2"),  # the row moved to another merchant
        crypto.cvv_context("tok_a", "MER_1"),  # the CVV column of the same row
    ):
        with pytest.raises(CryptoError):
            card_keys.decrypt(ciphertext, elsewhere)


def test_fingerprints_are_per_merchant_and_stable_across_rotation(
    fingerprint_keyset: crypto.KeysetHandle,
) -> None:
    before = keys(crypto.new_card_keyset(), fingerprint_keyset)
    after = keys(crypto.with_new_primary(crypto.new_card_keyset()), fingerprint_keyset)

    same = before.fingerprint("MER_1", "4242424242424242")
    assert same == after.fingerprint("MER_1", "4242424242424242")
    assert same != before.fingerprint("MER_2", "4242424242424242")
    assert same != before.fingerprint("MER_1", "4000000000000002")
    # Length-prefixed: moving digits between merchant id and number changes the fingerprint.
    assert before.fingerprint("MER_14", "242424242424242") != same
    assert same.startswith("fp_")
    assert "4242424242424242" not in same


def test_tokens_are_random_and_well_formed() -> None:
    tokens = {crypto.new_token() for _ in range(1000)}

    assert len(tokens) == 1000
    assert all(t.startswith("tok_") and len(t) == 28 for t in tokens)
