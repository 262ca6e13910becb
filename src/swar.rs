//! Bytes tested eight at a time in a `u64` (SIMD within a register): the CSV encoder's test for
//! a field that needs quotes and the decoder's scan for a string's end.
//!
//! Each mask has the high bit of a byte set where the byte matches, found by the borrow of a
//! bytewise subtraction. A borrow can also mark bytes *above* a matching one, never below: the
//! mask is non-zero exactly when some byte matches, and its lowest set bit marks the first
//! matching byte (in little-endian order).

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `word` equal to `b` (see the module doc).
#[inline]
pub fn equal(word: u64, b: u8) -> u64 {
    let x = word ^ (ONES * u64::from(b));
    x.wrapping_sub(ONES) & !x & HIGH
}

/// The bytes of `word` below `n` (`n` ≤ 128; see the module doc).
#[inline]
pub fn below(word: u64, n: u8) -> u64 {
    debug_assert!(n <= 128);
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGH
}

/// The eight bytes of `bytes` at `i`, as a little-endian word.
#[inline]
pub fn word_at(bytes: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(bytes[i..i + 8].try_into().expect("eight bytes"))
}
