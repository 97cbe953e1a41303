//! Device Bound Session Credentials (W3C DBSC draft): the headers a server sends and the JWTs
//! a browser answers with, checked. The revision followed is the explainer of
//! `w3c/webappsec-dbsc` at commit `d346811` (2026), with the header names Chromium 156 uses:
//! `Secure-Session-Registration`, `Secure-Session-Challenge`, `Secure-Session-Response`,
//! `Sec-Secure-Session-Id`.
//!
//! - Registration: the server offers `Secure-Session-Registration: (ES256);path="…";challenge="…"`;
//!   the browser makes a key and posts to `path` a JWT (`typ: dbsc+jwt`, the public key as `jwk`
//!   in the header, the challenge as `jti`) signed by it: [`check_registration`].
//! - Refresh: the browser posts `Sec-Secure-Session-Id`; the server answers 403 with
//!   `Secure-Session-Challenge: "…";id="…"`; the browser posts again with a JWT (`typ:
//!   dbsc+jwt`, the challenge as `jti`) signed by the registered key: [`check_refresh`].
//!
//! What this module does not do, because it needs state: issuing challenges and accepting each
//! once, keeping the registered key with the session, and the cookies (the server's
//! `service::dbsc`).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::b64;
use crate::dpop::{DpopError, SelfSigned, check_self_signed, strict_object, verified_payload};
use crate::jws::Segments;
use crate::keys::Algorithm;

/// The `typ` of a DBSC JWT.
pub const JWT_TYPE: &str = "dbsc+jwt";

/// The algorithms tessera offers browsers: ES256 only (every DBSC browser supports it; RSA
/// would bring a second, slower key type for nothing).
pub const ALGORITHMS: [&str; 1] = ["ES256"];

/// Longest challenge accepted back, in bytes.
const MAX_CHALLENGE_LEN: usize = 256;

fn algorithm(alg: &str) -> Option<Algorithm> {
    (alg == "ES256").then_some(Algorithm::Es256)
}

/// A structured-field string (RFC 8941 §3.3.3): `"` and `\` escaped; `None` for anything but
/// printable ASCII.
fn sf_string(text: &str) -> Option<String> {
    if !text.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// The value of `Secure-Session-Registration` offering a registration at `path` with
/// `challenge`; `None` when either is not printable ASCII.
pub fn registration_header(path: &str, challenge: &str) -> Option<String> {
    Some(format!(
        "({});path={};challenge={}",
        ALGORITHMS.join(" "),
        sf_string(path)?,
        sf_string(challenge)?
    ))
}

/// The value of `Secure-Session-Challenge` asking session `session_id` to sign `challenge`;
/// `None` when either is not printable ASCII.
pub fn challenge_header(challenge: &str, session_id: &str) -> Option<String> {
    Some(format!(
        "{};id={}",
        sf_string(challenge)?,
        sf_string(session_id)?
    ))
}

/// A registration whose JWT checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    /// The browser's new public key, as a JWK: keep it with the session to check refreshes.
    pub jwk: Map<String, Value>,
    /// Its RFC 7638 thumbprint.
    pub jkt: String,
    /// The challenge it signed (`jti`): the caller checks it issued it, and accepts it once.
    pub challenge: String,
    /// The `authorization` value of the registration header, echoed, if there was one.
    pub authorization: Option<String>,
}

/// The claims of a DBSC JWT tessera reads; others are allowed and ignored.
#[derive(Deserialize)]
struct Claims {
    jti: String,
    authorization: Option<String>,
}

fn claims(payload: &[u8]) -> Result<Claims, DpopError> {
    let claims: Claims = strict_object(payload)?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_CHALLENGE_LEN {
        return Err(DpopError::Mismatch("jti"));
    }
    Ok(claims)
}

/// Checks the `Secure-Session-Response` of a registration: a JWT with `typ: dbsc+jwt`, `alg`
/// ES256 and the browser's new public key as `jwk` (nothing else in the header), signed by
/// that key, with the challenge as `jti`.
///
/// # Security
/// The key comes from the JWT itself: the signature proves the browser holds it, nothing more.
/// The caller binds the registration to a session by the challenge, which it issued for that
/// session and accepts once.
pub fn check_registration(jwt: &str) -> Result<Registration, DpopError> {
    let SelfSigned { jkt, jwk, payload } = check_self_signed(jwt, JWT_TYPE, algorithm)?;
    let Claims { jti, authorization } = claims(&payload)?;
    Ok(Registration {
        jwk,
        jkt,
        challenge: jti,
        authorization,
    })
}

/// The header of a refresh JWT: the key is the registered one, so no `jwk` is needed; any
/// other member is ignored except `crit`, which asks for what tessera does not do.
#[derive(Deserialize)]
struct RefreshHeader {
    typ: String,
    alg: String,
    crit: Option<Value>,
}

/// Checks the `Secure-Session-Response` of a refresh against the key registered for the
/// session (`registered`, as [`Registration::jwk`] gave it): `typ: dbsc+jwt`, `alg` ES256, the
/// signature by that key. Returns the challenge it signed (`jti`), which the caller checks it
/// issued for this session and accepts once.
pub fn check_refresh(jwt: &str, registered: &Map<String, Value>) -> Result<String, DpopError> {
    let segments = Segments::split(jwt).map_err(|_| DpopError::Malformed)?;
    let header_bytes = b64::decode(segments.header).ok_or(DpopError::Malformed)?;
    let header: RefreshHeader = strict_object(&header_bytes)?;
    if header.typ != JWT_TYPE {
        return Err(DpopError::Header(format!("typ {:?}", header.typ)));
    }
    if header.crit.is_some() {
        return Err(DpopError::Header("crit".into()));
    }
    let (_, payload) = verified_payload(&segments, &header.alg, algorithm, registered)?;
    Ok(claims(&payload)?.jti)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;
    use crate::dpop::thumbprint;
    use crate::test_keys::ClientKey;

    /// A browser's key answers as the draft says.
    impl ClientKey {
        fn registration(&self, challenge: &str) -> String {
            self.sign(
                &json!({ "typ": JWT_TYPE, "alg": "ES256", "jwk": self.jwk() }),
                &json!({ "jti": challenge }),
            )
        }

        fn refresh(&self, challenge: &str) -> String {
            self.sign(
                &json!({ "typ": JWT_TYPE, "alg": "ES256" }),
                &json!({ "jti": challenge }),
            )
        }
    }

    #[test]
    fn headers_are_structured_fields_as_the_draft_shows_them() {
        assert_eq!(
            registration_header("/v1/dbsc/registration", "c-1").as_deref(),
            Some(r#"(ES256);path="/v1/dbsc/registration";challenge="c-1""#)
        );
        assert_eq!(
            challenge_header("c-2", "s1").as_deref(),
            Some(r#""c-2";id="s1""#)
        );
        assert_eq!(
            challenge_header(r#"a"b\c"#, "s").as_deref(),
            Some(r#""a\"b\\c";id="s""#)
        );
        assert_eq!(challenge_header("line\nbreak", "s"), None);
        assert_eq!(registration_header("/p", "é"), None);
    }

    #[test]
    fn a_registration_names_its_key_and_challenge_and_a_refresh_needs_that_key() {
        let browser = ClientKey::p256();
        let registered = check_registration(&browser.registration("c-1")).unwrap();
        assert_eq!(registered.challenge, "c-1");
        assert_eq!(registered.authorization, None);
        assert_eq!(Value::Object(registered.jwk.clone()), browser.jwk());
        assert_eq!(
            registered.jkt,
            thumbprint(browser.jwk().as_object().unwrap()).unwrap()
        );
        assert_eq!(
            check_refresh(&browser.refresh("c-2"), &registered.jwk),
            Ok("c-2".to_owned())
        );
        // A refresh signed by another key: a stolen cookie with a key of the thief's.
        let thief = ClientKey::p256();
        assert_eq!(
            check_refresh(&thief.refresh("c-2"), &registered.jwk),
            Err(DpopError::Signature)
        );
    }

    #[test]
    fn jwts_that_are_not_dbsc_registrations_are_refused() {
        let browser = ClientKey::p256();
        let refused =
            |header: Value, claims: Value| check_registration(&browser.sign(&header, &claims));
        let good = json!({ "typ": JWT_TYPE, "alg": "ES256", "jwk": browser.jwk() });
        let jti = json!({ "jti": "c" });
        for (what, header) in [
            (
                "a DPoP typ",
                json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": browser.jwk() }),
            ),
            (
                "RS256, not offered",
                json!({ "typ": JWT_TYPE, "alg": "RS256", "jwk": browser.jwk() }),
            ),
            (
                "none",
                json!({ "typ": JWT_TYPE, "alg": "none", "jwk": browser.jwk() }),
            ),
            ("no key", json!({ "typ": JWT_TYPE, "alg": "ES256" })),
        ] {
            assert!(refused(header, jti.clone()).is_err(), "{what}");
        }
        let mut private = good.clone();
        private["jwk"]["d"] = json!(b64::encode(&[7u8; 32]));
        assert!(refused(private, jti.clone()).is_err(), "a private key");
        assert_eq!(
            refused(good.clone(), json!({})),
            Err(DpopError::Malformed),
            "no jti"
        );
        for claims in [json!({ "jti": "" }), json!({ "jti": "x".repeat(300) })] {
            assert_eq!(
                refused(good.clone(), claims.clone()),
                Err(DpopError::Mismatch("jti")),
                "{claims}"
            );
        }
        // Altered after signing.
        let jwt = browser.registration("c");
        let (head, rest) = jwt.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let altered = format!(
            "{head}.{}.{signature}",
            b64::encode(json!({ "jti": "d" }).to_string().as_bytes())
        );
        assert_eq!(check_registration(&altered), Err(DpopError::Signature));
        // A refresh JWT asking for extensions, or of another type, is refused.
        let registered = check_registration(&browser.registration("c")).unwrap().jwk;
        let crit = browser.sign(
            &json!({ "typ": JWT_TYPE, "alg": "ES256", "crit": ["x"], "x": 1 }),
            &json!({ "jti": "c" }),
        );
        assert!(check_refresh(&crit, &registered).is_err());
        let dpop = browser.sign(
            &json!({ "typ": "dpop+jwt", "alg": "ES256" }),
            &json!({ "jti": "c" }),
        );
        assert!(check_refresh(&dpop, &registered).is_err());
    }
}
