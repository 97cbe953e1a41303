//! Strict unpadded base64url (RFC 4648 §5), the only encoding tokens use.
//!
//! # Security
//! Decoding is strict: no padding, no `+`/`/`, no whitespace, and non-canonical trailing bits
//! are refused, so one token has exactly one spelling.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The engine used for encoding: URL-safe alphabet, no padding. (Its strict decoding
/// configuration is kept so the tests can check the table decoder below against it.)
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Marks a byte outside the base64url alphabet in [`DECODE`]; any value with a bit of `0xC0`
/// set is invalid, as every alphabet value is below 64.
const INVALID: u8 = 0xFF;

/// The value of each byte in the base64url alphabet (`A–Z a–z 0–9 - _`), [`INVALID`] for every
/// other byte (`+`, `/`, `=`, whitespace, non-ASCII…).
const DECODE: [u8; 256] = {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// [`DECODE`] pre-shifted for each position of a 4-character group, so that a group decodes to
/// the OR of four lookups: the value of a character at position `i` shifted left by
/// `18 - 6 i` bits, or `0xFF00_0000` (above the 24 data bits) for a byte outside the alphabet.
const DECODE_SHIFTED: [[u32; 256]; 4] = {
    let mut tables = [[0u32; 256]; 4];
    let mut position = 0;
    while position < 4 {
        let mut byte = 0;
        while byte < 256 {
            let value = DECODE[byte];
            tables[position][byte] = if value == INVALID {
                0xFF00_0000
            } else {
                (value as u32) << (18 - 6 * position)
            };
            byte += 1;
        }
        position += 1;
    }
    tables
};

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

/// Appends the unpadded base64url encoding of `bytes` to `out`.
pub fn encode_to(bytes: &[u8], out: &mut String) {
    STRICT.encode_string(bytes, out);
}

/// The number of bytes `chars` characters of unpadded base64 decode to; `None` for a length no
/// unpadded encoding has (`4k + 1`).
pub const fn decoded_len(chars: usize) -> Option<usize> {
    match chars % 4 {
        0 => Some(chars / 4 * 3),
        2 => Some(chars / 4 * 3 + 1),
        3 => Some(chars / 4 * 3 + 2),
        _ => None,
    }
}

/// Decodes unpadded base64url strictly into the start of `out` and returns the decoded
/// length; `None` for anything non-canonical, or when `out` is shorter than
/// [`decoded_len`]. On `None` the contents of `out` are unspecified.
///
/// # Security
/// Same rules as [`decode`]: alphabet, length and canonical last character are all checked;
/// validity is accumulated over the whole input and tested once, so the loop has no
/// per-character branch.
pub fn decode_to(text: &str, out: &mut [u8]) -> Option<usize> {
    let text = text.as_bytes();
    let len = decoded_len(text.len())?;
    let out = out.get_mut(..len)?;
    let mut chunks = text.chunks_exact(4);
    let mut outs = out.chunks_exact_mut(3);
    // OR of every full group: a bit of the top byte set means a byte outside the alphabet.
    let mut groups = 0u32;
    for (chunk, dst) in (&mut chunks).zip(&mut outs) {
        let n = DECODE_SHIFTED[0][usize::from(chunk[0])]
            | DECODE_SHIFTED[1][usize::from(chunk[1])]
            | DECODE_SHIFTED[2][usize::from(chunk[2])]
            | DECODE_SHIFTED[3][usize::from(chunk[3])];
        groups |= n;
        let [_, x, y, z] = n.to_be_bytes();
        dst[0] = x;
        dst[1] = y;
        dst[2] = z;
    }
    // OR of the tail's looked-up values: a bit of 0xC0 set means a byte outside the alphabet.
    let mut seen = 0u8;
    let tail = chunks.remainder();
    let dst = outs.into_remainder();
    // The last character of a 2- or 3-character tail carries bits beyond the data (4 or 2);
    // they must be zero, so that one byte string has exactly one encoding.
    let extra = match (tail, dst) {
        ([], []) => 0,
        ([c0, c1], [x]) => {
            let a = DECODE[usize::from(*c0)];
            let b = DECODE[usize::from(*c1)];
            seen |= a | b;
            *x = a << 2 | b >> 4;
            b & 0x0F
        }
        ([c0, c1, c2], [x, y]) => {
            let a = DECODE[usize::from(*c0)];
            let b = DECODE[usize::from(*c1)];
            let c = DECODE[usize::from(*c2)];
            seen |= a | b | c;
            *x = a << 2 | b >> 4;
            *y = b << 4 | c >> 2;
            c & 0x03
        }
        _ => return None,
    };
    (groups & 0xFF00_0000 == 0 && seen & 0xC0 == 0 && extra == 0).then_some(len)
}

/// Decodes unpadded base64url strictly; `None` for anything non-canonical.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let mut out = vec![0u8; decoded_len(text.len())?];
    decode_to(text, &mut out)?;
    Some(out)
}

/// Decodes unpadded base64url of exactly 32 bytes strictly, without allocating; `None` for
/// anything non-canonical or of another length.
pub fn decode_32(text: &str) -> Option<[u8; 32]> {
    if text.len() != 43 {
        return None;
    }
    let mut out = [0u8; 32];
    decode_to(text, &mut out)?;
    Some(out)
}

/// True when every byte of `text` is in the base64url alphabet (`A–Z a–z 0–9 - _`).
pub fn is_alphabet_only(text: &str) -> bool {
    text.bytes().fold(0, |acc, b| acc | DECODE[usize::from(b)]) & 0xC0 == 0
}

/// True when `text` is the canonical unpadded base64url encoding of exactly 32 bytes: the same
/// test as [`decode_32`]`(text).is_some()`, without producing the bytes.
pub fn is_canonical_32(text: &str) -> bool {
    // 43 characters of the alphabet, the last one's 2 low bits (beyond the 256 data bits) zero.
    text.len() == 43
        && is_alphabet_only(text)
        && text
            .as_bytes()
            .last()
            .is_some_and(|&last| DECODE[usize::from(last)] & 0x03 == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes)).as_deref(), Some(bytes.as_slice()));
        }
    }

    #[test]
    fn decode_32_takes_exactly_32_canonical_bytes() {
        let bytes = [0xA5u8; 32];
        let text = encode(&bytes);
        assert_eq!(decode_32(&text), Some(bytes));
        assert_eq!(decode_32(&encode(&[1u8; 31])), None);
        assert_eq!(decode_32(&encode(&[1u8; 33])), None);
        assert_eq!(decode_32(&encode(&[1u8; 60])), None);
        // The last character carries 2 bits; any of the 4 others set is non-canonical.
        let mut non_canonical = text.clone();
        non_canonical.pop();
        non_canonical.push('R');
        assert_eq!(decode_32(&non_canonical), None);
        assert_eq!(decode_32(&format!("{text}=")), None);
        assert_eq!(decode_32(&text.replace('p', "+")), None);
    }

    #[test]
    fn refuses_padding_standard_alphabet_whitespace_and_trailing_bits() {
        assert_eq!(decode("QQ"), Some(b"A".to_vec()));
        assert_eq!(decode("QQ=="), None, "padding");
        assert_eq!(decode("+/8"), None, "standard alphabet");
        assert_eq!(decode("Q Q"), None, "whitespace");
        assert_eq!(decode("QR"), None, "non-zero trailing bits");
    }

    #[test]
    fn refuses_impossible_lengths_and_short_output_buffers() {
        assert_eq!(decode("Q"), None, "4k + 1 characters");
        assert_eq!(decode("QUJDR"), None, "4k + 1 characters");
        assert_eq!(decode(""), Some(Vec::new()));
        let mut small = [0u8; 2];
        assert_eq!(decode_to("QUJD", &mut small), None, "output too short");
        let mut exact = [0u8; 3];
        assert_eq!(decode_to("QUJD", &mut exact), Some(3));
        assert_eq!(&exact, b"ABC");
    }

    #[test]
    fn every_byte_outside_the_alphabet_is_refused_in_every_position() {
        let good = encode(&[0x5Au8; 32]);
        for byte in 0u8..=255 {
            if DECODE[usize::from(byte)] != INVALID {
                continue;
            }
            let mut text = good.clone().into_bytes();
            for i in 0..text.len() {
                let saved = text[i];
                text[i] = byte;
                if let Ok(s) = std::str::from_utf8(&text) {
                    assert_eq!(decode(s), None, "{byte:#x} at {i}");
                    assert_eq!(decode_32(s), None, "{byte:#x} at {i}");
                    assert!(!is_canonical_32(s), "{byte:#x} at {i}");
                }
                text[i] = saved;
            }
        }
    }

    #[test]
    fn only_the_canonical_last_character_is_accepted() {
        // 32 bytes: the 43rd character carries 2 data bits, so 16 of the 64 characters are
        // canonical there; 1 byte: the 2nd carries 2 data bits as well (4 of 64 canonical).
        let text = encode(&[0u8; 32]);
        let one = encode(&[0u8]);
        let mut accepted_32 = 0;
        let mut accepted_1 = 0;
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars() {
            let t = format!("{}{c}", &text[..42]);
            let ok = decode_32(&t).is_some();
            assert_eq!(ok, is_canonical_32(&t), "{t}");
            assert_eq!(ok, STRICT.decode(&t).is_ok(), "{t}");
            accepted_32 += usize::from(ok);
            let t = format!("{}{c}", &one[..1]);
            let ok = decode(&t).is_some();
            assert_eq!(ok, STRICT.decode(&t).is_ok(), "{t}");
            accepted_1 += usize::from(ok);
        }
        assert_eq!(accepted_32, 16);
        assert_eq!(accepted_1, 4);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// The table decoder agrees with the base64 crate's strict engine on arbitrary
            /// text, mostly near-valid: same acceptance, same bytes.
            #[test]
            fn agrees_with_the_strict_engine(
                text in "[A-Za-z0-9_=+/ -]{0,64}|[A-Za-z0-9_-]{0,64}|[A-Za-z0-9_-]{42}[A-Za-z0-9_=+/ -]{1,2}"
            ) {
                let ours = decode(&text);
                let theirs = STRICT.decode(&text).ok();
                prop_assert_eq!(&ours, &theirs);
                let len32 = decode_32(&text);
                prop_assert_eq!(len32.is_some(), is_canonical_32(&text));
                prop_assert_eq!(len32.map(|b| b.to_vec()), theirs.filter(|b| b.len() == 32));
            }

            /// Every byte string round-trips, through both entry points.
            #[test]
            fn round_trips_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
                let text = encode(&bytes);
                prop_assert_eq!(decode(&text), Some(bytes.clone()));
                let mut appended = String::from("x.");
                encode_to(&bytes, &mut appended);
                prop_assert_eq!(&appended[2..], text.as_str());
            }
        }
    }
}
