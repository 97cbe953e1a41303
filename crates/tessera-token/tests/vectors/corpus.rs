//! The shared corpus of refused tokens (`refused.json`): its cases, and how one becomes a token.
//!
//! Used by tessera-token's `tests/refused.rs` and, through `#[path]`, by the server's attack
//! tests, so both refuse the very same list.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// The corpus file's text.
pub const REFUSED_JSON: &str = include_str!("refused.json");

/// The claims in the order `AccessClaims` declares them (for the array form of a payload).
const CLAIM_ORDER: [&str; 11] = [
    "iss", "aud", "sub", "sid", "name", "roles", "perms", "iat", "nbf", "exp", "jti",
];

/// Every case of the corpus.
pub fn cases() -> Vec<Map<String, Value>> {
    let document: Value = serde_json::from_str(REFUSED_JSON).unwrap();
    document["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| case.as_object().unwrap().clone())
        .collect()
}

/// What a case starts from: a genuine access token's parts and the key that signed it.
pub struct Genuine<'a> {
    /// The genuine header (`alg`, `kid`, `typ`).
    pub header: Value,
    /// The genuine claims.
    pub claims: Value,
    /// The verifier's current time.
    pub now: i64,
    /// Signs a signing input (`header.payload`) with the genuine key.
    pub sign: &'a dyn Fn(&[u8]) -> Vec<u8>,
}

fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn text(case: &Map<String, Value>, name: &str) -> Option<String> {
    case.get(name).map(|v| v.as_str().unwrap().to_owned())
}

impl Genuine<'_> {
    /// Whether `case` applies to this key (a header `alg` equal to the key's is no attack).
    pub fn applies(&self, case: &Map<String, Value>) -> bool {
        text(case, "unless_alg").as_deref() != self.header["alg"].as_str()
    }

    /// The token `case` describes.
    pub fn token(&self, case: &Map<String, Value>) -> String {
        let alg = self.header["alg"].as_str().unwrap();
        let kid = self.header["kid"].as_str().unwrap();
        let fill_header = |t: &str| t.replace("{alg}", alg).replace("{kid}", kid);
        let iss = self.claims["iss"].as_str().unwrap();
        let aud = self.claims["aud"].as_str().unwrap();

        let header = match (text(case, "header_text"), case.get("header")) {
            (Some(t), _) => fill_header(&t),
            (None, Some(h)) => fill_header(&h.to_string()),
            (None, None) => self.header.to_string(),
        };
        let mut claims = self.claims.clone();
        let object = claims.as_object_mut().unwrap();
        if let Some(Value::Object(set)) = case.get("claims") {
            for (name, value) in set {
                let value = value
                    .to_string()
                    .replace("{iss}", iss)
                    .replace("{aud}", aud);
                object.insert(name.clone(), serde_json::from_str(&value).unwrap());
            }
        }
        if let Some(Value::Object(set)) = case.get("claims_at") {
            for (name, offset) in set {
                object.insert(
                    name.clone(),
                    Value::from(self.now + offset.as_i64().unwrap()),
                );
            }
        }
        if let Some(Value::Array(names)) = case.get("remove") {
            for name in names {
                object.remove(name.as_str().unwrap());
            }
        }
        let payload = match text(case, "payload_text") {
            Some(t) => {
                let genuine = self.claims.to_string();
                let members = &genuine[1..genuine.len() - 1];
                let values: Vec<String> = CLAIM_ORDER
                    .iter()
                    .map(|name| self.claims[*name].to_string())
                    .collect();
                t.replace("{claims}", &genuine)
                    .replace("{members}", members)
                    .replace("{values}", &values.join(","))
            }
            None => claims.to_string(),
        };

        let (h, p) = (encode(header.as_bytes()), encode(payload.as_bytes()));
        let h = text(case, "header_segment").map_or(h.clone(), |t| t.replace("{h}", &h));
        let p = text(case, "payload_segment").map_or(p.clone(), |t| t.replace("{p}", &p));
        let input = format!("{h}.{p}");
        let signature = match case.get("signature") {
            None => encode(&(self.sign)(input.as_bytes())),
            Some(Value::String(s)) if s == "genuine" => encode(&(self.sign)(input.as_bytes())),
            Some(Value::String(s)) if s == "empty" => String::new(),
            Some(Value::String(s)) if s == "of_other_claims" => {
                let original = format!(
                    "{}.{}",
                    encode(self.header.to_string().as_bytes()),
                    encode(self.claims.to_string().as_bytes())
                );
                encode(&(self.sign)(original.as_bytes()))
            }
            Some(Value::Object(o)) => encode(&hex(o["hex"].as_str().unwrap())),
            Some(other) => panic!("unknown signature form {other}"),
        };
        match text(case, "token") {
            Some(t) => {
                // The genuine token's segments, whatever the case changed above.
                let gh = encode(self.header.to_string().as_bytes());
                let gp = encode(self.claims.to_string().as_bytes());
                let gs = encode(&(self.sign)(format!("{gh}.{gp}").as_bytes()));
                t.replace("{h}", &gh)
                    .replace("{p}", &gp)
                    .replace("{s}", &gs)
            }
            None => format!("{input}.{signature}"),
        }
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
