//! How a user signed in: the authentication methods of a session (`amr`, RFC 8176), the
//! assurance level they reach (AAL1/AAL2 of NIST SP 800-63B) and the step-up rules that ask for
//! more (`aal`, `max_age`: the two parameters of RFC 9470's step-up challenge).
//!
//! A session is created by one authentication and never changes its methods: a step-up starts a
//! new session, so `auth_time` is the session's creation time.

use std::fmt;

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde::ser::{SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use crate::UnixTime;

/// One authentication method, named as RFC 8176 registers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Method {
    /// A password (`pwd`).
    Password,
    /// A one-time password (`otp`): a TOTP code, or a single-use recovery code.
    OneTimeCode,
    /// Proof of possession of a hardware-protected key (`hwk`): a passkey on a security key.
    HardwareKey,
    /// Proof of possession of a software-protected key (`swk`): a synced passkey.
    SoftwareKey,
    /// User verification by the authenticator, with a PIN or biometrics (`user`).
    UserVerified,
}

impl Method {
    /// Every method, in the order their names are listed.
    pub const ALL: [Method; 5] = [
        Method::Password,
        Method::OneTimeCode,
        Method::HardwareKey,
        Method::SoftwareKey,
        Method::UserVerified,
    ];

    /// The RFC 8176 name.
    pub const fn name(self) -> &'static str {
        match self {
            Method::Password => "pwd",
            Method::OneTimeCode => "otp",
            Method::HardwareKey => "hwk",
            Method::SoftwareKey => "swk",
            Method::UserVerified => "user",
        }
    }

    const fn bit(self) -> u8 {
        match self {
            Method::Password => 1,
            Method::OneTimeCode => 2,
            Method::HardwareKey => 4,
            Method::SoftwareKey => 8,
            Method::UserVerified => 16,
        }
    }

    /// The method with this RFC 8176 name, if tessera knows it.
    pub fn from_name(name: &str) -> Option<Method> {
        Method::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// The set of methods a session was authenticated with (its `amr`).
///
/// Stored as a small integer ([`Methods::bits`]) and carried in JWTs as an array of names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Methods(u8);

impl Methods {
    /// No method: a session whose methods are unknown (a token from before tessera recorded
    /// them). It reaches no level above AAL1 and satisfies no step-up rule.
    pub const NONE: Methods = Methods(0);
    /// A password alone: what every session was before factors existed.
    pub const PASSWORD: Methods = Methods(Method::Password.bit());

    /// These methods and `method`.
    #[must_use]
    pub const fn with(self, method: Method) -> Methods {
        Methods(self.0 | method.bit())
    }

    /// These methods and `other`'s.
    #[must_use]
    pub const fn union(self, other: Methods) -> Methods {
        Methods(self.0 | other.0)
    }

    /// Whether `method` is among them.
    pub const fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// The stored form.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// The methods of a stored value; bits tessera does not know are dropped.
    pub fn from_bits(bits: u8) -> Methods {
        let known = Method::ALL.iter().fold(0, |all, m| all | m.bit());
        Methods(bits & known)
    }

    /// The methods, in [`Method::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Method> {
        Method::ALL.into_iter().filter(move |m| self.contains(*m))
    }

    /// The RFC 8176 names, as a JWT's `amr` lists them.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Method::name).collect()
    }

    /// The assurance level these methods reach (NIST SP 800-63B §4).
    ///
    /// AAL2 needs two factors of different kinds: something known (a password) with something
    /// held (a one-time code or a passkey), or a passkey that verified its user (a
    /// multi-factor cryptographic authenticator). Anything less is AAL1.
    pub fn level(self) -> Aal {
        let held = self.contains(Method::OneTimeCode)
            || self.contains(Method::HardwareKey)
            || self.contains(Method::SoftwareKey);
        let known = self.contains(Method::Password);
        let verified_key = (self.contains(Method::HardwareKey)
            || self.contains(Method::SoftwareKey))
            && self.contains(Method::UserVerified);
        if (held && known) || verified_key {
            Aal::Aal2
        } else {
            Aal::Aal1
        }
    }
}

impl Serialize for Methods {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for method in self.iter() {
            seq.serialize_element(method.name())?;
        }
        seq.end()
    }
}

/// Names tessera does not know (a later version's methods) are ignored: they cannot raise the
/// level a verifier computes, since only known methods count.
impl<'de> Deserialize<'de> for Methods {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NamesVisitor;
        impl<'de> Visitor<'de> for NamesVisitor {
            type Value = Methods;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an array of authentication method names")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Methods, A::Error> {
                let mut methods = Methods::NONE;
                while let Some(name) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
                    if let Some(method) = Method::from_name(&name) {
                        methods = methods.with(method);
                    }
                }
                Ok(methods)
            }
        }
        deserializer.deserialize_seq(NamesVisitor)
    }
}

/// An authenticator assurance level (NIST SP 800-63B).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Aal {
    /// One factor.
    Aal1,
    /// Two factors of different kinds, or a multi-factor authenticator.
    Aal2,
}

impl Aal {
    /// The level as a number (1 or 2), as `?aal=` and the rules take it.
    pub const fn number(self) -> u8 {
        match self {
            Aal::Aal1 => 1,
            Aal::Aal2 => 2,
        }
    }

    /// The level of a number; `None` outside 1..=2.
    pub const fn from_number(n: u8) -> Option<Aal> {
        match n {
            1 => Some(Aal::Aal1),
            2 => Some(Aal::Aal2),
            _ => None,
        }
    }

    /// The JWT `acr` value: `aal1` or `aal2`.
    pub const fn acr(self) -> &'static str {
        match self {
            Aal::Aal1 => "aal1",
            Aal::Aal2 => "aal2",
        }
    }
}

/// What a request needs of how its session was authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requirement {
    /// The least assurance level, if any.
    pub aal: Option<Aal>,
    /// The longest time since the authentication, in seconds, if any.
    pub max_age: Option<i64>,
}

/// What a session lacks to meet a [`Requirement`]: the step-up to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUp {
    /// A second factor is missing (the level is below the one required).
    pub second_factor: bool,
    /// The authentication is older than `max_age`: the user must sign in again.
    pub reauthenticate: bool,
    /// The requirement, echoed in the challenge.
    pub required: Requirement,
}

impl StepUp {
    /// What to tell the user: what is missing.
    pub fn detail(&self) -> &'static str {
        match (self.second_factor, self.reauthenticate) {
            (true, true) => "sign in again, with a second factor",
            (true, false) => "a second factor is required",
            _ => "the sign-in is too old for this request: sign in again",
        }
    }

    /// The `WWW-Authenticate` value of RFC 9470's step-up challenge:
    /// `insufficient_user_authentication` with the `acr_values` and `max_age` that would do.
    /// Only fixed text and numbers, so always a valid header value.
    pub fn challenge(&self) -> String {
        let mut value = String::from(
            "Bearer error=\"insufficient_user_authentication\", \
             error_description=\"a stronger or more recent authentication is required\"",
        );
        if let Some(aal) = self.required.aal {
            value.push_str(", acr_values=\"");
            value.push_str(aal.acr());
            value.push('"');
        }
        if let Some(max_age) = self.required.max_age {
            value.push_str(", max_age=");
            value.push_str(&max_age.to_string());
        }
        value
    }
}

impl Requirement {
    /// No requirement.
    pub const NONE: Requirement = Requirement {
        aal: None,
        max_age: None,
    };

    /// Whether anything is required.
    pub fn is_none(&self) -> bool {
        self.aal.is_none() && self.max_age.is_none()
    }

    /// The stricter of two requirements: the higher level and the shorter age.
    #[must_use]
    pub fn and(self, other: Requirement) -> Requirement {
        Requirement {
            aal: self.aal.max(other.aal),
            max_age: match (self.max_age, other.max_age) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        }
    }

    /// Checks a session authenticated with `methods` at `auth_time` at `now`; the step-up
    /// needed when it falls short.
    ///
    /// An `auth_time` in the future (clock skew between instances) counts as now.
    pub fn check(
        &self,
        methods: Methods,
        auth_time: UnixTime,
        now: UnixTime,
    ) -> Result<(), StepUp> {
        let second_factor = self.aal.is_some_and(|aal| methods.level() < aal);
        let reauthenticate = self
            .max_age
            .is_some_and(|max_age| now.saturating_sub(auth_time) > max_age);
        if second_factor || reauthenticate {
            Err(StepUp {
                second_factor,
                reauthenticate,
                required: *self,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_the_kinds_of_factor() {
        let pwd = Methods::PASSWORD;
        assert_eq!(pwd.level(), Aal::Aal1);
        assert_eq!(pwd.with(Method::OneTimeCode).level(), Aal::Aal2);
        assert_eq!(pwd.with(Method::HardwareKey).level(), Aal::Aal2);
        // Two of the same kind are still one factor; a code alone is one factor.
        assert_eq!(Methods::NONE.with(Method::OneTimeCode).level(), Aal::Aal1);
        // A passkey alone is AAL2 only when it verified its user.
        let key = Methods::NONE.with(Method::SoftwareKey);
        assert_eq!(key.level(), Aal::Aal1);
        assert_eq!(key.with(Method::UserVerified).level(), Aal::Aal2);
        assert_eq!(Methods::NONE.with(Method::UserVerified).level(), Aal::Aal1);
        assert_eq!(Methods::NONE.level(), Aal::Aal1);
    }

    #[test]
    fn names_round_trip_and_unknown_ones_are_dropped() {
        let m = Methods::PASSWORD.with(Method::OneTimeCode);
        let json = serde_json::to_string(&m).unwrap_or_default();
        assert_eq!(json, r#"["pwd","otp"]"#);
        assert_eq!(serde_json::from_str::<Methods>(&json).ok(), Some(m));
        let later: Methods = serde_json::from_str(r#"["pwd","face","mfa"]"#).unwrap_or_default();
        assert_eq!(later, Methods::PASSWORD);
        assert!(serde_json::from_str::<Methods>(r#""pwd""#).is_err());
        assert!(serde_json::from_str::<Methods>("[1]").is_err());
        for bits in 0..=u8::MAX {
            let m = Methods::from_bits(bits);
            assert_eq!(Methods::from_bits(m.bits()), m);
            assert!(m.bits() < 32, "unknown bits are dropped: {bits}");
        }
    }

    #[test]
    fn requirements_ask_for_what_is_missing_and_nothing_else() {
        let need = Requirement {
            aal: Some(Aal::Aal2),
            max_age: Some(600),
        };
        let pwd = Methods::PASSWORD;
        let both = pwd.with(Method::OneTimeCode);
        assert_eq!(need.check(both, 1000, 1600), Ok(()));
        let late = need.check(both, 1000, 1601).err();
        assert_eq!(
            late.map(|s| (s.second_factor, s.reauthenticate)),
            Some((false, true))
        );
        let weak = need.check(pwd, 1000, 1000).err();
        assert_eq!(
            weak.map(|s| (s.second_factor, s.reauthenticate)),
            Some((true, false))
        );
        // An auth_time ahead of the clock is not "older than max_age".
        assert_eq!(need.check(both, 2000, 1000), Ok(()));
        assert_eq!(Requirement::NONE.check(Methods::NONE, 0, i64::MAX), Ok(()));
    }

    #[test]
    fn the_challenge_names_what_would_do() {
        let step_up = Requirement {
            aal: Some(Aal::Aal2),
            max_age: Some(600),
        }
        .check(Methods::PASSWORD, 0, 601)
        .err();
        let challenge = step_up.map(|s| s.challenge()).unwrap_or_default();
        assert!(challenge.starts_with("Bearer error=\"insufficient_user_authentication\""));
        assert!(
            challenge.ends_with(", acr_values=\"aal2\", max_age=600"),
            "{challenge}"
        );
        let only_age = Requirement {
            aal: None,
            max_age: Some(60),
        }
        .check(Methods::PASSWORD, 0, 61)
        .err();
        let challenge = only_age.map(|s| s.challenge()).unwrap_or_default();
        assert!(!challenge.contains("acr_values") && challenge.ends_with("max_age=60"));
    }

    #[test]
    fn the_stricter_requirement_wins() {
        let a = Requirement {
            aal: Some(Aal::Aal2),
            max_age: None,
        };
        let b = Requirement {
            aal: Some(Aal::Aal1),
            max_age: Some(60),
        };
        let both = a.and(b);
        assert_eq!(both.aal, Some(Aal::Aal2));
        assert_eq!(both.max_age, Some(60));
        assert_eq!(
            b.and(Requirement {
                aal: None,
                max_age: Some(30)
            })
            .max_age,
            Some(30)
        );
        assert!(Requirement::NONE.and(Requirement::NONE).is_none());
    }
}
