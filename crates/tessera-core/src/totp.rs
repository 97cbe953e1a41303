//! One-time codes: TOTP (RFC 6238) and single-use recovery codes.
//!
//! The code arithmetic is the `totp-rs` crate's (HMAC-SHA-1, 6 digits, 30-second steps: what
//! every authenticator app reads from an `otpauth://` URI); the QR code is drawn as SVG by the
//! `qrcode` crate, on the server, so the secret never goes to an outside service. What this
//! module adds is tessera's policy: the secret's size, the window of steps accepted, which step
//! a code matched (so the store can accept each step once), and recovery codes.

use qrcode::QrCode;
use qrcode::render::svg;
use totp_rs::{Builder, Totp};

use crate::UnixTime;
use crate::opaque::TokenHash;
use crate::random::{self, RandomError};

/// Secret length: 160 bits, the HMAC-SHA-1 block RFC 4226 §4 recommends.
pub const SECRET_BYTES: usize = 20;
/// Seconds per time step (RFC 6238's default; authenticator apps assume it).
pub const STEP_SECONDS: i64 = 30;
/// Steps accepted either side of the current one: one, for clocks up to 30 s apart (RFC 6238
/// §5.2 recommends at most one step of network delay).
pub const SKEW_STEPS: i64 = 1;
/// Recovery codes handed out at once.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes per recovery code: 80 bits, written as 16 base32 characters. Stored as an
/// unsalted SHA-256, which is safe only because the code is this long: a stolen hash cannot be
/// searched back to its code.
const RECOVERY_CODE_BYTES: usize = 10;
/// Longest code text accepted before any work (a recovery code with separators and spaces).
pub const MAX_CODE_LEN: usize = 64;

/// A user's TOTP generator, from its secret.
pub struct Generator {
    totp: Totp,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Holds a secret: never printed.
        f.write_str("Generator(..)")
    }
}

/// Why a TOTP generator or its QR code could not be made.
#[derive(Debug, thiserror::Error)]
#[error("TOTP: {0}")]
pub struct TotpError(String);

/// A new random secret.
pub fn new_secret() -> Result<[u8; SECRET_BYTES], RandomError> {
    random::bytes::<SECRET_BYTES>()
}

impl Generator {
    /// The generator of `secret`, labelled for authenticator apps as `account` at `issuer`.
    ///
    /// A `:` in either (which the `otpauth` label format reserves) is shown as `_`.
    pub fn new(secret: &[u8], issuer: &str, account: &str) -> Result<Generator, TotpError> {
        let totp = Builder::new()
            .with_secret(secret.to_vec())
            .with_issuer(Some(issuer.replace(':', "_")))
            .with_account_name(account.replace(':', "_"))
            .build()
            .map_err(|e| TotpError(e.to_string()))?;
        Ok(Generator { totp })
    }

    /// The time step `code` belongs to, when it is the code of the step of `now` or of one
    /// step either side; `None` otherwise (wrong, malformed or too far off).
    ///
    /// The caller must still have the store accept that step once ([`crate`]'s users:
    /// `FactorStore::accept_totp_step`): RFC 6238 §5.2 forbids accepting a code twice.
    pub fn matching_step(&self, code: &str, now: UnixTime) -> Option<i64> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let now = u64::try_from(now).ok()?;
        self.totp
            .check(code, now)
            .and_then(|step| i64::try_from(step).ok())
            .filter(|step| *step > 0)
    }

    /// The code of time step `step` (for tests and tools; the server never shows one).
    pub fn code_at_step(&self, step: i64) -> String {
        let time = u64::try_from(step.saturating_mul(STEP_SECONDS)).unwrap_or(0);
        self.totp.generate(time).to_string()
    }

    /// The `otpauth://totp/…` URI an authenticator app scans.
    pub fn uri(&self) -> Result<String, TotpError> {
        self.totp.to_url().map_err(|e| TotpError(e.to_string()))
    }

    /// The secret as base32, for typing into an app by hand.
    pub fn secret_base32(&self) -> String {
        self.totp.secret().to_base32()
    }

    /// The URI as a QR code: an SVG document, drawn here.
    pub fn qr_svg(&self) -> Result<String, TotpError> {
        let code = QrCode::new(self.uri()?.as_bytes()).map_err(|e| TotpError(e.to_string()))?;
        Ok(code
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build())
    }
}

/// The time step of `now`.
pub fn step_of(now: UnixTime) -> i64 {
    now.div_euclid(STEP_SECONDS)
}

/// New recovery codes (`xxxx-xxxx-xxxx-xxxx`, lowercase base32) and their hashes.
pub fn new_recovery_codes() -> Result<Vec<(String, TokenHash)>, RandomError> {
    (0..RECOVERY_CODES)
        .map(|_| {
            let bytes = random::bytes::<RECOVERY_CODE_BYTES>()?;
            let text = base32_lower(&bytes);
            let shown = text
                .as_bytes()
                .chunks(4)
                .map(|c| String::from_utf8_lossy(c).into_owned())
                .collect::<Vec<_>>()
                .join("-");
            Ok((shown, TokenHash::of(&text)))
        })
        .collect()
}

/// The hash a typed recovery code is looked up by: separators, spaces and case do not matter.
/// `None` when it cannot be a recovery code.
pub fn recovery_code_hash(typed: &str) -> Option<TokenHash> {
    if typed.len() > MAX_CODE_LEN {
        return None;
    }
    let text: String = typed
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let valid = text.len() == RECOVERY_CODE_BYTES * 8 / 5
        && text.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7'));
    valid.then(|| TokenHash::of(&text))
}

/// RFC 4648 base32 without padding, lowercase (the input is a multiple of 5 bytes).
fn base32_lower(bytes: &[u8]) -> String {
    // Written here: ten lines, against a crate for one call; `totp-rs` keeps its own private.
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut out = String::with_capacity(bytes.len() * 8 / 5);
    for chunk in bytes.chunks(5) {
        let mut buf = [0u8; 5];
        buf[..chunk.len()].copy_from_slice(chunk);
        let n = buf.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b));
        for i in (0..8).rev() {
            out.push(char::from(ALPHABET[((n >> (i * 5)) & 31) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B's SHA-1 secret.
    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn codes_match_rfc_6238_vectors_truncated_to_six_digits() {
        let g = Generator::new(RFC_SECRET, "tessera", "alice").unwrap();
        // Appendix B: T = 59 → 94287082, 1111111109 → 07081804, 1234567890 → 89005924.
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_234_567_890, "005924"),
        ] {
            assert_eq!(g.code_at_step(step_of(time)), code);
            assert_eq!(g.matching_step(code, time), Some(step_of(time)));
        }
    }

    #[test]
    fn one_step_either_side_is_accepted_and_no_more() {
        let g = Generator::new(&new_secret().unwrap(), "tessera", "bob").unwrap();
        let now = 1_800_000_015;
        let step = step_of(now);
        for offset in -1..=1 {
            let code = g.code_at_step(step + offset);
            assert_eq!(g.matching_step(&code, now), Some(step + offset));
        }
        for offset in [-3, -2, 2, 3] {
            let code = g.code_at_step(step + offset);
            // A far code could collide with a near one by chance (1 in 10^6): skip that case.
            let near = (-1..=1).any(|o| g.code_at_step(step + o) == code);
            if !near {
                assert_eq!(g.matching_step(&code, now), None, "offset {offset}");
            }
        }
        for bad in ["", "12345", "1234567", "12345a", "１２３４５６", " 123 456"] {
            assert_eq!(g.matching_step(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn the_uri_and_qr_code_carry_the_secret_and_labels() {
        let g = Generator::new(RFC_SECRET, "tess:era", "al:ice").unwrap();
        let uri = g.uri().unwrap();
        assert!(uri.starts_with("otpauth://totp/"), "{uri}");
        assert!(
            uri.contains(&format!("secret={}", g.secret_base32())),
            "{uri}"
        );
        assert!(uri.contains("issuer=tess_era"), "{uri}");
        let svg = g.qr_svg().unwrap();
        assert!(svg.contains("<svg") && svg.contains("</svg>"));
        assert!(!svg.contains("<script"));
    }

    #[test]
    fn recovery_codes_are_distinct_and_found_however_typed() {
        let codes = new_recovery_codes().unwrap();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut hashes: Vec<_> = codes.iter().map(|(_, h)| h.to_hex()).collect();
        hashes.sort();
        hashes.dedup();
        assert_eq!(hashes.len(), RECOVERY_CODES);
        let (shown, hash) = &codes[0];
        assert_eq!(shown.len(), 19);
        assert_eq!(recovery_code_hash(shown), Some(*hash));
        assert_eq!(recovery_code_hash(&shown.to_uppercase()), Some(*hash));
        assert_eq!(recovery_code_hash(&shown.replace('-', " ")), Some(*hash));
        assert_eq!(recovery_code_hash(&shown.replace('-', "")), Some(*hash));
        assert_eq!(recovery_code_hash(&shown[..18]), None);
        assert_eq!(recovery_code_hash("1111-1111-1111-1111"), None);
        assert_eq!(recovery_code_hash(&"a".repeat(100)), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32_lower(b"fooba"), "mzxw6ytb");
        assert_eq!(base32_lower(b"foobarbaz!"), "mzxw6ytbojrgc6rb");
    }
}
