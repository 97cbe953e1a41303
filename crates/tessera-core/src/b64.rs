//! Strict unpadded base64url (RFC 4648 §5), the only encoding tokens use.
//!
//! # Security
//! Decoding is strict: no padding, no `+`/`/`, no whitespace, and non-canonical trailing bits
//! are refused, so one token has exactly one spelling.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// The engine: URL-safe alphabet, no padding on encode, padding refused on decode, trailing
/// bits must be zero.
const STRICT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(false),
);

/// Encodes bytes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    STRICT.encode(bytes)
}

/// Decodes unpadded base64url strictly; `None` for anything non-canonical.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    STRICT.decode(text.as_bytes()).ok()
}

/// Decodes unpadded base64url of exactly 32 bytes strictly, without allocating; `None` for
/// anything non-canonical or of another length.
pub fn decode_32(text: &str) -> Option<[u8; 32]> {
    // The decoder wants room for its rounded-up estimate (33 bytes for 43 characters); the
    // decoded length is checked exactly.
    let mut buf = [0u8; 35];
    let len = STRICT.decode_slice(text.as_bytes(), &mut buf).ok()?;
    let mut out = [0u8; 32];
    out.copy_from_slice(buf.get(..len).filter(|b| b.len() == 32)?);
    Some(out)
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
}
