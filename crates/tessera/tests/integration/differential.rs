//! The differential harness: hostile requests through each real proxy (nginx, Caddy, Traefik,
//! running exactly the configurations in `docs/examples/`), to tessera and an app that records
//! what it receives. A request the app received must be one the access rules of
//! `docs/examples/tessera.toml` allow for the path *the app saw*, read as Tomcat/Spring would
//! and as a plain file server would. The rules and those readings are implemented here, apart
//! from tessera's own matcher and normaliser: the point is to catch where they disagree.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures_util::StreamExt;

use crate::external::{
    Caddy, Nginx, PROBE_HEADER, Ports, Receipt, RecordingApp, Traefik, example, raw_exchange,
};
use crate::proxies::{session_token, spare_ports, tessera_behind_proxy};

/// Who sends a request: nobody, alice (role `editor`) or admin (role `admin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Anonymous,
    Editor,
    Admin,
}

impl Who {
    const ALL: [Who; 3] = [Who::Anonymous, Who::Editor, Who::Admin];

    fn username(self) -> Option<&'static str> {
        match self {
            Who::Anonymous => None,
            Who::Editor => Some("alice"),
            Who::Admin => Some("admin"),
        }
    }

    fn roles(self) -> Option<&'static [&'static str]> {
        match self {
            Who::Anonymous => None,
            Who::Editor => Some(&["editor"]),
            Who::Admin => Some(&["admin"]),
        }
    }
}

/// One hostile request, before it is given a sender.
#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    /// The request target, written into the request line as is (`{P}`: the proxy's port).
    target: String,
    /// `None`: no `Host` header at all; the default is the proxy's own address.
    host: Option<String>,
    /// Extra header lines, sent as written.
    headers: Vec<(String, String)>,
}

impl Case {
    fn get(target: &str) -> Case {
        Case {
            method: "GET",
            target: target.to_owned(),
            host: Some("127.0.0.1:{P}".to_owned()),
            headers: Vec::new(),
        }
    }

    fn method(mut self, method: &'static str) -> Case {
        self.method = method;
        self
    }

    fn header(mut self, name: &str, value: &str) -> Case {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn host(mut self, host: Option<&str>) -> Case {
        self.host = host.map(str::to_owned);
        self
    }
}

/// Paths in every encoding a proxy, tessera and an app might read differently.
const PATHS: &[&str] = &[
    // What the rules are about, plainly.
    "/public/info",
    "/private/page",
    "/home",
    "/admin",
    "/admin/secret",
    "/administrator",
    "/publicity/x",
    // Case.
    "/ADMIN/secret",
    "/Admin/secret",
    "/PUBLIC/../admin/secret",
    // Dot segments, raw and encoded once, twice and overlong.
    "/public/../admin/secret",
    "/public/./../admin/secret",
    "/public/x/../../admin/secret",
    "/public/..",
    "/public/../",
    "/./admin/secret",
    "/public/%2e%2e/admin/secret",
    "/public/%2E%2E/admin/secret",
    "/public/.%2e/admin/secret",
    "/public/%2e./admin/secret",
    "/public/%2e/../admin/secret",
    "/public/%252e%252e/admin/secret",
    "/public/%25%32%65%25%32%65/admin/secret",
    "/public/%c0%ae%c0%ae/admin/secret",
    "/public/%c0%ae%c0%ae%c0%afadmin/secret",
    "/public/%e0%80%ae%e0%80%ae/admin/secret",
    "/public/%u002e%u002e/admin/secret",
    "/public/.../admin/secret",
    // Path parameters.
    "/public/..;/admin/secret",
    "/public/%2e%2e;/admin/secret",
    "/public/..%3B/admin/secret",
    "/public/..%3b/admin/secret",
    "/public;/../admin/secret",
    "/public;x=1/../admin/secret",
    "/public/..;x=1/admin/secret",
    "/public/.;/../admin/secret",
    "/admin;x=1/secret",
    "/admin;/secret",
    "/admin;x=1",
    "/admin%3bx=1/secret",
    "/admin%3Bx=1",
    "/;/admin/secret",
    "/;x=/../admin/secret",
    // Fragments and queries.
    "/public/x#/../../admin/secret",
    "/public#/../admin/secret",
    "/admin#x",
    "/admin%23/secret",
    "/public%23/../admin/secret",
    "/public/x%23/../../admin/secret",
    "/public?/../admin/secret",
    "/public%3f/../admin/secret",
    "/public%3F/../../admin/secret",
    "/public/..?/admin/secret",
    "/admin/secret?/public",
    "/admin/secret?x=/public/../",
    // Backslashes.
    "/public\\..\\admin\\secret",
    "/public/..\\admin/secret",
    "/public\\../admin/secret",
    "/public%5c..%5cadmin%5csecret",
    "/public/..%5cadmin/secret",
    "/public/..%5Cadmin/secret",
    // Encoded slashes.
    "/public%2f..%2fadmin%2fsecret",
    "/public/..%2fadmin/secret",
    "/public%2F..%2Fadmin%2Fsecret",
    "/admin%2fsecret",
    "/public%2f%2e%2e%2fadmin",
    // Repeated slashes.
    "//admin/secret",
    "///admin//secret",
    "/public//../admin/secret",
    "/.//admin/secret",
    "//public/../admin/secret",
    // NUL and other controls.
    "/public/%00/../admin/secret",
    "/admin%00/secret",
    "/public%00/../admin/secret",
    "/admin/secret%00.public",
    "/public/%0a/../admin/secret",
    "/public/%09/../admin/secret",
    "/admin%0d%0aX-Tessera-User:%20admin/secret",
    // Unicode, raw and encoded, valid and not.
    "/admin/s\u{e9}cret",
    "/public/\u{ff0e}\u{ff0e}/admin/secret",
    "/public/%ef%bc%8e%ef%bc%8e/admin/secret",
    "/%e2%80%8badmin/secret",
    "/adm%c4%b1n/secret",
    "/public/%ff/../admin/secret",
    // Trailing dots and blanks.
    "/admin./secret",
    "/admin%20/secret",
    "/admin%2e/secret",
    "/admin%09/secret",
    // Absolute-form request targets.
    "http://127.0.0.1:{P}/admin/secret",
    "http://127.0.0.1:{P}/public/../admin/secret",
    "http://evil.example/public/..;/admin/secret",
    "http://127.0.0.1:{P}/public/..%3b/admin/secret",
    // Method overrides in the query.
    "/public/info?_method=DELETE",
    "/admin/secret?_method=GET",
    "/private/page?_method=DELETE",
];

/// Headers that name (or claim to name) the request, a client's own.
const SPOOFS: &[&[(&str, &str)]] = &[
    &[("X-Forwarded-Uri", "/public/x")],
    &[("X-Forwarded-Uri", "/home")],
    &[("X-Original-URI", "/public/x")],
    &[
        ("X-Original-URI", "/public/x"),
        ("X-Forwarded-Uri", "/public/x"),
    ],
    &[
        ("X-Forwarded-Uri", "/public/x"),
        ("X-Forwarded-Uri", "/public/y"),
    ],
    &[
        ("X-Original-URI", "/public/x"),
        ("X-Original-URI", "/public/y"),
    ],
    &[("X-Original-URL", "/public/x")],
    &[("X-Rewrite-URL", "/public/x")],
    &[("Forwarded", "for=1.2.3.4;host=evil.example;proto=https")],
    &[("X-Forwarded-Host", "evil.example")],
    &[("X-Forwarded-Method", "GET")],
    &[("X-Forwarded-Proto", "https")],
    &[("X-Forwarded-For", "1.2.3.4")],
    &[("X-Tessera-User", "admin"), ("X-Tessera-Roles", "admin")],
    &[("X-HTTP-Method-Override", "DELETE")],
    &[("X-HTTP-Method", "DELETE")],
    &[("X-Method-Override", "DELETE")],
];

/// `Host` headers that are not quite the proxy's address.
const HOSTS: &[Option<&str>] = &[
    Some("127.0.0.1.:{P}"),
    Some("LOCALHOST:{P}"),
    Some("user@127.0.0.1:{P}"),
    Some("127.0.0.1:{P}:1"),
    Some("evil.example"),
    Some("127.0.0.1:{P}/admin"),
    None,
];

/// The whole corpus, without senders.
fn corpus() -> Vec<Case> {
    let mut cases: Vec<Case> = PATHS.iter().map(|path| Case::get(path)).collect();
    for method in ["GET", "DELETE"] {
        for target in ["/admin/secret", "/private/page"] {
            for spoof in SPOOFS {
                let mut case = Case::get(target).method(method);
                for (name, value) in *spoof {
                    case = case.header(name, value);
                }
                cases.push(case);
            }
        }
    }
    for host in HOSTS {
        for target in ["/admin/secret", "/public/../admin/secret"] {
            cases.push(Case::get(target).host(*host));
        }
    }
    cases.push(
        Case::get("/admin/secret")
            .header("Host", "127.0.0.1:{P}")
            .host(Some("evil.example")),
    );
    for method in ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "get"] {
        for target in ["/admin/secret", "/public/..;/admin/secret"] {
            cases.push(Case::get(target).method(method));
        }
    }
    cases
}

/// One request sent: its case, sender and what came back.
struct Sent {
    case: Case,
    who: Who,
    /// The status the client got, or why there was none.
    answer: Result<u16, String>,
}

/// The request's bytes: the case's request line and headers, the sender's session cookie and
/// the probe id that ties what the app receives to this request.
fn request_bytes(case: &Case, port: u16, cookie: Option<&str>, probe: usize) -> Vec<u8> {
    let port = port.to_string();
    let mut text = format!("{} {} HTTP/1.1\r\n", case.method, case.target);
    if let Some(host) = &case.host {
        writeln!(text, "Host: {host}\r").unwrap();
    }
    for (name, value) in &case.headers {
        writeln!(text, "{name}: {value}\r").unwrap();
    }
    if let Some(token) = cookie {
        writeln!(text, "Cookie: __Host-tessera={token}\r").unwrap();
    }
    if matches!(case.method, "POST" | "PUT" | "PATCH") {
        text.push_str("Content-Length: 0\r\n");
    }
    write!(text, "{PROBE_HEADER}: {probe}\r\nConnection: close\r\n\r\n").unwrap();
    text.replace("{P}", &port).into_bytes()
}

/// An access rule of `docs/examples/tessera.toml`, read with a plain TOML parser.
#[derive(Debug)]
struct Rule {
    paths: Vec<String>,
    policy: String,
    roles: Vec<String>,
    /// Needs a second factor: no sender of this harness has one (all sign in with a password).
    two_factor: bool,
}

fn example_rules() -> Vec<Rule> {
    let table: toml::Table = example("tessera.toml").parse().unwrap();
    let strings = |rule: &toml::Table, key: &str| -> Vec<String> {
        rule.get(key)
            .and_then(|v| v.as_array())
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    let rules: Vec<Rule> = table["access_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|rule| {
            let rule = rule.as_table().unwrap();
            // This oracle knows paths, policies, roles and step-up only: fail loudly on
            // anything else. `max_age` needs `two_factor` here, which no sender meets anyway.
            for key in rule.keys() {
                assert!(
                    ["paths", "policy", "roles", "two_factor", "max_age"].contains(&key.as_str()),
                    "the differential oracle does not know `{key}`"
                );
            }
            Rule {
                paths: strings(rule, "paths"),
                policy: rule
                    .get("policy")
                    .and_then(|v| v.as_str())
                    .unwrap_or("authenticated")
                    .to_owned(),
                roles: strings(rule, "roles"),
                two_factor: rule
                    .get("two_factor")
                    .and_then(|v| v.as_bool())
                    .unwrap_or(false),
            }
        })
        .collect();
    assert!(rules.len() >= 3, "{rules:?}");
    rules
}

/// What the rules allow `roles` (`None`: anonymous) on `path` (decoded, normalised): the first
/// rule whose path prefixes match decides; no match is a denial.
fn rules_allow(rules: &[Rule], path: &str, roles: Option<&[&str]>) -> bool {
    let under = |prefix: &str| {
        path == prefix
            || path.starts_with(&format!("{}/", prefix.trim_end_matches('/')))
            || (prefix.ends_with('/') && path.starts_with(prefix))
    };
    let Some(rule) = rules
        .iter()
        .find(|r| r.paths.is_empty() || r.paths.iter().any(|p| under(p)))
    else {
        return false;
    };
    match (rule.policy.as_str(), roles) {
        ("bypass", _) => true,
        // Every sender signed in with a password alone: a second factor is never met.
        ("authenticated", Some(_)) if rule.two_factor => false,
        ("authenticated", Some(held)) => rule.roles.iter().all(|r| held.contains(&r.as_str())),
        _ => false,
    }
}

/// Percent-decodes once; an escape that is not one stays as written.
fn decode_once(bytes: &[u8]) -> Vec<u8> {
    percent_encoding::percent_decode(bytes).collect()
}

/// Removes `;params` from every segment (as Tomcat, Jetty and Spring route).
fn strip_path_parameters(path: &[u8]) -> Vec<u8> {
    let segments: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .map(|segment| segment.split(|&b| b == b';').next().unwrap_or_default())
        .collect();
    segments.join(&b'/')
}

/// Old UTF-8 decoders read the overlong forms of `.` and `/` as those characters.
fn decode_overlong(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        match path[i..] {
            [0xc0, 0xae, ..] => (out.push(b'.'), i += 2),
            [0xc0, 0xaf, ..] => (out.push(b'/'), i += 2),
            [0xe0, 0x80, 0xae, ..] => (out.push(b'.'), i += 3),
            [0xe0, 0x80, 0xaf, ..] => (out.push(b'/'), i += 3),
            [b, ..] => (out.push(b), i += 1),
            [] => unreachable!(),
        };
    }
    out
}

/// Resolves `.` and `..` segments and merges repeated slashes.
fn resolve(path: &[u8]) -> String {
    let text = String::from_utf8_lossy(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            other => segments.push(other),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Every path a back end could route the request target `target` to: as Tomcat/Spring
/// (`;params` stripped before or after decoding), as a plain file server, each also with `\`
/// read as `/`, overlong UTF-8 read as ASCII, and a raw `#` read as a fragment or not.
fn readings(target: &[u8]) -> Vec<String> {
    // An absolute-form target names its path after the authority.
    let path = match target.windows(3).position(|w| w == b"://") {
        Some(at) if !target.starts_with(b"/") => {
            let after = &target[at + 3..];
            after
                .iter()
                .position(|&b| b == b'/')
                .map_or(&b"/"[..], |slash| &after[slash..])
        }
        _ => target,
    };
    let path = path.split(|&b| b == b'?').next().unwrap_or_default();
    let mut raws = vec![path.to_vec()];
    if let Some(hash) = path.iter().position(|&b| b == b'#') {
        raws.push(path[..hash].to_vec());
    }
    let mut out = Vec::new();
    for raw in raws {
        let tomcat_before = decode_once(&strip_path_parameters(&raw));
        let tomcat_after = strip_path_parameters(&decode_once(&raw));
        let file_server = decode_once(&raw);
        for decoded in [tomcat_before, tomcat_after, file_server] {
            let backslashes = decoded
                .iter()
                .map(|&b| if b == b'\\' { b'/' } else { b })
                .collect::<Vec<u8>>();
            for variant in [&decoded, &backslashes] {
                out.push(resolve(variant));
                out.push(resolve(&decode_overlong(variant)));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Why what the app received for a request from `who` should not have reached it, if so.
fn violation(rules: &[Rule], who: Who, receipt: &Receipt) -> Option<String> {
    let refused: Vec<String> = readings(&receipt.target)
        .into_iter()
        .filter(|path| !rules_allow(rules, path, who.roles()))
        .collect();
    if !refused.is_empty() {
        return Some(format!("the rules refuse {who:?} on {refused:?}"));
    }
    // The app must learn who sent it, or nobody (a bypass rule): never someone else.
    for user in receipt.header("x-tessera-user") {
        if !user.is_empty() && Some(user.as_str()) != who.username() {
            return Some(format!("the app was told the user is {user:?}"));
        }
    }
    for roles in receipt.header("x-tessera-roles") {
        let claimed: Vec<&str> = roles.split(',').filter(|r| !r.is_empty()).collect();
        if claimed
            .iter()
            .any(|r| !who.roles().unwrap_or_default().contains(r))
        {
            return Some(format!("the app was told the roles are {roles:?}"));
        }
    }
    None
}

/// Sends the whole corpus through the proxy on `ports.proxy`, as each sender, and checks
/// every request the app received against the rules.
async fn run(proxy: &str, ports: Ports, app: &RecordingApp, tessera_base: &str) {
    let rules = example_rules();
    let editor = session_token(tessera_base, "alice").await;
    let admin = session_token(tessera_base, "admin").await;
    let cases = corpus();
    let mut planned = Vec::new();
    for case in &cases {
        for who in Who::ALL {
            let cookie = match who {
                Who::Anonymous => None,
                Who::Editor => Some(editor.as_str()),
                Who::Admin => Some(admin.as_str()),
            };
            let probe = planned.len();
            planned.push((
                case.clone(),
                who,
                request_bytes(case, ports.proxy, cookie, probe),
            ));
        }
    }
    let sent: Vec<Sent> = futures_util::stream::iter(planned)
        .map(|(case, who, bytes)| async move {
            let answer = raw_exchange(ports.proxy, &bytes).await.map(|(s, _)| s);
            Sent { case, who, answer }
        })
        .buffered(8)
        .collect()
        .await;

    let mut by_probe: BTreeMap<usize, Vec<Receipt>> = BTreeMap::new();
    let mut unmarked = Vec::new();
    for receipt in app.receipts() {
        match receipt.probe().and_then(|p| p.parse().ok()) {
            Some(probe) => by_probe.entry(probe).or_default().push(receipt),
            None => unmarked.push(receipt),
        }
    }
    let mut violations = Vec::new();
    let mut failures = Vec::new();
    for (probe, sent) in sent.iter().enumerate() {
        let request = format!(
            "#{probe} {:?} {} {}{}",
            sent.who,
            sent.case.method,
            sent.case.target.replace("{P}", &ports.proxy.to_string()),
            sent.case
                .headers
                .iter()
                .map(|(n, v)| format!(" [{n}: {v}]"))
                .collect::<String>()
        );
        match &sent.answer {
            Ok(status) if *status >= 500 => failures.push(format!("{request}: {status}")),
            Ok(_) => {}
            Err(error) => failures.push(format!("{request}: {error}")),
        }
        for receipt in by_probe.get(&probe).into_iter().flatten() {
            if let Some(why) = violation(&rules, sent.who, receipt) {
                violations.push(format!(
                    "{request} → {:?} (app saw {} {}): {why}",
                    sent.answer,
                    receipt.method,
                    String::from_utf8_lossy(&receipt.target)
                ));
            }
        }
    }
    // Something the app received that no probe names cannot be judged: that is a failure too.
    for receipt in &unmarked {
        violations.push(format!(
            "unmarked request reached the app: {} {}",
            receipt.method,
            String::from_utf8_lossy(&receipt.target)
        ));
    }
    println!(
        "differential {proxy}: {} requests ({} cases × {} senders), {} reached the app, \
         {} violations, {} 5xx or unanswered",
        sent.len(),
        cases.len(),
        Who::ALL.len(),
        by_probe.len(),
        violations.len(),
        failures.len()
    );
    for line in violations.iter().chain(&failures) {
        println!("  {line}");
    }
    assert!(sent.len() >= 200, "the corpus is at least 200 requests");
    assert_eq!(violations.len(), 0, "{proxy}: violations, listed above");
    assert_eq!(failures.len(), 0, "{proxy}: 5xx or no answer, listed above");
    // The harness can see a pass: plain allowed requests did reach the app.
    assert!(
        by_probe.len() >= 3 * 3,
        "too little reached the app to mean anything"
    );
}

#[tokio::test]
async fn differential_nginx() {
    let ports = spare_ports();
    let app = RecordingApp::start(ports.app).await;
    let tessera = tessera_behind_proxy(ports).await;
    let mut nginx = Nginx::start(ports).await;
    run("nginx", ports, &app, &tessera.base).await;
    nginx.daemon.assert_running();
}

#[tokio::test]
async fn differential_caddy() {
    let ports = spare_ports();
    let app = RecordingApp::start(ports.app).await;
    let tessera = tessera_behind_proxy(ports).await;
    let mut caddy = Caddy::start(ports).await;
    run("caddy", ports, &app, &tessera.base).await;
    caddy.daemon.assert_running();
}

#[tokio::test]
async fn differential_traefik() {
    let ports = spare_ports();
    let app = RecordingApp::start(ports.app).await;
    let tessera = tessera_behind_proxy(ports).await;
    let mut traefik = Traefik::start(ports).await;
    run("traefik", ports, &app, &tessera.base).await;
    traefik.daemon.assert_running();
}

#[test]
fn the_oracle_reads_paths_as_back_ends_do() {
    let rules = example_rules();
    let editor = Who::Editor.roles();
    // Each reading is checked, so the oracle itself can fail.
    assert!(readings(b"/public/..;/admin/x").contains(&"/admin/x".to_owned()));
    assert!(readings(b"/public/%2e%2e/admin").contains(&"/admin".to_owned()));
    assert!(readings(b"/admin;x=1/y").contains(&"/admin/y".to_owned()));
    assert!(readings(b"/public/x#/../../admin").contains(&"/admin".to_owned()));
    assert!(readings(b"/public/x#/../../admin").contains(&"/public/x".to_owned()));
    assert!(readings(b"/public/..%5cadmin").contains(&"/admin".to_owned()));
    assert!(readings(b"/public/%c0%ae%c0%ae/admin").contains(&"/admin".to_owned()));
    assert!(readings(b"http://h:1/public/../admin?x").contains(&"/admin".to_owned()));
    assert_eq!(
        readings(b"/public/%252e%252e/admin"),
        ["/public/%2e%2e/admin"]
    );
    assert!(rules_allow(&rules, "/public/x", None));
    assert!(!rules_allow(&rules, "/publicity", None));
    assert!(rules_allow(&rules, "/publicity", editor));
    assert!(!rules_allow(&rules, "/admin", editor));
    assert!(!rules_allow(&rules, "/admin/x", editor));
    assert!(rules_allow(&rules, "/administrator", editor));
    assert!(rules_allow(&rules, "/admin/x", Who::Admin.roles()));
    assert!(!rules_allow(&rules, "/home", None));
    assert!(!rules_allow(&rules, "/billing/x", Who::Admin.roles()));
    assert!(rules_allow(&rules, "/billingx", editor));
}
