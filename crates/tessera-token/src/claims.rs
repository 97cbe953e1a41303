//! Access-token claims and the rules that check them.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::assurance::Methods;
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
    /// How the user signed in (RFC 8176 names); empty in tokens from before tessera recorded
    /// it, which satisfy no step-up rule.
    #[serde(default)]
    pub amr: Methods,
    /// The assurance level reached (`aal1`, `aal2`), for readers that want a name; verifiers
    /// decide from `amr` ([`Methods::level`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acr: Option<String>,
    /// When the user authenticated (OpenID Connect's claim); absent in older tokens, which
    /// then meet no `max_age`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<UnixTime>,
    /// The key the token is bound to (RFC 9449 §6.1: `cnf.jkt`), when it is DPoP-bound: it is
    /// accepted only with a DPoP proof signed by that key, never as a plain bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The confirmation claim (RFC 7800) of a DPoP-bound token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// The JWK SHA-256 thumbprint (RFC 7638, base64url) of the client's key.
    pub jkt: String,
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
        let (mut amr, mut acr, mut auth_time, mut cnf) = (None, None, None, None);
        // Names of the other members (no allocation until there is one).
        let mut others: HashSet<Cow<'de, str>> = HashSet::new();
        while let Some(Name(member)) = map.next_key::<Name<'de>>()? {
            match &*member {
                "iss" => once(&mut iss, map.next_value()?, "iss")?,
                "aud" => once(&mut aud, map.next_value()?, "aud")?,
                "sub" => once(&mut sub, map.next_value()?, "sub")?,
                "sid" => once(&mut sid, map.next_value()?, "sid")?,
                "name" => once(&mut name, map.next_value()?, "name")?,
                "roles" => once(&mut roles, map.next_value()?, "roles")?,
                "perms" => once(&mut perms, map.next_value()?, "perms")?,
                "iat" => once(&mut iat, map.next_value()?, "iat")?,
                "nbf" => once(&mut nbf, map.next_value()?, "nbf")?,
                "exp" => once(&mut exp, map.next_value()?, "exp")?,
                "jti" => once(&mut jti, map.next_value()?, "jti")?,
                "amr" => once(&mut amr, map.next_value()?, "amr")?,
                "acr" => once(&mut acr, map.next_value::<String>()?, "acr")?,
                "auth_time" => once(&mut auth_time, map.next_value()?, "auth_time")?,
                "cnf" => once(&mut cnf, map.next_value::<Confirmation>()?, "cnf")?,
                _ => {
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
            amr: amr.unwrap_or_default(),
            acr,
            auth_time,
            cnf,
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "i".into(),
            aud: "a".into(),
            sub: "u".into(),
            sid: "s".into(),
            name: "n".into(),
            roles: vec!["r".into()],
            perms: vec![],
            iat: 1,
            nbf: 1,
            exp: 2,
            jti: "j".into(),
            amr: Methods::PASSWORD,
            acr: Some("aal1".into()),
            auth_time: Some(1),
            cnf: None,
        }
    }

    #[test]
    fn duplicates_are_refused_at_any_depth_and_in_any_spelling() {
        let members = serde_json::to_string(&claims()).unwrap();
        let members = &members[1..members.len() - 1];
        for prefix in [
            r#""x":1,"x":1"#,
            r#""x":{"y":[{"z":1,"z":2}]}"#,
            r#""\u0078":1,"x":2"#,
            r#""exp":2"#,
            r#""\u0065xp":2"#,
        ] {
            let text = format!("{{{prefix},{members}}}");
            assert_eq!(
                decode(text.as_bytes()),
                Err(TokenError::Malformed),
                "{text}"
            );
        }
        let text = format!(r#"{{"x":{{"y":1}},"y":{{"y":1}},{members}}}"#);
        assert_eq!(
            decode(text.as_bytes()),
            Ok(claims()),
            "same names, other objects"
        );
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-z]{1,3}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Claims tessera does not know, of any JSON value, leave the known ones as they are.
        #[test]
        fn unknown_claims_of_any_value_are_ignored(
            extra in proptest::collection::btree_map("[a-z_]{1,6}", any_json(), 0..4),
        ) {
            let mut value = serde_json::to_value(claims()).unwrap();
            for (name, extra) in extra {
                if value.get(&name).is_none() {
                    value[name] = extra;
                }
            }
            prop_assert_eq!(decode(value.to_string().as_bytes()), Ok(claims()));
        }
    }

    #[test]
    fn known_claims_keep_their_types() {
        for (name, wrong) in [
            ("iat", json!(1.5)),
            ("exp", json!("2")),
            ("roles", json!("r")),
            ("perms", json!([null])),
            ("jti", json!(null)),
        ] {
            let mut value = serde_json::to_value(claims()).unwrap();
            value[name] = wrong;
            assert_eq!(
                decode(value.to_string().as_bytes()),
                Err(TokenError::Malformed),
                "{name}"
            );
        }
    }
}
