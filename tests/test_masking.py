"""Mask seeds and their expansion: what masked aggregation needs from its PRG."""

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from hypothesis import given
from hypothesis import strategies as st

from protocol import masking
from protocol.envelope import generate_private_key, public_key_bytes
from protocol.errors import ProtocolError
from protocol.field import P


def test_a_mask_is_the_chacha20_keystream_in_gf_p_and_a_function_of_its_seed() -> None:
    seed = masking.new_seed()
    mask = masking.expand(seed, 1000)
    stream = Cipher(algorithms.ChaCha20(seed, bytes(16)), None).encryptor().update(bytes(4000))
    words = np.frombuffer(stream, dtype="<u4") & np.uint32(P)
    assert np.array_equal(mask, words[words != P][:1000])
    assert np.array_equal(mask, masking.expand(seed, 1000))
    assert np.array_equal(mask[:10], masking.expand(seed, 10))
    assert not np.array_equal(mask, masking.expand(masking.new_seed(), 1000))


def test_masks_spread_evenly_over_the_field() -> None:
    mask = masking.expand(masking.new_seed(), 200_000)
    assert mask.min() >= 0 and mask.max() < P
    counts, _ = np.histogram(mask, bins=32, range=(0, P))
    assert counts.min() > 0.9 * 200_000 / 32 and counts.max() < 1.1 * 200_000 / 32


def test_a_seed_shorter_than_256_bits_is_refused() -> None:
    with pytest.raises(ProtocolError, match="32 bytes"):
        masking.expand(b"\x01" * 4, 10)  # a 32-bit seed, as a Mersenne Twister would take


@given(st.binary(min_size=32, max_size=32))
def test_a_seed_survives_its_field_encoding(seed: bytes) -> None:
    digits = masking.seed_to_field(seed)
    assert digits.shape == (masking.SEED_DIGITS,) and int(digits.max()) < 1 << 30
    assert masking.field_to_seed(digits) == seed


def test_digits_that_encode_no_seed_are_refused() -> None:
    digits = masking.seed_to_field(bytes(32))
    digits[0] = 1 << 30
    with pytest.raises(ProtocolError, match="out of range"):
        masking.field_to_seed(digits)
    digits[0] = 0
    digits[-1] = 1 << 20
    with pytest.raises(ProtocolError, match="longer than 256 bits"):
        masking.field_to_seed(digits)


def test_both_ends_of_a_pair_derive_one_seed_per_round() -> None:
    a, b = generate_private_key(), generate_private_key()
    one = masking.pair_seed(a, public_key_bytes(b), b"round 1")
    assert one == masking.pair_seed(b, public_key_bytes(a), b"round 1")
    assert one != masking.pair_seed(a, public_key_bytes(b), b"round 2")
    assert one != masking.pair_seed(a, public_key_bytes(generate_private_key()), b"round 1")


def test_a_commitment_binds_the_seed_and_its_use() -> None:
    seed = masking.new_seed()
    c = masking.commitment(seed, b"ctx")
    assert c == masking.commitment(seed, b"ctx")
    assert c != masking.commitment(seed, b"other")
    assert c != masking.commitment(masking.new_seed(), b"ctx")
