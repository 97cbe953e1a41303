//! Entry points of tessera's fuzz targets.
//!
//! Each function takes arbitrary bytes and drives one parser the way a request would. The
//! cargo-fuzz targets in `fuzz/` call them, and `tests/corpus.rs` feeds them every committed
//! corpus file on each `cargo test`, so a fixed crash stays fixed without a nightly toolchain.
//!
//! A function fails (panics) only when tessera does: on a panic inside tessera, or when one
//! of the invariants asserted here is broken.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use aws_lc_rs::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use axum::http::{HeaderMap, HeaderValue, header};
use tessera_core::claims::{self, ClaimRules};
use tessera_core::keys::{Algorithm, KeyRecord, KeySet};
use tessera_core::opaque::{self, OpaqueKind};
use tessera_core::{MAX_TOKEN_LEN, TokenError, UnixTime, jws};
use tessera_server::access::{AccessPolicy, AccessRule, Decision, Policy, Target, normalize_path};
use tessera_server::http::cookie::SessionCookie;
use tessera_server::http::{LoginBody, RefreshBody, parse_body, presented_token};

/// A fuzz entry point: takes any bytes, panics only on a bug.
pub type Entry = fn(&[u8]);

/// The fuzz targets, by name: each has a corpus directory `fuzz/corpus/<name>`.
pub const TARGETS: &[(&str, Entry)] = &[
    ("token", token),
    ("cookie", cookie),
    ("bodies", bodies),
    ("access", access),
];

/// The time at which fixture tokens are checked.
pub const NOW: UnixTime = 1_800_000_000;
/// Issuer and audience of fixture tokens.
pub const ISSUER: &str = "tessera";

/// Keys with fixed material and `kid`s, so a corpus can hold tokens that verify and a crash
/// reproduces. Test keys only: they sign nothing outside fuzzing.
pub struct Fixture {
    /// One key record per algorithm: EdDSA, ES256, HS256.
    pub records: Vec<KeyRecord>,
    /// One key set per record, and a last one holding all three as verifiers.
    pub sets: Vec<KeySet>,
    /// The claim rules tokens are checked against.
    pub rules: ClaimRules,
}

/// The shared fixture (built once per process).
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| match build_fixture() {
        Some(fixture) => fixture,
        None => panic!("the fuzz fixture keys could not be built"),
    })
}

fn build_fixture() -> Option<Fixture> {
    let ed = Ed25519KeyPair::from_seed_unchecked(&[0x11; 32]).ok()?;
    // RFC 5915 ECPrivateKey { version 1, privateKey (32 bytes), [0] prime256v1 }.
    let mut ec_der = vec![0x30, 0x31, 0x02, 0x01, 0x01, 0x04, 0x20];
    ec_der.extend_from_slice(&[0x22; 32]);
    ec_der.extend_from_slice(&[
        0xa0, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
    ]);
    let ec =
        EcdsaKeyPair::from_private_key_der(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &ec_der)
            .ok()?;
    let record = |kid: &str, algorithm, private: Vec<u8>, public: Vec<u8>| KeyRecord {
        kid: kid.to_owned(),
        algorithm,
        private,
        public,
        created_at: 0,
        retired_at: None,
    };
    let records = vec![
        record(
            "fuzz-eddsa",
            Algorithm::EdDsa,
            ed.to_pkcs8().ok()?.as_ref().to_vec(),
            ed.public_key().as_ref().to_vec(),
        ),
        record(
            "fuzz-es256",
            Algorithm::Es256,
            ec.to_pkcs8v1().ok()?.as_ref().to_vec(),
            ec.public_key().as_ref().to_vec(),
        ),
        record("fuzz-hs256", Algorithm::Hs256, vec![0x33; 32], Vec::new()),
    ];
    let mut sets = records
        .iter()
        .map(|r| KeySet::new(r, &[]).ok())
        .collect::<Option<Vec<_>>>()?;
    sets.push(KeySet::new(&records[0], &records).ok()?);
    Some(Fixture {
        records,
        sets,
        rules: ClaimRules {
            issuer: ISSUER.into(),
            audience: ISSUER.into(),
            leeway: 30,
        },
    })
}

/// Token parsing and verification, both formats: opaque access and refresh tokens, and JWS
/// access tokens against EdDSA, ES256 and HS256 keys, with their claims.
pub fn token(data: &[u8]) {
    // Claims parsing on its own: a fuzzer cannot forge signatures, so this is the only way
    // it reaches the claims parser with arbitrary JSON.
    let _ = claims::decode(data);
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [OpaqueKind::Session, OpaqueKind::Refresh] {
        if opaque::parse(text, kind).is_ok() {
            // Only the exact shape passes: prefix + 43 base64url characters.
            assert_eq!(text.len(), kind.prefix().len() + 43, "{text:?}");
            assert!(text.starts_with(kind.prefix()));
        }
    }
    let fixture = fixture();
    for keys in &fixture.sets {
        let verified = jws::verify(text, keys, jws::ACCESS_TOKEN_TYPE);
        if text.len() > MAX_TOKEN_LEN {
            assert_eq!(verified, Err(TokenError::Oversized));
        }
        let claimed = claims::verify(text, keys, &fixture.rules, NOW);
        if let Ok(claims) = &claimed {
            // Whatever verifies had a verified payload, and that payload decodes alike.
            let payload = verified.as_ref().map_err(|e| *e);
            assert_eq!(payload.map(|p| claims::decode(p)), Ok(Ok(claims.clone())));
        }
    }
    let _ = jws::peek_kid(text);
}

/// The `Cookie` and `Authorization` headers, as the extractor reads them. Lines of the input
/// become separate headers: `Cookie` ones, and `Authorization` for lines starting `A:`.
pub fn cookie(data: &[u8]) {
    let mut headers = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let (name, value) = match line.strip_prefix(b"A:") {
            Some(rest) => (header::AUTHORIZATION, rest),
            None => (header::COOKIE, line),
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    if let Some(value) = SessionCookie::default().read(&headers) {
        // A cookie value never spans two cookies.
        assert!(!value.contains(';'), "{value:?}");
    }
    if let Some((presented, _)) = presented_token(&headers) {
        // Whatever the extractor hands over is then parsed as a token.
        token(presented.as_bytes());
    }
}

/// The login and refresh bodies. The first byte picks the body and content type.
pub fn bodies(data: &[u8]) {
    let Some((selector, body)) = data.split_first() else {
        return;
    };
    let content_type = match selector % 4 {
        0 => Some("application/json"),
        1 => Some("application/x-www-form-urlencoded"),
        2 => Some("application/json; charset=utf-8"),
        _ => None,
    };
    if selector & 0x80 == 0 {
        if let Ok(login) = parse_body::<LoginBody>(content_type, true, body) {
            let _ = (login.username.len(), login.password.len(), login.delivery);
        }
    } else if let Ok(refresh) = parse_body::<RefreshBody>(content_type, false, body) {
        // The refresh handler's first step: the token's shape.
        let _ = opaque::parse(&refresh.refresh_token, OpaqueKind::Refresh);
    }
}

/// The access rules of `docs/examples/tessera.toml`: `/public` open to anyone, `/admin` for the
/// `admin` role, everything else for any session.
fn example_policy() -> &'static AccessPolicy {
    static POLICY: OnceLock<AccessPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let rule = |paths: &[&str], policy, roles: &[&str]| AccessRule {
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            policy,
            ..AccessRule::default()
        };
        let rules = [
            rule(&["/public"], Policy::Bypass, &[]),
            rule(&["/admin"], Policy::Authenticated, &["admin"]),
            rule(&[], Policy::Authenticated, &[]),
        ];
        match AccessPolicy::compile(&rules) {
            Ok(policy) => policy,
            Err(error) => panic!("the example rules do not compile: {error}"),
        }
    })
}

/// The access-rule matcher and the path normaliser. Lines of the input are the method, the
/// host, the request URI and then method-override header values.
///
/// Besides not panicking, a normalised path is in canonical form, and a path the rules let
/// through without a session, or without the admin role, is neither under `/admin` nor outside
/// `/public` (respectively) however a back end reads it: as a plain file server (decoded once,
/// dot segments resolved), as Tomcat or Spring (`;` parameters stripped first) or as Express
/// (matched raw, nothing resolved, case ignored).
pub fn access(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let method = lines.next().unwrap_or("");
    let host = lines.next().unwrap_or("");
    let uri = lines.next().unwrap_or("");
    let overrides: Vec<&str> = lines.collect();
    if let Some(path) = normalize_path(uri) {
        assert!(path.starts_with('/'), "{uri:?} -> {path:?}");
        assert!(!path.contains("//"), "{uri:?} -> {path:?}");
        assert!(
            path.split('/').all(|s| s != "." && s != ".."),
            "{uri:?} -> {path:?}"
        );
        assert!(
            !path.contains([';', '\\', '%']) && !path.chars().any(char::is_control),
            "{uri:?} -> {path:?}"
        );
    }
    let decision = example_policy().decide(&Target {
        method,
        method_overrides: &overrides,
        host,
        uri,
    });
    let readings = back_end_readings(uri);
    match &decision {
        Decision::Bypass => {
            for path in &readings {
                assert!(under(path, "/public"), "{uri:?} bypassed, read as {path:?}");
            }
        }
        Decision::Require(requirement) if !requirement.roles.iter().any(|r| r == "admin") => {
            for path in &readings {
                // Some back ends (Express, IIS) ignore case.
                let path = path.to_ascii_lowercase();
                assert!(
                    !under(&path, "/admin"),
                    "{uri:?} without admin, read as {path:?}"
                );
            }
        }
        _ => {}
    }
}

/// `path` is `prefix` or below it, by whole segments.
fn under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// How back ends read the path of a raw request URI: as Express (raw, slashes merged), as a
/// plain file server (decoded once, dot segments resolved) and as Tomcat or Spring (`;`
/// parameters stripped from each segment, then decoded and resolved). Written apart from
/// tessera's normaliser on purpose: each reading is what some back end does.
fn back_end_readings(uri: &str) -> Vec<String> {
    let raw = uri.split(['?', '#']).next().unwrap_or("");
    let merged = raw.split('/').filter(|s| !s.is_empty()).collect::<Vec<_>>();
    let stripped = raw
        .split('/')
        .map(|segment| segment.split(';').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("/");
    vec![
        format!("/{}", merged.join("/")),
        resolve(&percent_decode(raw)),
        resolve(&percent_decode(&stripped)),
    ]
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        let hex = text
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (byte, hex) {
            (b'%', Some(value)) => {
                out.push(value);
                i += 3;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn resolve(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split(['/', '\\']) {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}
