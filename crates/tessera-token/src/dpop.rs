//! DPoP proofs (RFC 9449): the checks of §4.3 on a proof JWT, and the JWK thumbprint
//! (RFC 7638) a token is bound to.
//!
//! What this module does not do, because it needs state the caller has: remembering each
//! proof's `jti` for its lifetime (replays), issuing nonces, and finding the key a token is
//! bound to. [`check_proof`] returns what those need: the proof's `jti`, `iat` and the
//! thumbprint of its key.

use aws_lc_rs::digest;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::json::UniqueJson;
use crate::jwks::key_from_jwk;
use crate::jws::{self, Segments};
use crate::keys::Algorithm;
use crate::{UnixTime, b64};

/// The `typ` of a DPoP proof's header.
pub const PROOF_TYPE: &str = "dpop+jwt";

/// How old a proof's `iat` may be, in seconds, in tessera's server and embedded verifier: a
/// proof is made for one request, right before it (RFC 9449 §11.1 leaves the window to the
/// server; a minute covers slow networks and clocks a little apart).
pub const PROOF_MAX_AGE: i64 = 60;

/// Longest `jti` accepted, in bytes: enough for any random id, short enough to remember.
pub const MAX_JTI_LEN: usize = 256;

/// Why a proof is refused. Each is RFC 9449's `invalid_dpop_proof`, except a missing or stale
/// nonce, which is `use_dpop_nonce`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Not a compact JWS with a JSON header and payload, or oversized.
    #[error("the DPoP proof is not a well-formed JWT")]
    Malformed,
    /// The header is not `typ: dpop+jwt` with an `alg` of ES256 or EdDSA and a public `jwk`.
    #[error("the DPoP proof's header is refused: {0}")]
    Header(String),
    /// The signature does not verify with the header's key.
    #[error("the DPoP proof's signature does not verify")]
    Signature,
    /// A claim is missing, of the wrong type, or does not match the request.
    #[error("the DPoP proof's {0} does not match the request")]
    Mismatch(&'static str),
    /// `iat` is too far in the past or the future.
    #[error("the DPoP proof was not issued within the accepted window")]
    Stale,
    /// A nonce is required and the proof has none, or another one.
    #[error("the DPoP proof must carry the server's current nonce")]
    Nonce,
}

impl DpopError {
    /// The OAuth error code RFC 9449 answers it with (`WWW-Authenticate: DPoP error="…"`).
    pub fn error_code(&self) -> &'static str {
        match self {
            DpopError::Nonce => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }
}

/// What a proof must match: the request it came with, the time, and what else is expected.
#[derive(Debug, Clone, Copy)]
pub struct ProofCheck<'a> {
    /// The request's method (`htm`), exactly (RFC 9110 methods are case-sensitive).
    pub method: &'a str,
    /// The request's URL, `scheme://host[:port]/path` (any query or fragment is ignored).
    pub url: &'a str,
    /// The current time.
    pub now: UnixTime,
    /// How old `iat` may be, seconds.
    pub max_age: i64,
    /// How far in the future `iat` may be, seconds (clock skew).
    pub leeway: i64,
    /// The access token the request presents, when it presents one: `ath` must be its hash.
    pub access_token: Option<&'a str>,
    /// The nonces the server accepts now (the current one and the one before, say); empty
    /// when it requires none.
    pub nonces: &'a [&'a str],
}

/// A proof that passed every check of [`check_proof`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The JWK SHA-256 thumbprint of the proof's key (RFC 7638), base64url: what `cnf.jkt`
    /// binds a token to.
    pub jkt: String,
    /// The proof's unique id: remember it until `iat + max_age` to refuse a replay.
    pub jti: String,
    /// When the proof says it was made.
    pub iat: UnixTime,
}

/// The proof's protected header: exactly these members.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    typ: String,
    alg: String,
    jwk: Map<String, Value>,
}

/// The proof's claims tessera reads; others are allowed and ignored.
#[derive(Deserialize)]
struct Claims {
    jti: String,
    htm: String,
    htu: String,
    iat: i64,
    ath: Option<String>,
    nonce: Option<String>,
}

/// Checks a DPoP proof against the request it came with (RFC 9449 §4.3): one well-formed JWT,
/// `typ` `dpop+jwt`, `alg` ES256 or EdDSA matching its key, a public `jwk` (no private
/// members, no symmetric key), a signature that verifies with it, `htm` and `htu` equal to the
/// request's method and URL, `iat` within the window, `ath` the hash of the presented access
/// token (and none without one), and the nonce when one is required.
///
/// # Security
/// The key comes from the proof itself, so the signature only proves possession: what binds
/// the proof to a token is the caller comparing [`Proof::jkt`] with the token's binding, and
/// what stops a replay is the caller remembering [`Proof::jti`].
pub fn check_proof(proof: &str, check: &ProofCheck<'_>) -> Result<Proof, DpopError> {
    let SelfSigned { jkt, payload, .. } = check_self_signed(proof, PROOF_TYPE, proof_algorithm)?;
    let claims: Claims = strict_object(&payload)?;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(DpopError::Mismatch("jti"));
    }
    if claims.htm != check.method {
        return Err(DpopError::Mismatch("htm"));
    }
    if !same_target(&claims.htu, check.url) {
        return Err(DpopError::Mismatch("htu"));
    }
    if claims.iat < check.now.saturating_sub(check.max_age)
        || claims.iat > check.now.saturating_add(check.leeway)
    {
        return Err(DpopError::Stale);
    }
    let expected_ath = check.access_token.map(access_token_hash);
    if claims.ath != expected_ath {
        return Err(DpopError::Mismatch("ath"));
    }
    if !check.nonces.is_empty()
        && !claims
            .nonce
            .as_deref()
            .is_some_and(|nonce| check.nonces.contains(&nonce))
    {
        return Err(DpopError::Nonce);
    }
    Ok(Proof {
        jkt,
        jti: claims.jti,
        iat: claims.iat,
    })
}

/// The `alg` values a proof may name: `ES256`, and `EdDSA` or its fully specified name
/// `Ed25519` (RFC 9864, which newer clients such as npm's `dpop` send) for an Ed25519 key.
/// Asymmetric only: a shared-secret MAC proves nothing about a client key (RFC 9449 §4.2).
pub const PROOF_ALGORITHMS: [&str; 3] = ["ES256", "EdDSA", "Ed25519"];

fn proof_algorithm(alg: &str) -> Option<Algorithm> {
    match alg {
        "ES256" => Some(Algorithm::Es256),
        "EdDSA" | "Ed25519" => Some(Algorithm::EdDsa),
        _ => None,
    }
}

/// What a replay cache remembers a one-time value under: SHA-256 of whose it is (`owner`: a
/// proof's key thumbprint, as a `jti` is unique per key, RFC 9449 §4.2) and its `id`, so one
/// client cannot use up another's ids, and of one length whatever the id.
pub fn replay_key(owner: &str, id: &str) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    context.update(owner.as_bytes());
    context.update(b".");
    context.update(id.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(context.finish().as_ref());
    key
}

/// Proofs seen, kept in memory until their window ends, so each is accepted once: the replay
/// cache of a single instance (the embedded verifier; the server on an embedded store), or a
/// front that spares a shared store the replays this instance saw itself.
///
/// # Security
/// Bounded: at most `capacity` proofs. When it is full of proofs still in their window, a new
/// proof is refused ([`Replay::Full`]) rather than an old one forgotten, which would let that
/// one be replayed (fail closed).
#[derive(Debug)]
pub struct ReplayCache {
    /// The first 128 bits of each proof's [`replay_key`] (a chance collision between two
    /// live proofs is negligible at any size this holds), and until when it is kept.
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 16], UnixTime>>,
    capacity: usize,
}

/// Why [`ReplayCache::first_sight`] refused a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Seen before, within its window.
    Seen,
    /// The cache is full of proofs still in their window.
    Full,
}

impl ReplayCache {
    /// A cache for at most `capacity` proofs (at least one; about 30 bytes each, with the
    /// map's own room).
    pub fn new(capacity: usize) -> ReplayCache {
        ReplayCache {
            seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    /// Records the proof under `key` ([`replay_key`]) as seen at `now`, kept until `until`.
    pub fn first_sight(&self, key: [u8; 32], until: UnixTime, now: UnixTime) -> Result<(), Replay> {
        let mut short = [0u8; 16];
        short.copy_from_slice(&key[..16]);
        let key = short;
        // A poisoned lock only means another thread panicked mid-insert: the map is still a map.
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get(&key).is_some_and(|&kept| kept >= now) {
            return Err(Replay::Seen);
        }
        if seen.len() >= self.capacity {
            seen.retain(|_, kept| *kept >= now);
            if seen.len() >= self.capacity {
                return Err(Replay::Full);
            }
        }
        seen.insert(key, until);
        Ok(())
    }

    /// Proofs kept now.
    pub fn len(&self) -> usize {
        self.seen.lock().map_or(0, |seen| seen.len())
    }

    /// True when no proof is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A JWT signed by the key in its own header: what a DPoP proof is, and a DBSC registration.
pub(crate) struct SelfSigned {
    /// The key's RFC 7638 thumbprint.
    pub(crate) jkt: String,
    /// The key, as its public JWK.
    pub(crate) jwk: Map<String, Value>,
    /// The payload, verified, not yet parsed.
    pub(crate) payload: Vec<u8>,
}

/// Checks a JWT whose header is exactly `typ` (equal to `typ`), an `alg` that `algorithm`
/// accepts and matching the key, and a public `jwk` (no private members, no symmetric key);
/// and its signature by that key.
pub(crate) fn check_self_signed(
    jwt: &str,
    typ: &str,
    algorithm: fn(&str) -> Option<Algorithm>,
) -> Result<SelfSigned, DpopError> {
    let segments = Segments::split(jwt).map_err(|_| DpopError::Malformed)?;
    let header_bytes = b64::decode(segments.header).ok_or(DpopError::Malformed)?;
    let header: Header = strict_object(&header_bytes)?;
    if header.typ != typ {
        return Err(DpopError::Header(format!("typ {:?}", header.typ)));
    }
    let (jkt, payload) = verified_payload(&segments, &header.alg, algorithm, &header.jwk)?;
    Ok(SelfSigned {
        jkt,
        jwk: header.jwk,
        payload,
    })
}

/// The payload of `segments` and the thumbprint of `jwk`, once `alg` is one `algorithm`
/// accepts, names `jwk`'s algorithm, and the signature verifies with `jwk` (a public key: no
/// private members, no symmetric key).
pub(crate) fn verified_payload(
    segments: &Segments<'_>,
    alg: &str,
    algorithm: fn(&str) -> Option<Algorithm>,
    jwk: &Map<String, Value>,
) -> Result<(String, Vec<u8>), DpopError> {
    let alg = algorithm(alg).ok_or_else(|| DpopError::Header(format!("alg {alg:?}")))?;
    let jkt = thumbprint(jwk)?;
    let key = key_from_jwk(&jkt, jwk).map_err(|e| DpopError::Header(e.to_string()))?;
    if key.algorithm() != alg {
        return Err(DpopError::Header("alg does not match the key".into()));
    }
    let signature = b64::decode(segments.signature).ok_or(DpopError::Malformed)?;
    if !key.verify(segments.signing_input.as_bytes(), &signature) {
        return Err(DpopError::Signature);
    }
    let payload = b64::decode(segments.payload).ok_or(DpopError::Malformed)?;
    Ok((jkt, payload))
}

/// `ath`: base64url(SHA-256(the access token's ASCII)), RFC 9449 §4.2.
pub fn access_token_hash(access_token: &str) -> String {
    b64::encode(digest::digest(&digest::SHA256, access_token.as_bytes()).as_ref())
}

/// The JWK SHA-256 thumbprint (RFC 7638) of an EC P-256 or OKP Ed25519 public key: SHA-256
/// of the required members in lexicographic order, with no whitespace, base64url.
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, DpopError> {
    let member = |name: &str| match jwk.get(name) {
        Some(Value::String(value)) => Ok(value.as_str()),
        _ => Err(DpopError::Header(format!(
            "jwk without a string \"{name}\""
        ))),
    };
    // The members' values are base64url or fixed names, so none needs escaping; they are
    // checked as such before they are written into the canonical form.
    let plain = |value: &str| {
        !value.is_empty()
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let canonical = match member("kty")? {
        "EC" => {
            let (crv, x, y) = (member("crv")?, member("x")?, member("y")?);
            [crv, x, y]
                .iter()
                .all(|v| plain(v))
                .then(|| format!(r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#))
        }
        "OKP" => {
            let (crv, x) = (member("crv")?, member("x")?);
            [crv, x]
                .iter()
                .all(|v| plain(v))
                .then(|| format!(r#"{{"crv":"{crv}","kty":"OKP","x":"{x}"}}"#))
        }
        kty => return Err(DpopError::Header(format!("kty {kty:?}"))),
    };
    let canonical = canonical.ok_or_else(|| DpopError::Header("jwk members".into()))?;
    Ok(b64::encode(
        digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref(),
    ))
}

/// Whether `htu` names the request's URL: both parsed as URLs and compared without query and
/// fragment (RFC 9449 §4.3 step 9, with the normalisation of RFC 3986 §6.2.2–6.2.3 that URL
/// parsing applies: case of scheme and host, default port, dot segments).
fn same_target(htu: &str, url: &str) -> bool {
    let target = |text: &str| {
        let mut url = url::Url::parse(text).ok()?;
        if url.cannot_be_a_base() || !matches!(url.scheme(), "http" | "https") {
            return None;
        }
        url.set_query(None);
        url.set_fragment(None);
        Some(url)
    };
    match (target(htu), target(url)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// A JSON object with no duplicate member at any depth, read into `T`.
pub(crate) fn strict_object<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, DpopError> {
    serde_json::from_slice::<UniqueJson>(bytes).map_err(|_| DpopError::Malformed)?;
    jws::from_json_object(bytes).map_err(|_| DpopError::Malformed)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use serde_json::json;

    use super::*;
    use crate::test_keys::ClientKey;

    const URL: &str = "https://auth.example/v1/session";
    const NOW: i64 = 1_800_000_000;

    impl ClientKey {
        fn header(&self) -> Value {
            json!({ "typ": PROOF_TYPE, "alg": self.alg(), "jwk": self.jwk() })
        }

        fn proof(&self, claims: &Value) -> String {
            self.sign(&self.header(), claims)
        }
    }

    fn claims() -> Value {
        json!({ "jti": "j-1", "htm": "GET", "htu": URL, "iat": NOW })
    }

    fn check() -> ProofCheck<'static> {
        ProofCheck {
            method: "GET",
            url: URL,
            now: NOW,
            max_age: 60,
            leeway: 5,
            access_token: None,
            nonces: &[],
        }
    }

    #[test]
    fn proofs_by_either_curve_pass_and_name_their_keys_thumbprint() {
        for key in [ClientKey::ed25519(), ClientKey::p256()] {
            let proof = check_proof(&key.proof(&claims()), &check()).unwrap();
            assert_eq!(proof.jti, "j-1");
            assert_eq!(proof.iat, NOW);
            let jwk = key.jwk();
            assert_eq!(proof.jkt, thumbprint(jwk.as_object().unwrap()).unwrap());
            assert_eq!(proof.jkt.len(), 43, "SHA-256, base64url");
        }
    }

    /// RFC 8037's example Ed25519 key and its thumbprint; values that would need escaping in
    /// the canonical form, and symmetric keys, are refused.
    #[test]
    fn thumbprints_follow_rfc_7638() {
        let okp = json!({ "kty": "OKP", "crv": "Ed25519", "kid": "ignored",
            "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" });
        // RFC 8037 appendix A.3: the thumbprint of its example Ed25519 key.
        assert_eq!(
            thumbprint(okp.as_object().unwrap()).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        let not_plain = json!({ "kty": "OKP", "crv": "Ed25519", "x": "a\"b" });
        assert!(thumbprint(not_plain.as_object().unwrap()).is_err());
        let oct = json!({ "kty": "oct", "k": "c2VjcmV0" });
        assert!(thumbprint(oct.as_object().unwrap()).is_err());
    }

    #[test]
    fn the_request_must_match_method_url_time_and_token() {
        let key = ClientKey::ed25519();
        let with = |change: Value| {
            let mut claims = claims();
            for (name, value) in change.as_object().unwrap() {
                claims[name] = value.clone();
            }
            check_proof(&key.proof(&claims), &check())
        };
        assert_eq!(
            with(json!({ "htm": "POST" })),
            Err(DpopError::Mismatch("htm"))
        );
        assert_eq!(
            with(json!({ "htm": "get" })),
            Err(DpopError::Mismatch("htm"))
        );
        assert_eq!(
            with(json!({ "htu": "https://auth.example/v1/sessions" })),
            Err(DpopError::Mismatch("htu"))
        );
        assert_eq!(
            with(json!({ "htu": "https://evil.example/v1/session" })),
            Err(DpopError::Mismatch("htu"))
        );
        // Query, fragment, the default port and the case of scheme and host do not matter.
        for same in [
            "https://auth.example/v1/session?x=1",
            "https://auth.example/v1/session#f",
            "https://auth.example:443/v1/session",
            "HTTPS://AUTH.example/v1/session",
        ] {
            assert!(with(json!({ "htu": same })).is_ok(), "{same}");
        }
        assert_eq!(with(json!({ "iat": NOW - 61 })), Err(DpopError::Stale));
        assert_eq!(with(json!({ "iat": NOW + 6 })), Err(DpopError::Stale));
        assert!(with(json!({ "iat": NOW - 60 })).is_ok());
        assert_eq!(with(json!({ "jti": "" })), Err(DpopError::Mismatch("jti")));
        let long = "j".repeat(MAX_JTI_LEN + 1);
        assert_eq!(
            with(json!({ "jti": long })),
            Err(DpopError::Mismatch("jti"))
        );
        // ath: required with a token, and only then.
        assert_eq!(
            with(json!({ "ath": access_token_hash("tok") })),
            Err(DpopError::Mismatch("ath"))
        );
        let presenting = ProofCheck {
            access_token: Some("tok"),
            ..check()
        };
        assert_eq!(
            check_proof(&key.proof(&claims()), &presenting),
            Err(DpopError::Mismatch("ath"))
        );
        let mut bound = claims();
        bound["ath"] = json!(access_token_hash("tok"));
        assert!(check_proof(&key.proof(&bound), &presenting).is_ok());
        bound["ath"] = json!(access_token_hash("another"));
        assert!(check_proof(&key.proof(&bound), &presenting).is_err());
    }

    #[test]
    fn a_required_nonce_must_be_one_the_server_accepts_now() {
        let key = ClientKey::p256();
        let asking = ProofCheck {
            nonces: &["n-2", "n-3"],
            ..check()
        };
        let refused = check_proof(&key.proof(&claims()), &asking).unwrap_err();
        assert_eq!(refused.error_code(), "use_dpop_nonce");
        let mut stale = claims();
        stale["nonce"] = json!("n-1");
        assert_eq!(
            check_proof(&key.proof(&stale), &asking),
            Err(DpopError::Nonce)
        );
        stale["nonce"] = json!("n-2");
        assert!(check_proof(&key.proof(&stale), &asking).is_ok());
        stale["nonce"] = json!("n-3");
        assert!(check_proof(&key.proof(&stale), &asking).is_ok());
    }

    #[test]
    fn the_replay_cache_keeps_each_proof_for_its_window_and_refuses_when_full() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.first_sight([1; 32], 100, 0), Ok(()));
        assert_eq!(cache.first_sight([1; 32], 100, 50), Err(Replay::Seen));
        assert_eq!(cache.first_sight([2; 32], 100, 50), Ok(()));
        assert_eq!(
            cache.first_sight([3; 32], 100, 50),
            Err(Replay::Full),
            "full of proofs in their window: refused, none forgotten"
        );
        assert_eq!(cache.len(), 2);
        // Past their window, proofs are forgotten to make room.
        assert_eq!(cache.first_sight([3; 32], 300, 101), Ok(()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn headers_that_are_not_a_public_key_proof_are_refused() {
        let key = ClientKey::ed25519();
        let refused = |header: Value| check_proof(&key.sign(&header, &claims()), &check());
        let mut header = key.header();
        header["typ"] = json!("JWT");
        assert!(matches!(refused(header), Err(DpopError::Header(_))));
        for alg in ["none", "HS256", "ES256", "RS256", "ed25519", "Ed448"] {
            let mut header = key.header();
            header["alg"] = json!(alg);
            assert!(
                matches!(refused(header), Err(DpopError::Header(_))),
                "{alg}"
            );
        }
        // RFC 9864's fully specified name of the same algorithm is accepted.
        let mut header = key.header();
        header["alg"] = json!("Ed25519");
        assert!(refused(header).is_ok());
        // A private key in the header.
        let mut header = key.header();
        header["jwk"]["d"] = json!(b64::encode(&[7u8; 32]));
        assert!(matches!(refused(header), Err(DpopError::Header(_))));
        // A symmetric key.
        let mut header = key.header();
        header["jwk"] = json!({ "kty": "oct", "k": "c2VjcmV0" });
        assert!(matches!(refused(header), Err(DpopError::Header(_))));
        // Anything else in the header (a kid, a jku to fetch).
        for (name, value) in [("kid", json!("k")), ("jku", json!("https://x/"))] {
            let mut header = key.header();
            header[name] = value;
            assert_eq!(refused(header), Err(DpopError::Malformed), "{name}");
        }
    }

    #[test]
    fn a_proof_signed_by_another_key_or_altered_is_refused() {
        let (key, other) = (ClientKey::ed25519(), ClientKey::ed25519());
        // Signed by one key, naming another.
        let forged = other.sign(&key.header(), &claims());
        assert_eq!(check_proof(&forged, &check()), Err(DpopError::Signature));
        // A claim changed after signing.
        let proof = key.proof(&claims());
        let (head, rest) = proof.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let mut altered = claims();
        altered["htu"] = json!("https://auth.example/v1/other");
        let altered = format!(
            "{head}.{}.{signature}",
            b64::encode(altered.to_string().as_bytes())
        );
        assert_eq!(check_proof(&altered, &check()), Err(DpopError::Signature));
        for malformed in ["", "a.b", "a.b.c.d", &"x".repeat(crate::MAX_TOKEN_LEN + 1)] {
            assert_eq!(check_proof(malformed, &check()), Err(DpopError::Malformed));
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any text is refused or passes without a panic, and what passes names a
            /// thumbprint of 43 characters.
            #[test]
            fn any_text_is_answered(text in ".{0,300}") {
                if let Ok(proof) = check_proof(&text, &check()) {
                    prop_assert_eq!(proof.jkt.len(), 43);
                }
            }

            /// A valid proof with any one byte changed is refused: the signature covers the
            /// header and the claims, and the parsing is canonical (no second spelling of the
            /// same proof passes).
            #[test]
            fn any_changed_byte_is_refused(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
                let key = ClientKey::ed25519();
                let proof = key.proof(&claims()).into_bytes();
                let at = at.index(proof.len());
                prop_assume!(proof[at] != byte);
                let mut changed = proof;
                changed[at] = byte;
                if let Ok(text) = String::from_utf8(changed) {
                    prop_assert!(check_proof(&text, &check()).is_err(), "{}", text);
                }
            }
        }
    }

    #[test]
    fn duplicate_members_are_refused() {
        let key = ClientKey::ed25519();
        let header = b64::encode(key.header().to_string().as_bytes());
        let payload = format!(r#"{{"jti":"a","jti":"b","htm":"GET","htu":"{URL}","iat":{NOW}}}"#);
        let proof = key.signed(&format!("{header}.{}", b64::encode(payload.as_bytes())));
        assert_eq!(check_proof(&proof, &check()), Err(DpopError::Malformed));
    }
}
