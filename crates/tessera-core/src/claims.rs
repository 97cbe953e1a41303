//! Access-token claims: issuing them here, and the verifying side re-exported from
//! [`tessera_token::claims`] (the one place their rules live).

use crate::jws;
use crate::keys::{KeyError, KeySet};

pub use tessera_token::claims::{AccessClaims, ClaimRules, Confirmation, decode, verify};

/// Signs `claims` as an access token with the current key of `keys`.
pub fn issue(keys: &KeySet, claims: &AccessClaims) -> Result<String, KeyError> {
    // Room for typical claims up front, so serializing does not grow the buffer step by step.
    let mut payload = Vec::with_capacity(512);
    serde_json::to_writer(&mut payload, claims).map_err(|_| KeyError::INVALID_MATERIAL)?;
    jws::sign(keys.current(), jws::ACCESS_TOKEN_TYPE, &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{Algorithm, KeyRecord};
    use crate::{TokenError, UnixTime};

    fn rules() -> ClaimRules {
        ClaimRules {
            issuer: "https://tessera.test".into(),
            audience: "apps".into(),
            leeway: 30,
        }
    }

    fn claims(now: UnixTime) -> AccessClaims {
        AccessClaims {
            iss: "https://tessera.test".into(),
            aud: "apps".into(),
            sub: "u1".into(),
            sid: "s1".into(),
            name: "alice".into(),
            roles: vec!["admin".into()],
            perms: vec!["read".into()],
            iat: now,
            nbf: now,
            exp: now + 600,
            jti: "j1".into(),
            amr: crate::assurance::Methods::PASSWORD,
            acr: None,
            auth_time: None,
            cnf: None,
        }
    }

    fn keys() -> KeySet {
        let record = KeyRecord::generate(Algorithm::EdDsa, 0).unwrap();
        KeySet::new(&record, &[]).unwrap()
    }

    #[test]
    fn valid_token_verifies_and_round_trips_claims() {
        let keys = keys();
        let token = issue(&keys, &claims(1000)).unwrap();
        assert_eq!(verify(&token, &keys, &rules(), 1000).unwrap(), claims(1000));
    }

    #[test]
    fn expiry_and_not_before_honour_the_leeway() {
        let keys = keys();
        let token = issue(&keys, &claims(1000)).unwrap();
        assert!(verify(&token, &keys, &rules(), 1600 + 29).is_ok());
        assert_eq!(
            verify(&token, &keys, &rules(), 1600 + 30),
            Err(TokenError::Expired)
        );
        assert!(verify(&token, &keys, &rules(), 1000 - 30).is_ok());
        assert_eq!(
            verify(&token, &keys, &rules(), 1000 - 31),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let keys = keys();
        let mut c = claims(1000);
        c.iss = "https://evil.test".into();
        assert_eq!(
            verify(&issue(&keys, &c).unwrap(), &keys, &rules(), 1000),
            Err(TokenError::WrongIssuer)
        );
        let mut c = claims(1000);
        c.aud = "other".into();
        assert_eq!(
            verify(&issue(&keys, &c).unwrap(), &keys, &rules(), 1000),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn wrongly_typed_or_missing_time_claims_are_malformed() {
        let keys = keys();
        let mut value = serde_json::to_value(claims(1000)).unwrap();
        value["exp"] = serde_json::json!("9999999999");
        assert_eq!(
            signed_and_verified(&keys, value.to_string().as_bytes()),
            Err(TokenError::Malformed)
        );
        value.as_object_mut().unwrap().remove("exp");
        assert_eq!(
            signed_and_verified(&keys, value.to_string().as_bytes()),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn large_claims_verify_like_small_ones() {
        // Claims too large for the stack buffer are parsed from the heap, with the same rules.
        let keys = keys();
        let mut c = claims(1000);
        c.perms = (0..200).map(|i| format!("docs:read:{i}")).collect();
        let token = issue(&keys, &c).unwrap();
        assert!(token.len() > 3000);
        assert_eq!(verify(&token, &keys, &rules(), 1000).unwrap(), c);
        assert_duplicate_sub_is_malformed(&keys, &c);
    }

    /// `claims` signed with a second `sub` after the first is refused as malformed.
    fn assert_duplicate_sub_is_malformed(keys: &KeySet, claims: &AccessClaims) {
        let json = serde_json::to_string(claims).unwrap().replacen(
            "\"sub\":\"u1\"",
            "\"sub\":\"u1\",\"sub\":\"admin\"",
            1,
        );
        assert_eq!(
            signed_and_verified(keys, json.as_bytes()),
            Err(TokenError::Malformed)
        );
    }

    /// `payload` signed as an access token with the current key, then verified at 1000.
    fn signed_and_verified(keys: &KeySet, payload: &[u8]) -> Result<AccessClaims, TokenError> {
        let token = jws::sign(keys.current(), jws::ACCESS_TOKEN_TYPE, payload).unwrap();
        verify(&token, keys, &rules(), 1000)
    }

    #[test]
    fn duplicate_claims_are_malformed() {
        assert_duplicate_sub_is_malformed(&keys(), &claims(1000));
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn any_claims() -> impl Strategy<Value = AccessClaims> {
            (
                ("\\PC{0,40}", "\\PC{0,40}", "[a-zA-Z0-9_-]{1,22}"),
                ("\\PC{0,64}", proptest::collection::vec("\\PC{0,16}", 0..4)),
                (0i64..4_000_000_000, 1i64..100_000),
            )
                .prop_map(|((iss, aud, sub), (name, roles), (iat, life))| {
                    AccessClaims {
                        iss,
                        aud,
                        sid: format!("s-{sub}"),
                        jti: format!("j-{sub}"),
                        amr: crate::assurance::Methods::PASSWORD,
                        acr: None,
                        auth_time: None,
                        cnf: None,
                        sub,
                        name,
                        perms: roles.iter().map(|r| format!("{r}:read")).collect(),
                        roles,
                        iat,
                        nbf: iat,
                        exp: iat + life,
                    }
                })
        }

        fn any_algorithm() -> impl Strategy<Value = Algorithm> {
            prop_oneof![
                Just(Algorithm::EdDsa),
                Just(Algorithm::Es256),
                Just(Algorithm::Hs256)
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any single-bit change anywhere in a valid token is refused, whatever the
            /// claims and the algorithm.
            #[test]
            fn any_single_bit_flip_of_a_valid_token_is_refused(
                claims in any_claims(),
                alg in any_algorithm(),
                position in any::<prop::sample::Index>(),
                bit in 0u8..8,
            ) {
                let record = KeyRecord::generate(alg, 0).unwrap();
                let keys = KeySet::new(&record, &[]).unwrap();
                let rules = ClaimRules {
                    issuer: claims.iss.clone(),
                    audience: claims.aud.clone(),
                    leeway: 0,
                };
                let token = issue(&keys, &claims).unwrap();
                prop_assert_eq!(verify(&token, &keys, &rules, claims.iat), Ok(claims.clone()));
                let mut bytes = token.into_bytes();
                let i = position.index(bytes.len());
                bytes[i] ^= 1 << bit;
                if let Ok(flipped) = String::from_utf8(bytes) {
                    prop_assert!(verify(&flipped, &keys, &rules, claims.iat).is_err());
                }
            }
        }
    }
}
