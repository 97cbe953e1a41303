//! Access-token claims and the rules that check them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::json::{Name, Unique};
use crate::keys::VerifyingKeys;
use crate::{TokenError, UnixTime, jws};

/// The claims of a tessera access token (RFC 9068 profile plus tessera's own).
///
/// Parsing refuses a missing, duplicated or wrongly typed claim of this list (every time claim
/// must be an integer: a wrongly typed `exp` is malformed, never "absent"), and accepts claims
/// outside it, which a later tessera may add, as long as they too appear once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessClaims {
    /// Issuer: this tessera deployment.
    pub iss: String,
    /// Audience: the services that accept these tokens.
    pub aud: String,
    /// Subject: the user id.
    pub sub: String,
    /// Session id: what revocation is keyed on (never the token bytes, which are malleable).
    pub sid: String,
    /// The user's name, for display and identity headers.
    pub name: String,
    /// Roles held when the token was issued.
    pub roles: Vec<String>,
    /// Effective permissions when the token was issued.
    pub perms: Vec<String>,
    /// Issued at.
    pub iat: UnixTime,
    /// Not before.
    pub nbf: UnixTime,
    /// Expires at.
    pub exp: UnixTime,
    /// Unique token id.
    pub jti: String,
}

/// What every access token must satisfy besides its signature.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// Tolerated clock skew, in seconds, for `exp` and `nbf`.
    pub leeway: i64,
}

impl ClaimRules {
    /// Checks issuer, audience and the validity window at `now`.
    pub fn check(&self, claims: &AccessClaims, now: UnixTime) -> Result<(), TokenError> {
        if claims.iss != self.issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != self.audience {
            return Err(TokenError::WrongAudience);
        }
        if claims.nbf > now.saturating_add(self.leeway) {
            return Err(TokenError::NotYetValid);
        }
        if claims.exp <= now.saturating_sub(self.leeway) {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// Verifies an access token's signature (with `typ` `at+jwt`) and claims at `now`.
pub fn verify(
    token: &str,
    keys: &impl AsRef<VerifyingKeys>,
    rules: &ClaimRules,
    now: UnixTime,
) -> Result<AccessClaims, TokenError> {
    let claims = jws::verify_then(token, keys.as_ref(), jws::ACCESS_TOKEN_TYPE, decode)?;
    rules.check(&claims, now)?;
    Ok(claims)
}

/// Parses a verified payload as access-token claims.
///
/// # Security
/// The payload must be a UTF-8 JSON object holding each of tessera's claims once and of its
/// type: a missing, duplicated or wrongly typed `exp`/`nbf`/`iat` is malformed, never treated
/// as absent (the flaw of CVE-2026-25537 in other libraries). Other members are ignored, so a
/// verifier keeps working when a later server adds a claim, but they must be valid JSON
/// without duplicate members at any depth: one token has one meaning.
pub fn decode(payload: &[u8]) -> Result<AccessClaims, TokenError> {
    jws::from_json_object(payload)
}

/// The claims [`AccessClaims`] reads, in declaration order.
const CLAIMS: [&str; 11] = [
    "iss", "aud", "sub", "sid", "name", "roles", "perms", "iat", "nbf", "exp", "jti",
];

impl<'de> Deserialize<'de> for AccessClaims {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ClaimsVisitor)
    }
}

struct ClaimsVisitor;

/// Stores a claim's value, refusing a second one.
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T, name: &'static str) -> Result<(), E> {
    match slot {
        Some(_) => Err(E::duplicate_field(name)),
        None => {
            *slot = Some(value);
            Ok(())
        }
    }
}

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = AccessClaims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object of access-token claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AccessClaims, A::Error> {
        let (mut iss, mut aud, mut sub, mut sid, mut name, mut jti) =
            (None, None, None, None, None, None);
        let (mut roles, mut perms) = (None, None);
        let (mut iat, mut nbf, mut exp) = (None, None, None);
        // Names of the other members (no allocation until there is one).
        let mut others: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Name(member)) = map.next_key::<Name<'de>>()? {
            match CLAIMS.iter().position(|claim| *claim == member) {
                Some(0) => once(&mut iss, map.next_value()?, "iss")?,
                Some(1) => once(&mut aud, map.next_value()?, "aud")?,
                Some(2) => once(&mut sub, map.next_value()?, "sub")?,
                Some(3) => once(&mut sid, map.next_value()?, "sid")?,
                Some(4) => once(&mut name, map.next_value()?, "name")?,
                Some(5) => once(&mut roles, map.next_value()?, "roles")?,
                Some(6) => once(&mut perms, map.next_value()?, "perms")?,
                Some(7) => once(&mut iat, map.next_value()?, "iat")?,
                Some(8) => once(&mut nbf, map.next_value()?, "nbf")?,
                Some(9) => once(&mut exp, map.next_value()?, "exp")?,
                Some(_) => once(&mut jti, map.next_value()?, "jti")?,
                None => {
                    if !others.insert(member) {
                        return Err(de::Error::custom("duplicate claim"));
                    }
                    map.next_value_seed(Unique)?;
                }
            }
        }
        Ok(AccessClaims {
            iss: iss.ok_or_else(|| de::Error::missing_field("iss"))?,
            aud: aud.ok_or_else(|| de::Error::missing_field("aud"))?,
            sub: sub.ok_or_else(|| de::Error::missing_field("sub"))?,
            sid: sid.ok_or_else(|| de::Error::missing_field("sid"))?,
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            roles: roles.ok_or_else(|| de::Error::missing_field("roles"))?,
            perms: perms.ok_or_else(|| de::Error::missing_field("perms"))?,
            iat: iat.ok_or_else(|| de::Error::missing_field("iat"))?,
            nbf: nbf.ok_or_else(|| de::Error::missing_field("nbf"))?,
            exp: exp.ok_or_else(|| de::Error::missing_field("exp"))?,
            jti: jti.ok_or_else(|| de::Error::missing_field("jti"))?,
        })
    }
}
