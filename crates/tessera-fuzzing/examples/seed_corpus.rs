//! Writes the seed corpus of every fuzz target into `fuzz/corpus/<target>/seed-*`:
//! valid tokens signed by the fixture keys, and one example of each known attack.
//!
//! `cargo run -p tessera-fuzzing --example seed_corpus`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::json;
use tessera_core::claims::{self, AccessClaims};
use tessera_core::keys::KeySet;
use tessera_core::{b64, jws};
use tessera_fuzzing::{ISSUER, NOW, fixture};

fn write(target: &str, name: &str, data: &[u8]) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
}

fn claims() -> AccessClaims {
    AccessClaims {
        iss: ISSUER.into(),
        aud: ISSUER.into(),
        sub: "u1".into(),
        sid: "s1".into(),
        name: "alice".into(),
        roles: vec!["admin".into()],
        perms: vec!["docs:write".into()],
        iat: NOW,
        nbf: NOW,
        exp: NOW + 600,
        jti: "j1".into(),
        amr: tessera_core::assurance::Methods::PASSWORD,
        acr: None,
        auth_time: None,
        cnf: None,
    }
}

fn forge(keys: &KeySet, header: &serde_json::Value, payload: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(payload)
    );
    let signature = keys.current().sign(input.as_bytes()).unwrap();
    format!("{input}.{}", b64::encode(&signature))
}

fn main() {
    let fx = fixture();
    let payload = serde_json::to_vec(&claims()).unwrap();
    let mut tokens = Vec::new();
    for (i, keys) in fx.sets.iter().take(3).enumerate() {
        let token = claims::issue(keys, &claims()).unwrap();
        assert!(claims::verify(&token, keys, &fx.rules, NOW).is_ok());
        write("token", &format!("valid-{i}"), token.as_bytes());
        tokens.push(token);
    }
    let hs = &fx.sets[2];
    let kid = fx.records[2].kid.as_str();
    let attacks = [
        (
            "alg-none",
            json!({"alg": "none", "kid": kid, "typ": "at+jwt"}),
        ),
        (
            "alg-ES256",
            json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"}),
        ),
        (
            "jku",
            json!({"alg": "HS256", "kid": kid, "typ": "at+jwt", "jku": "http://127.0.0.1:9/"}),
        ),
        (
            "jwk",
            json!({"alg": "HS256", "kid": kid, "typ": "at+jwt", "jwk": {"kty": "oct", "k": "AA"}}),
        ),
        (
            "crit",
            json!({"alg": "HS256", "kid": kid, "typ": "at+jwt", "crit": ["exp"]}),
        ),
        (
            "typ-refresh",
            json!({"alg": "HS256", "kid": kid, "typ": "rt+jwt"}),
        ),
        (
            "kid-path",
            json!({"alg": "HS256", "kid": "../../etc/passwd", "typ": "at+jwt"}),
        ),
    ];
    for (name, header) in attacks {
        write("token", name, forge(hs, &header, &payload).as_bytes());
    }
    let array = format!(r#"["HS256","{kid}","at+jwt",null,null,null,null,null,null,null]"#);
    let input = format!(
        "{}.{}",
        b64::encode(array.as_bytes()),
        b64::encode(&payload)
    );
    let sig = hs.current().sign(input.as_bytes()).unwrap();
    write(
        "token",
        "array-header",
        format!("{input}.{}", b64::encode(&sig)).as_bytes(),
    );
    let dup = payload.clone();
    let dup = String::from_utf8(dup).unwrap().replacen(
        "\"sub\":\"u1\"",
        "\"sub\":\"u1\",\"sub\":\"root\"",
        1,
    );
    write(
        "token",
        "duplicate-sub",
        forge(
            hs,
            &json!({"alg": "HS256", "kid": kid, "typ": jws::ACCESS_TOKEN_TYPE}),
            dup.as_bytes(),
        )
        .as_bytes(),
    );
    write("token", "padded", format!("{}=", tokens[2]).as_bytes());
    write("token", "claims-json", &payload);
    write(
        "token",
        "opaque-session",
        format!("tsr_{}", b64::encode(&[7; 32])).as_bytes(),
    );
    write(
        "token",
        "opaque-refresh",
        format!("tsrf_{}", b64::encode(&[8; 32])).as_bytes(),
    );

    write(
        "cookie",
        "one",
        format!("__Host-tessera=tsr_{}", b64::encode(&[7; 32])).as_bytes(),
    );
    write(
        "cookie",
        "several",
        format!("a=b; __Host-tessera=\"{}\"; c=d\ntheme=dark", tokens[0]).as_bytes(),
    );
    write(
        "cookie",
        "bearer",
        format!("A:Bearer {}", tokens[1]).as_bytes(),
    );
    write(
        "cookie",
        "spoofed-name",
        b"__host-tessera=x; __Host-tessera =y; =z; ;;",
    );

    let login = json!({"username": "alice", "password": "correct horse", "delivery": "bearer"});
    let mut body = vec![0u8];
    body.extend(login.to_string().as_bytes());
    write("bodies", "login-json", &body);
    let mut body = vec![1u8];
    body.extend(b"username=alice&password=correct+horse&delivery=cookie");
    write("bodies", "login-form", &body);
    let mut body = vec![0x80u8];
    body.extend(
        json!({"refresh_token": format!("tsrf_{}", b64::encode(&[8; 32]))})
            .to_string()
            .as_bytes(),
    );
    write("bodies", "refresh-json", &body);
    for (name, request) in [
        ("plain", "GET\napp.test\n/public/a.css"),
        ("admin", "GET\napp.test:8000\n/admin/x?y=1"),
        ("dots", "GET\napp.test\n/public/%2e%2e/admin"),
        ("params", "GET\napp.test\n/public/..;/admin"),
        ("encoded-param", "GET\napp.test\n/public/..%3B/admin"),
        ("admin-param", "DELETE\napp.test\n/admin;x=1"),
        ("fragment", "GET\napp.test\n/public#/../admin"),
        ("double", "GET\napp.test\n/public/%252e%252e/admin"),
        ("overlong", "GET\napp.test\n/public/%c0%ae%c0%ae/admin"),
        ("case", "GET\nAPP.test.\n/ADMIN/x"),
        ("raw-encoding", "GET\napp.test\n/pub%6cic/x"),
        (
            "override",
            "GET\napp.test\n/public/x?_method=DELETE\nPUT, DELETE",
        ),
        ("host-list", "GET\napp.test, evil.test\n/public"),
        ("ipv6", "get\n[::1]:8000\n//public//x/"),
    ] {
        write("access", name, request.as_bytes());
    }
    println!("seed corpus written");
}
