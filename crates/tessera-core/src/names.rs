//! Names chosen by people and configuration: usernames, roles and permissions.
//!
//! One place decides which names tessera accepts, so the admin API, the command line, the
//! configuration and login all apply the same rules.
//!
//! # Security
//! - **Roles and permissions** travel in headers (`X-Tessera-Roles`, comma-separated) and JWT
//!   claims, and are compared byte for byte. They are limited to [`AUTHZ_NAME_CHARS`], 1 to
//!   [`MAX_AUTHZ_NAME_BYTES`] bytes: no CR/LF (a header could not be built), no comma (a role
//!   `editor,admin` would read as two), no space, nothing that looks alike.
//! - **Usernames** are shown to people and compared by machines: they are normalised to Unicode
//!   NFC (so `é` typed composed or decomposed names one account), and characters a reader cannot
//!   see or tell apart are refused: controls, format characters (zero-width, bidi controls),
//!   other default-ignorable code points, line and paragraph separators, spaces other than
//!   U+0020, private-use and unassigned code points. Case and inner spaces are kept, so existing
//!   names stay valid (PRECIS `UsernameCasePreserved` would refuse spaces and fold widths;
//!   NFC plus this refusal list gives the same protection against invisible look-alikes).
//! - **Reserved names** that the audit log uses as actors ([`CLI_ACTOR`], [`SYSTEM_ACTOR`]) are
//!   refused as new usernames, in any ASCII case, so no user can pose as the command line.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest username, in bytes of its NFC form (SPEC §6).
pub const MAX_USERNAME_BYTES: usize = 256;
/// Longest role or permission name, in bytes.
pub const MAX_AUTHZ_NAME_BYTES: usize = 64;
/// The characters a role or permission may contain, besides ASCII letters and digits.
pub const AUTHZ_NAME_CHARS: &str = "._:-/";
/// The audit actor of the command line.
pub const CLI_ACTOR: &str = "cli";
/// The audit actor of tessera itself (first-start set-up).
pub const SYSTEM_ACTOR: &str = "system";
/// Names no user may take: the audit log's own actors.
pub const RESERVED_USERNAMES: [&str; 2] = [CLI_ACTOR, SYSTEM_ACTOR];

/// Why a name was refused; the message is fit to show the person who chose it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or too long.
    #[error("username must be 1 to {MAX_USERNAME_BYTES} bytes")]
    UsernameLength,
    /// Leading or trailing whitespace.
    #[error("username must not begin or end with a space")]
    UsernameSpaces,
    /// A character a reader cannot see or tell apart.
    #[error(
        "username must not contain control, format (zero-width, bidi), invisible, private-use \
         or unassigned characters, or spaces other than U+0020 (found U+{0:04X})"
    )]
    UsernameCharacter(u32),
    /// One of [`RESERVED_USERNAMES`].
    #[error("username {0:?} is reserved")]
    Reserved(String),
    /// A role or permission outside the charset.
    #[error(
        "{kind} {name:?} must be 1 to {MAX_AUTHZ_NAME_BYTES} of: ASCII letters, digits and \
         {AUTHZ_NAME_CHARS}"
    )]
    AuthzName {
        /// `role` or `permission`.
        kind: &'static str,
        /// The name as given (Debug-escaped in the message).
        name: String,
    },
}

/// The NFC form of `input`, with no other check: for looking an existing user up by name.
pub fn nfc(input: &str) -> String {
    input.nfc().collect()
}

/// The username `input` names at login: its NFC form, when it passes every character rule.
/// Reserved names are not refused here (no such user exists, so the login simply fails).
pub fn login_username(input: &str) -> Result<String, NameError> {
    // Cheap bound before normalising: NFC of a name over 4x the limit cannot fit.
    if input.is_empty() || input.len() > 4 * MAX_USERNAME_BYTES {
        return Err(NameError::UsernameLength);
    }
    let name = nfc(input);
    if name.len() > MAX_USERNAME_BYTES {
        return Err(NameError::UsernameLength);
    }
    if name.trim() != name {
        return Err(NameError::UsernameSpaces);
    }
    if let Some(c) = name.chars().find(|&c| !visible_in_username(c)) {
        return Err(NameError::UsernameCharacter(u32::from(c)));
    }
    Ok(name)
}

/// The username to store for a new user: [`login_username`] and not reserved.
pub fn new_username(input: &str) -> Result<String, NameError> {
    let name = login_username(input)?;
    if RESERVED_USERNAMES
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(&name))
    {
        return Err(NameError::Reserved(name));
    }
    Ok(name)
}

/// Checks a role name against the charset.
pub fn check_role(name: &str) -> Result<(), NameError> {
    check_authz_name("role", name)
}

/// Checks a permission name against the charset.
pub fn check_permission(name: &str) -> Result<(), NameError> {
    check_authz_name("permission", name)
}

/// True when `name` is a valid role or permission name.
pub fn is_authz_name(name: &str) -> bool {
    (1..=MAX_AUTHZ_NAME_BYTES).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || AUTHZ_NAME_CHARS.as_bytes().contains(&b))
}

fn check_authz_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if is_authz_name(name) {
        Ok(())
    } else {
        Err(NameError::AuthzName {
            kind,
            name: name.to_owned(),
        })
    }
}

/// True for a character a username may hold.
fn visible_in_username(c: char) -> bool {
    use GeneralCategory as G;
    match c.general_category() {
        G::Control
        | G::Format
        | G::Surrogate
        | G::PrivateUse
        | G::Unassigned
        | G::LineSeparator
        | G::ParagraphSeparator => false,
        // U+00A0, U+2009, U+3000…: look like a space but are not the same name.
        G::SpaceSeparator => c == ' ',
        _ => !default_ignorable(c),
    }
}

/// Default-ignorable code points (Unicode `DerivedCoreProperties.txt`) that are not already
/// `Cf`: rendered as nothing, so two names differing only by them look identical. Listed by
/// hand because no maintained crate exposes this property alone; the list is short and stable.
fn default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x034F                   // combining grapheme joiner
        | 0x115F..=0x1160        // Hangul choseong/jungseong fillers
        | 0x17B4..=0x17B5        // Khmer inherent vowels
        | 0x180B..=0x180F        // Mongolian free variation selectors
        | 0x3164                 // Hangul filler
        | 0xFE00..=0xFE0F        // variation selectors
        | 0xFFA0                 // halfwidth Hangul filler
        | 0xE0100..=0xE01EF // variation selectors supplement
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_normalised_to_nfc() {
        let decomposed = "jose\u{301}";
        let composed = "jos\u{e9}";
        assert_eq!(login_username(decomposed), Ok(composed.to_owned()));
        assert_eq!(new_username(decomposed), Ok(composed.to_owned()));
        assert_eq!(new_username("Alice Smith"), Ok("Alice Smith".to_owned()));
        assert_eq!(new_username("名前"), Ok("名前".to_owned()));
    }

    #[test]
    fn invisible_and_control_characters_are_refused() {
        for bad in [
            "al\u{200B}ice", // zero-width space
            "al\u{200D}ice", // zero-width joiner
            "al\u{FEFF}ice", // BOM
            "al\u{202E}ice", // right-to-left override
            "al\u{2066}ice", // left-to-right isolate
            "al\u{00AD}ice", // soft hyphen
            "al\u{034F}ice", // combining grapheme joiner
            "al\u{3164}ice", // Hangul filler
            "al\u{FE0F}ice", // variation selector
            "al\u{00A0}ice", // no-break space
            "al\u{3000}ice", // ideographic space
            "al\u{2028}ice", // line separator
            "al\u{E000}ice", // private use
            "al\u{0378}ice", // unassigned
            "al\nice",
            "al\tice",
            "al\u{7F}ice",
            "al\u{85}ice",
        ] {
            assert!(
                matches!(login_username(bad), Err(NameError::UsernameCharacter(_))),
                "{bad:?}"
            );
        }
        for bad in ["", " alice", "alice ", &"a".repeat(257)] {
            assert!(new_username(bad).is_err(), "{bad:?}");
        }
        // 256 bytes after NFC pass; the bound is on the stored form.
        assert!(new_username(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn actor_names_are_reserved_in_any_case_but_only_for_new_users() {
        for name in ["cli", "CLI", "System", "system"] {
            assert!(matches!(new_username(name), Err(NameError::Reserved(_))));
            assert!(login_username(name).is_ok());
        }
        assert!(new_username("clio").is_ok());
    }

    #[test]
    fn roles_and_permissions_keep_to_their_charset() {
        for good in ["admin", "docs:write", "team/a.b_c-d", &"r".repeat(64)] {
            assert!(check_role(good).is_ok(), "{good}");
            assert!(check_permission(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "editor,admin",
            "a\r\nX-Evil: 1",
            "a b",
            "é",
            "a;b",
            "a*",
            &"r".repeat(65),
        ] {
            assert!(check_role(bad).is_err(), "{bad:?}");
            assert!(check_permission(bad).is_err(), "{bad:?}");
        }
        let message = check_role("a,b").unwrap_err().to_string();
        assert!(message.starts_with("role \"a,b\""), "{message}");
    }
}
