//! A small driver for headless Chromium over the DevTools protocol (CDP): JSON messages over
//! one WebSocket, in order. Written here because the tests need only a handful of commands
//! (navigate, evaluate, type, click, cookies, screenshot), and the CDP client crates bring a
//! generated binding of the whole protocol that takes longer to build than all of tessera.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use crate::external::{Daemon, program};
use crate::support::TempDir;

/// How long any one step may take.
const STEP: Duration = Duration::from_secs(30);

/// A headless Chromium with one page, stopped on drop.
pub struct Browser {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    session: String,
    events: Vec<Value>,
    /// Every console and browser log message seen so far (CSP violations land here).
    pub log: Vec<String>,
    daemon: Daemon,
    _dir: TempDir,
}

impl Browser {
    /// Starts Debian's Chromium with a fresh profile and opens a page.
    pub async fn launch() -> Browser {
        let chromium = program("chromium", "apt-get install -y chromium");
        let dir = TempDir::new();
        let profile = dir.0.join("profile");
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1024,768",
                "--lang=en-US",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank");
        let daemon = Daemon::spawn("chromium", command, dir.0.join("chromium.log"));
        // Chromium writes the port it picked and the browser's WebSocket path here.
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + STEP;
        let endpoint = loop {
            if let Ok(text) = std::fs::read_to_string(&port_file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    break format!("ws://127.0.0.1:{port}{path}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not open its DevTools port:\n{}",
                daemon.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (ws, _) = connect_async(endpoint).await.unwrap();
        let mut browser = Browser {
            ws,
            next_id: 1,
            session: String::new(),
            events: Vec::new(),
            log: Vec::new(),
            daemon,
            _dir: dir,
        };
        let target = browser
            .send(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let attached = browser
            .send(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target["targetId"], "flatten": true }),
            )
            .await;
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in [
            "Page.enable",
            "Runtime.enable",
            "Log.enable",
            "Network.enable",
        ] {
            browser.call(domain, json!({})).await;
        }
        browser
            .call(
                "Emulation.setDeviceMetricsOverride",
                json!({ "width": 1024, "height": 768, "deviceScaleFactor": 1, "mobile": false }),
            )
            .await;
        browser
    }

    /// Sends a command (to the page's session, or to the browser) and waits for its result.
    async fn send(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::Text(message.to_string().into()))
            .await
            .unwrap();
        loop {
            let message = self.next_message(method).await;
            if message["id"] == json!(id) {
                if let Some(error) = message.get("error") {
                    panic!("{method} failed: {error}");
                }
                return message["result"].clone();
            }
            self.events.push(message);
        }
    }

    async fn next_message(&mut self, waiting_for: &str) -> Value {
        loop {
            let frame = tokio::time::timeout(STEP, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("chromium did not answer in time ({waiting_for})"))
                .unwrap_or_else(|| panic!("chromium closed the connection ({waiting_for})"))
                .unwrap();
            let Message::Text(text) = frame else { continue };
            let message: Value = serde_json::from_str(&text).unwrap();
            match message["method"].as_str() {
                Some("Log.entryAdded") => self.log.push(format!(
                    "{}: {}",
                    message["params"]["entry"]["level"], message["params"]["entry"]["text"]
                )),
                Some("Runtime.consoleAPICalled") => self
                    .log
                    .push(format!("console: {}", message["params"]["args"])),
                _ => {}
            }
            return message;
        }
    }

    async fn wait_event(&mut self, method: &str) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i);
        }
        loop {
            let message = self.next_message(method).await;
            if message["method"] == method {
                return message;
            }
            self.events.push(message);
        }
    }

    /// A command to the page.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(Some(&session), method, params).await
    }

    /// Evaluates JavaScript in the page (as DevTools does; the page's CSP does not apply) and
    /// returns its value.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// `eval` for a string result.
    pub async fn text(&mut self, expression: &str) -> String {
        match self.eval(expression).await {
            Value::String(s) => s,
            other => panic!("{expression} is not a string: {other}"),
        }
    }

    /// The page's address.
    pub async fn url(&mut self) -> String {
        self.text("location.href").await
    }

    /// The visible text of the page.
    pub async fn body_text(&mut self) -> String {
        self.text("document.body ? document.body.innerText : ''")
            .await
    }

    /// Opens `url` and waits until the page (after any redirects) has loaded.
    pub async fn navigate(&mut self, url: &str) {
        self.events.clear();
        let result = self.call("Page.navigate", json!({ "url": url })).await;
        if let Some(error) = result["errorText"].as_str().filter(|e| !e.is_empty()) {
            panic!("navigating to {url} failed: {error}");
        }
        self.wait_event("Page.loadEventFired").await;
    }

    /// Clicks the centre of the element, as a person would with a mouse.
    pub async fn click(&mut self, selector: &str) {
        let selector = serde_json::to_string(selector).unwrap();
        let point = self
            .eval(&format!(
                "(() => {{ const e = document.querySelector({selector}); if (!e) return null; \
                 e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
            ))
            .await;
        let (Some(x), Some(y)) = (point[0].as_f64(), point[1].as_f64()) else {
            panic!("nothing to click at {selector}");
        };
        self.events.clear();
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({ "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1 }),
            )
            .await;
        }
    }

    /// Clicks and waits for the page that the click leads to.
    pub async fn click_and_wait(&mut self, selector: &str) {
        self.click(selector).await;
        self.wait_event("Page.loadEventFired").await;
    }

    /// Focuses a field and types into it.
    pub async fn type_into(&mut self, selector: &str, text: &str) {
        let quoted = serde_json::to_string(selector).unwrap();
        self.eval(&format!(
            "(() => {{ const e = document.querySelector({quoted}); e.focus(); e.value = ''; }})()"
        ))
        .await;
        self.call("Input.insertText", json!({ "text": text })).await;
    }

    /// Waits until a JavaScript condition holds in the page (polled), or fails after a while.
    pub async fn wait_until(&mut self, condition: &str) {
        let deadline = Instant::now() + STEP;
        while self.eval(condition).await != Value::Bool(true) {
            assert!(
                Instant::now() < deadline,
                "{condition} did not hold in time; the page's log: {:?}",
                self.log
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The browser's cookies for `url`, `HttpOnly` ones included.
    pub async fn cookies(&mut self, url: &str) -> Vec<Value> {
        let result = self
            .call("Network.getCookies", json!({ "urls": [url] }))
            .await;
        result["cookies"].as_array().cloned().unwrap_or_default()
    }

    /// Saves a PNG of the page.
    pub async fn screenshot(&mut self, path: &Path) {
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG image");
        std::fs::write(path, png).unwrap();
    }

    /// Closes the browser cleanly (the drop of the process group is the fallback).
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            self.ws.send(Message::Text(
                json!({ "id": 0, "method": "Browser.close" })
                    .to_string()
                    .into(),
            )),
        )
        .await;
    }
}
