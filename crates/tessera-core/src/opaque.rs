//! Opaque tokens: `tsr_` (session access), `tsrf_` (refresh) and `tsri_` (a back-end service's
//! introspection secret), each followed by 32 random bytes.
//!
//! An opaque token is only a key to a server-side record. The store keeps SHA-256 of the token,
//! never the token, so a leaked database cannot be replayed as sessions.

use aws_lc_rs::digest;
use subtle::ConstantTimeEq;

use crate::random::{self, RandomError};
use crate::{TokenError, b64};

/// Bytes of randomness in every opaque token (256 bits).
pub const RANDOM_BYTES: usize = 32;
/// Length of the base64url body of an opaque token.
const BODY_LEN: usize = 43;

/// Which kind of opaque token; the prefix makes them impossible to confuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpaqueKind {
    /// A session (access) token: `tsr_…`.
    Session,
    /// A refresh token: `tsrf_…`. Only ever accepted by the refresh endpoint.
    Refresh,
    /// A back-end service's secret for `POST /v1/introspect`: `tsri_…`. The configuration
    /// holds its SHA-256 only.
    Introspection,
}

impl OpaqueKind {
    /// The token prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            OpaqueKind::Session => "tsr_",
            OpaqueKind::Refresh => "tsrf_",
            OpaqueKind::Introspection => "tsri_",
        }
    }
}

/// SHA-256 of a token: what the store keeps and looks up.
///
/// # Security
/// Equality is constant-time, so comparing a presented token's hash with a stored one leaks
/// nothing through timing. (A store's index lookup may take data-dependent time; that can
/// reveal at most a prefix of SHA-256 of a live token, which does not help find the token:
/// this is why tokens are looked up by hash and never by value.)
#[derive(Clone, Copy)]
pub struct TokenHash([u8; 32]);

impl std::hash::Hash for TokenHash {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Consistent with `eq`: equal hashes have equal bytes.
        self.0.hash(state);
    }
}

impl PartialEq for TokenHash {
    fn eq(&self, other: &TokenHash) -> bool {
        // Constant-time: every byte difference is OR-ed in with no early exit (a branch-free
        // reduction the compiler vectorizes), then one `subtle` comparison of the result,
        // cheaper than `subtle`'s per-byte barrier on the hash map's every probe.
        let diff = self
            .0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff.ct_eq(&0).into()
    }
}

impl Eq for TokenHash {}

impl TokenHash {
    /// Hashes a token string.
    pub fn of(token: &str) -> TokenHash {
        let digest = digest::digest(&digest::SHA256, token.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        TokenHash(out)
    }

    /// Rebuilds a hash read back from a store.
    pub fn from_bytes(bytes: [u8; 32]) -> TokenHash {
        TokenHash(bytes)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hash in 64 lowercase hex digits (as configuration files hold it).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads 64 hex digits (either case); `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<TokenHash> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(TokenHash(out))
    }
}

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A prefix is enough to tell hashes apart in logs.
        write!(
            f,
            "TokenHash({:02x}{:02x}{:02x}{:02x}…)",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

/// A freshly generated opaque token and its hash.
pub struct OpaqueToken {
    /// The token to hand to the client, once.
    pub token: String,
    /// What the store keeps.
    pub hash: TokenHash,
}

/// Generates a new opaque token of `kind` from the OS CSPRNG.
pub fn generate(kind: OpaqueKind) -> Result<OpaqueToken, RandomError> {
    let token = format!(
        "{}{}",
        kind.prefix(),
        b64::encode(&random::bytes::<RANDOM_BYTES>()?)
    );
    let hash = TokenHash::of(&token);
    Ok(OpaqueToken { token, hash })
}

/// Checks that `token` is exactly an opaque token of `kind` and returns its hash.
///
/// # Security
/// The shape (prefix, length, alphabet, canonical encoding) is checked before the store is
/// asked, so garbage never costs a lookup.
pub fn parse(token: &str, kind: OpaqueKind) -> Result<TokenHash, TokenError> {
    let body = token
        .strip_prefix(kind.prefix())
        .ok_or(TokenError::Malformed)?;
    if body.len() != BODY_LEN || !b64::is_canonical_32(body) {
        return Err(TokenError::Malformed);
    }
    Ok(TokenHash::of(token))
}

/// True when `token` carries the prefix of `kind` (a cheap routing test, not validation).
pub fn looks_like(token: &str, kind: OpaqueKind) -> bool {
    token.starts_with(kind.prefix())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_and_hash_consistently() {
        let t = generate(OpaqueKind::Session).unwrap();
        assert!(t.token.starts_with("tsr_"));
        assert_eq!(t.token.len(), 4 + 43);
        assert_eq!(parse(&t.token, OpaqueKind::Session), Ok(t.hash));
    }

    #[test]
    fn kinds_are_not_interchangeable() {
        let refresh = generate(OpaqueKind::Refresh).unwrap();
        assert_eq!(
            parse(&refresh.token, OpaqueKind::Session),
            Err(TokenError::Malformed)
        );
        let session = generate(OpaqueKind::Session).unwrap();
        assert_eq!(
            parse(&session.token, OpaqueKind::Refresh),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn introspection_secrets_are_neither_access_nor_refresh_tokens() {
        let secret = generate(OpaqueKind::Introspection).unwrap();
        assert!(secret.token.starts_with("tsri_"));
        assert_eq!(
            parse(&secret.token, OpaqueKind::Introspection),
            Ok(secret.hash)
        );
        for other in [OpaqueKind::Session, OpaqueKind::Refresh] {
            assert!(!looks_like(&secret.token, other));
            assert_eq!(parse(&secret.token, other), Err(TokenError::Malformed));
        }
    }

    #[test]
    fn hashes_round_trip_through_hex_and_nothing_else_reads_as_one() {
        let hash = TokenHash::of("tsri_example");
        let hex = hash.to_hex();
        assert_eq!(hex.len(), 64);
        assert_eq!(TokenHash::from_hex(&hex), Some(hash));
        assert_eq!(TokenHash::from_hex(&hex.to_uppercase()), Some(hash));
        for bad in [
            "",
            "00",
            &hex[1..],
            &format!("{hex}0"),
            &format!("{}g", &hex[..63]),
            &"é".repeat(32),
        ] {
            assert_eq!(TokenHash::from_hex(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = generate(OpaqueKind::Session).unwrap().token;
        for bad in [
            "",
            "tsr_",
            &good[..good.len() - 1],
            &format!("{good}A"),
            &good.replace("tsr_", "TSR_"),
            &format!("tsr_{}", "+".repeat(43)),
            &format!("tsr_{}=", &good[4..46]),
            &format!("tsr_{}==", &good[4..45]),
            &format!("tsr_{}/", &good[4..46]),
            &format!("tsr_{} ", &good[4..46]),
            &format!("tsr_{}\n", &good[4..46]),
            &format!("tsr_{}é", &good[4..45]),
            &format!("tsr_+{}", &good[5..]),
            &format!("tsr_{}", &good[4..46]),
            &format!("tsr_{}AA", &good[4..46]),
            &format!("tsrf_{}", &good[4..]),
        ] {
            assert_eq!(
                parse(bad, OpaqueKind::Session),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn non_canonical_last_characters_are_refused() {
        // The last of 43 characters carries 2 data bits and 4 padding bits that must be zero:
        // only 16 of the 64 alphabet characters are canonical there.
        let good = generate(OpaqueKind::Session).unwrap().token;
        let mut accepted = 0;
        for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars() {
            let token = format!("{}{c}", &good[..good.len() - 1]);
            let canonical =
                b64::decode_32(&token[4..]).is_some_and(|bytes| b64::encode(&bytes) == token[4..]);
            assert_eq!(
                parse(&token, OpaqueKind::Session).is_ok(),
                canonical,
                "{token}"
            );
            accepted += usize::from(canonical);
        }
        assert_eq!(accepted, 16);
    }

    #[test]
    fn token_hashes_are_equal_only_when_every_byte_is() {
        let a = TokenHash::from_bytes([7u8; 32]);
        assert_eq!(a, TokenHash::from_bytes([7u8; 32]));
        for i in 0..32 {
            for bit in 0..8 {
                let mut bytes = [7u8; 32];
                bytes[i] ^= 1 << bit;
                assert_ne!(a, TokenHash::from_bytes(bytes), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn tokens_are_unique() {
        let a = generate(OpaqueKind::Session).unwrap();
        let b = generate(OpaqueKind::Session).unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.hash, b.hash);
    }
}
