//! Passkeys over HTTP, with a real authenticator: Chromium's virtual authenticator (CDP
//! `WebAuthn` domain) answers `navigator.credentials.create`/`get` in a page served from
//! tessera's own origin, and the API calls carry what it produced.

use reqwest::StatusCode;
use serde_json::{Value, json};
use tessera_server::service::EventKind;

use crate::cdp::Browser;
use crate::external::spare_port;
use crate::support::{ClientSession, Delivery, TestServer, audit_of};

/// A server on a known port, with passkeys for the origin `http://localhost:PORT`.
async fn passkey_server() -> (TestServer, String) {
    let port = spare_port();
    let origin = format!("http://localhost:{port}");
    let server = TestServer::start_with(|config| {
        config.listen = format!("127.0.0.1:{port}");
        config.webauthn_rp_id = Some("localhost".into());
        config.webauthn_origins = vec![origin.clone()];
    })
    .await;
    (server, origin)
}

/// Chromium on `page` (of tessera's own origin: WebAuthn binds every credential to it) with
/// the WebAuthn domain on and one authenticator (see [`add_authenticator`]), and its id.
pub async fn page_with_authenticator(page: &str) -> (Browser, String) {
    let mut browser = Browser::launch().await;
    browser.navigate(page).await;
    browser.call("WebAuthn.enable", json!({})).await;
    let authenticator = add_authenticator(&mut browser).await;
    (browser, authenticator)
}

/// A CTAP2 platform authenticator with resident keys that verifies its user.
pub async fn add_authenticator(browser: &mut Browser) -> String {
    let added = browser
        .call(
            "WebAuthn.addVirtualAuthenticator",
            json!({ "options": {
                "protocol": "ctap2", "transport": "internal", "hasResidentKey": true,
                "hasUserVerification": true, "isUserVerified": true,
                "automaticPresenceSimulation": true,
            }}),
        )
        .await;
    added["authenticatorId"]
        .as_str()
        .expect("an authenticator id")
        .to_owned()
}

async fn remove_authenticator(browser: &mut Browser, id: &str) {
    browser
        .call(
            "WebAuthn.removeVirtualAuthenticator",
            json!({ "authenticatorId": id }),
        )
        .await;
}

/// `navigator.credentials.create` with tessera's options; the credential's `toJSON()`.
pub async fn create(browser: &mut Browser, options: &Value) -> Value {
    ceremony(browser, "parseCreationOptionsFromJSON", "create", options).await
}

/// `navigator.credentials.get` with tessera's options; the credential's `toJSON()`.
pub async fn get(browser: &mut Browser, options: &Value) -> Value {
    ceremony(browser, "parseRequestOptionsFromJSON", "get", options).await
}

async fn ceremony(browser: &mut Browser, parse: &str, call: &str, options: &Value) -> Value {
    let script = format!(
        "(async () => {{
            const options = PublicKeyCredential.{parse}({});
            const credential = await navigator.credentials.{call}({{ publicKey: options }});
            return JSON.stringify(credential.toJSON());
        }})()",
        options["publicKey"]
    );
    let answer = browser.eval(&script).await;
    serde_json::from_str(answer.as_str().expect("the authenticator's answer")).unwrap()
}

async fn post(
    server: &TestServer,
    path: &str,
    session: Option<&ClientSession>,
    body: Value,
) -> reqwest::Response {
    let request = server.client.post(server.url(path)).json(&body);
    let request = match session {
        Some(session) => session.authorize(request),
        None => request,
    };
    request.send().await.unwrap()
}

async fn ok_json(response: reqwest::Response) -> Value {
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body
}

/// Registers a passkey for `session` on the browser's current authenticator.
async fn register(
    server: &TestServer,
    browser: &mut Browser,
    session: &ClientSession,
    name: &str,
) -> Value {
    let begun = ok_json(
        post(
            server,
            "/v1/passkeys/registration",
            Some(session),
            json!({}),
        )
        .await,
    )
    .await;
    let options = &begun["options"];
    assert_eq!(
        options["publicKey"]["authenticatorSelection"]["residentKey"], "required",
        "a passkey must be discoverable: {options}"
    );
    let credential = create(browser, options).await;
    let response = post(
        server,
        "/v1/passkeys",
        Some(session),
        json!({ "ceremony": begun["ceremony"], "name": name, "credential": credential }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

/// A username-less sign-in: the ceremony and the authenticator's answer.
async fn assertion(server: &TestServer, browser: &mut Browser) -> (Value, Value) {
    let begun = ok_json(post(server, "/v1/login/passkey/options", None, json!({})).await).await;
    assert!(
        begun["options"]["publicKey"]
            .get("allowCredentials")
            .is_none_or(|c| c.as_array().is_some_and(Vec::is_empty)),
        "a username-less sign-in lists no credential: {begun}"
    );
    assert!(begun["options"].get("mediation").is_none_or(Value::is_null));
    let credential = get(browser, &begun["options"]).await;
    (begun["ceremony"].clone(), credential)
}

#[tokio::test]
async fn a_passkey_registered_over_the_api_signs_in_alone_once_per_challenge_and_clones_are_refused()
 {
    let (server, origin) = passkey_server().await;
    let (mut browser, first) = page_with_authenticator(&format!("{origin}/login")).await;

    // Registration needs a session; alice registers her passkey.
    let alice = server.session("alice", Delivery::Bearer).await;
    let registered = register(&server, &mut browser, &alice, "laptop").await;
    assert_eq!(registered["name"], "laptop");
    let listed = ok_json(
        alice
            .authorize(server.client.get(server.url("/v1/passkeys")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["passkeys"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["passkeys"][0]["id"], registered["id"]);
    assert_eq!(audit_of(&server, EventKind::FactorEnrolled).await.len(), 1);

    // The same authenticator cannot register it twice: the options exclude it.
    let again = ok_json(
        post(
            &server,
            "/v1/passkeys/registration",
            Some(&alice),
            json!({}),
        )
        .await,
    )
    .await;
    let excluded = again["options"]["publicKey"]["excludeCredentials"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(excluded.len(), 1);
    assert_eq!(excluded[0]["id"], registered["id"]);

    // Signing in with the passkey alone: no username, no password; AAL2.
    let (ceremony, credential) = assertion(&server, &mut browser).await;
    let body = json!({ "ceremony": ceremony, "credential": credential, "delivery": "bearer" });
    let response = post(&server, "/v1/login/passkey", None, body.clone()).await;
    let signed_in = ClientSession::from_login(Delivery::Bearer, response).await;
    let session = ok_json(
        signed_in
            .authorize(server.client.get(server.url("/v1/session")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(session["user"]["username"], "alice");
    assert_eq!(session["acr"], "aal2", "{session}");
    let amr = session["amr"].as_array().unwrap();
    assert!(amr.contains(&json!("user")), "{session}");
    assert!(
        amr.contains(&json!("hwk")) || amr.contains(&json!("swk")),
        "{session}"
    );
    assert!(!amr.contains(&json!("pwd")), "{session}");

    // The same answer again: the ceremony is spent.
    let replay = post(&server, "/v1/login/passkey", None, body).await;
    assert_eq!(replay.status(), StatusCode::UNAUTHORIZED);

    // After a username: the passkey must be that user's (alice's is not admin's).
    for (named, status) in [
        ("admin", StatusCode::UNAUTHORIZED),
        ("alice", StatusCode::OK),
    ] {
        let (ceremony, credential) = assertion(&server, &mut browser).await;
        let body = json!({
            "ceremony": ceremony, "credential": credential, "username": named,
            "delivery": "bearer",
        });
        let response = post(&server, "/v1/login/passkey", None, body).await;
        assert_eq!(response.status(), status, "named {named}");
    }
    let listed = ok_json(
        alice
            .authorize(server.client.get(server.url("/v1/passkeys")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(listed["passkeys"][0]["last_used_at"].is_i64(), "{listed}");

    // Step-up of a password session with the passkey: the new session has both.
    let begun = ok_json(
        post(
            &server,
            "/v1/step-up/passkey/options",
            Some(&alice),
            json!({}),
        )
        .await,
    )
    .await;
    let credential = get(&mut browser, &begun["options"]).await;
    let response = post(
        &server,
        "/v1/step-up/passkey",
        Some(&alice),
        json!({ "ceremony": begun["ceremony"], "credential": credential }),
    )
    .await;
    let stepped = ClientSession::from_login(Delivery::Bearer, response).await;
    let session = ok_json(
        stepped
            .authorize(server.client.get(server.url("/v1/session")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let amr = session["amr"].as_array().unwrap();
    assert!(
        amr.contains(&json!("pwd")) && amr.contains(&json!("user")),
        "{session}"
    );
    let old = alice
        .authorize(server.client.get(server.url("/v1/session")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        StatusCode::UNAUTHORIZED,
        "the stepped-up session ended"
    );

    // A cloned authenticator: the same key with a lower signature counter is refused, and
    // audited as a possible clone.
    let credentials = browser
        .call(
            "WebAuthn.getCredentials",
            json!({ "authenticatorId": first }),
        )
        .await;
    let mut cloned = credentials["credentials"][0].clone();
    assert!(cloned["signCount"].as_u64().unwrap() >= 2, "{cloned}");
    cloned["signCount"] = json!(0);
    remove_authenticator(&mut browser, &first).await;
    let clone = add_authenticator(&mut browser).await;
    browser
        .call(
            "WebAuthn.addCredential",
            json!({ "authenticatorId": clone, "credential": cloned }),
        )
        .await;
    let (ceremony, credential) = assertion(&server, &mut browser).await;
    let response = post(
        &server,
        "/v1/login/passkey",
        None,
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let clones = audit_of(&server, EventKind::PasskeyPossiblyCloned).await;
    assert_eq!(clones.len(), 1, "{clones:?}");
    assert_eq!(clones[0].subject.as_deref(), Some("alice"));
    remove_authenticator(&mut browser, &clone).await;

    // An authenticator whose credential was never registered (the registration was not
    // finished) is refused, and the failure audited.
    let unregistered = add_authenticator(&mut browser).await;
    let begun = ok_json(
        post(
            &server,
            "/v1/passkeys/registration",
            Some(&stepped),
            json!({}),
        )
        .await,
    )
    .await;
    let _never_sent = create(&mut browser, &begun["options"]).await;
    let (ceremony, credential) = assertion(&server, &mut browser).await;
    let response = post(
        &server,
        "/v1/login/passkey",
        None,
        json!({ "ceremony": ceremony, "credential": credential }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        audit_of(&server, EventKind::PasskeyFailed)
            .await
            .iter()
            .any(|e| e
                .detail
                .as_deref()
                .is_some_and(|d| d.contains("unknown credential"))),
        "the unknown credential is audited"
    );
    remove_authenticator(&mut browser, &unregistered).await;

    // Rename and remove (the stepped-up session is recent).
    let id = registered["id"].as_str().unwrap();
    let renamed = stepped
        .authorize(
            server
                .client
                .patch(server.url(&format!("/v1/passkeys/{id}"))),
        )
        .json(&json!({ "name": "old laptop" }))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::NO_CONTENT);
    let removed = stepped
        .authorize(
            server
                .client
                .delete(server.url(&format!("/v1/passkeys/{id}"))),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), StatusCode::NO_CONTENT);
    let listed = ok_json(
        stepped
            .authorize(server.client.get(server.url("/v1/passkeys")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(listed["passkeys"], json!([]));
    browser.close().await;
}

#[tokio::test]
async fn passkeys_are_off_without_a_relying_party_and_registration_needs_a_recent_sign_in() {
    let server = TestServer::start().await;
    let response = post(&server, "/v1/login/passkey/options", None, json!({})).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(crate::support::problem_code(response).await, "forbidden");

    let (server, _origin) = passkey_server().await;
    let alice = server.session("alice", Delivery::Bearer).await;
    server.advance(601);
    let response = post(
        &server,
        "/v1/passkeys/registration",
        Some(&alice),
        json!({}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        crate::support::problem_code(response).await,
        "step_up_required"
    );
    // An unknown or forged ceremony signs nobody in.
    let response = post(
        &server,
        "/v1/login/passkey",
        None,
        json!({ "ceremony": "forged", "credential": {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": { "authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA" },
            "clientExtensionResults": {}
        }}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn resetting_a_users_factors_removes_their_passkeys() {
    let server = TestServer::start().await;
    let store = server.service.store();
    let alice = store.user_by_name("alice").await.unwrap().unwrap();
    let passkey = tessera_store::PasskeyRecord {
        credential_id: vec![1, 2, 3],
        user_id: alice.id.clone(),
        name: "lost phone".into(),
        passkey: b"{}".to_vec(),
        created_at: server.service.now(),
        last_used_at: None,
    };
    assert!(store.add_passkey(&passkey).await.unwrap());
    let actor = tessera_server::service::Actor::cli();
    assert!(server.service.reset_factors(&actor, "alice").await.unwrap());
    assert_eq!(store.passkeys(&alice.id).await.unwrap(), vec![]);
}

/// The session the browser's cookie holds, as `GET /v1/session` shows it.
async fn browser_session(browser: &mut Browser) -> Value {
    let text = browser
        .text("fetch('/v1/session').then(r => r.text())")
        .await;
    serde_json::from_str(&text).unwrap()
}

/// Whether the element's passkey control is shown (the script un-hides it).
fn shown(selector: &str) -> String {
    format!(
        "(() => {{ const e = document.querySelector('{selector}'); \
         return !!e && e.getClientRects().length > 0; }})()"
    )
}

/// A log-in with a passkey on the login page that tessera refuses: the page says so and stays.
async fn refused_on_the_login_page(browser: &mut Browser, origin: &str) {
    browser.navigate(&format!("{origin}/login")).await;
    browser.wait_until(&shown("#passkey-login")).await;
    browser.click("#passkey-login").await;
    browser.wait_until(&shown("#passkey-error")).await;
    assert_eq!(
        browser
            .text("document.getElementById('passkey-error').innerText")
            .await,
        "Log-in with that passkey failed."
    );
    assert_eq!(browser.url().await, format!("{origin}/login"));
    assert!(
        browser.cookies(origin).await.is_empty(),
        "no session cookie was set"
    );
}

#[tokio::test]
async fn a_browser_adds_a_passkey_on_the_account_page_and_logs_in_and_steps_up_with_it_alone() {
    let (server, origin) = passkey_server().await;
    let artifacts = crate::external::artifacts_dir();
    let (mut browser, laptop) = page_with_authenticator(&format!("{origin}/login")).await;

    // The login page loads the one script from its own origin and nothing else may run.
    let page = server
        .client
        .get(format!("{origin}/login"))
        .send()
        .await
        .unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self';") && !csp.contains("unsafe"),
        "{csp}"
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"<script src="/static/passkeys.js" defer></script>"#));
    assert_eq!(html.matches("<script").count(), 1, "no inline script");

    // alice logs in with her password and adds a passkey named "laptop".
    browser.type_into("#username", "alice").await;
    browser
        .type_into("#password", crate::support::PASSWORD)
        .await;
    browser.click_and_wait("button[type=submit]").await;
    assert_eq!(browser.url().await, format!("{origin}/account"));
    assert!(browser.body_text().await.contains("No passkeys yet"));
    browser.wait_until(&shown("#passkey-add-button")).await;
    browser.type_into("#passkey-name", "laptop").await;
    browser.click_and_wait("#passkey-add-button").await;
    assert_eq!(
        browser.url().await,
        format!("{origin}/account?done=passkey_added")
    );
    assert_eq!(
        browser
            .text("document.querySelector('#passkey-list .passkey-name').innerText")
            .await,
        "laptop"
    );
    browser
        .eval("document.getElementById('passkeys').scrollIntoView()")
        .await;
    browser
        .screenshot(&artifacts.join("passkey-account.png"))
        .await;

    // Renaming is a plain form: it needs no script.
    browser.type_into("#rename-1", "work laptop").await;
    browser
        .click_and_wait("#passkey-list form.inline button")
        .await;
    assert_eq!(
        browser.url().await,
        format!("{origin}/account?done=passkey_renamed")
    );
    assert!(browser.body_text().await.contains("work laptop"));

    // Logged out, alice logs in with the passkey alone: no username, no password.
    browser.click_and_wait("#logout").await;
    browser
        .navigate(&format!("{origin}/login?rd=%2Faccount%3Fvia%3Dpasskey"))
        .await;
    browser.wait_until(&shown("#passkey-login")).await;
    browser
        .screenshot(&artifacts.join("passkey-login.png"))
        .await;
    browser.click_and_wait("#passkey-login").await;
    assert_eq!(browser.url().await, format!("{origin}/account?via=passkey"));
    let session = browser_session(&mut browser).await;
    assert_eq!(session["user"]["username"], "alice", "{session}");
    assert_eq!(
        session["acr"], "aal2",
        "a verified passkey is AAL2: {session}"
    );
    let amr = session["amr"].as_array().unwrap();
    assert!(
        amr.contains(&json!("user")) && !amr.contains(&json!("pwd")),
        "{session}"
    );
    assert!(
        browser.body_text().await.contains("last used"),
        "the list shows the passkey's use"
    );

    // A password session asked for a second factor (as /v1/verify sends a browser) is offered
    // the passkey alone, and returns stepped up.
    browser.click_and_wait("#logout").await;
    browser.navigate(&format!("{origin}/login")).await;
    browser.type_into("#username", "alice").await;
    browser
        .type_into("#password", crate::support::PASSWORD)
        .await;
    browser.click_and_wait("button[type=submit]").await;
    assert_eq!(browser_session(&mut browser).await["acr"], "aal1");
    browser
        .navigate(&format!("{origin}/login?rd=%2Faccount%3Fstepped&aal=2"))
        .await;
    assert_eq!(
        browser.text("document.title").await,
        "Use your passkey · tessera"
    );
    assert_eq!(
        browser
            .eval("document.querySelector('form[action=\"/account/step-up\"]') === null")
            .await,
        json!(true),
        "an account whose second factor is a passkey is asked for nothing else"
    );
    browser.wait_until(&shown("#passkey-step-up")).await;
    browser
        .screenshot(&artifacts.join("passkey-step-up.png"))
        .await;
    browser.click_and_wait("#passkey-step-up").await;
    assert_eq!(browser.url().await, format!("{origin}/account?stepped"));
    let stepped = browser_session(&mut browser).await;
    assert_eq!(stepped["acr"], "aal2", "{stepped}");
    let amr = stepped["amr"].as_array().unwrap();
    assert!(
        amr.contains(&json!("pwd")) && amr.contains(&json!("user")),
        "{stepped}"
    );

    // The passkey as the laptop's authenticator holds it now, counter and all.
    let held = browser
        .call(
            "WebAuthn.getCredentials",
            json!({ "authenticatorId": laptop }),
        )
        .await;
    let mut cloned = held["credentials"][0].clone();
    assert!(cloned["signCount"].as_u64().unwrap() >= 2, "{cloned}");
    remove_authenticator(&mut browser, &laptop).await;
    browser.click_and_wait("#logout").await;

    // Another authenticator, whose credential tessera never registered, is refused.
    let stranger = add_authenticator(&mut browser).await;
    let admin = server.session("admin", Delivery::Bearer).await;
    let begun = ok_json(
        post(
            &server,
            "/v1/passkeys/registration",
            Some(&admin),
            json!({}),
        )
        .await,
    )
    .await;
    let _never_finished = create(&mut browser, &begun["options"]).await;
    refused_on_the_login_page(&mut browser, &origin).await;
    browser
        .screenshot(&artifacts.join("passkey-refused.png"))
        .await;
    remove_authenticator(&mut browser, &stranger).await;

    // A clone of the laptop's passkey whose counter went back is refused, and audited.
    cloned["signCount"] = json!(0);
    let clone = add_authenticator(&mut browser).await;
    browser
        .call(
            "WebAuthn.addCredential",
            json!({ "authenticatorId": clone, "credential": cloned }),
        )
        .await;
    refused_on_the_login_page(&mut browser, &origin).await;
    let clones = audit_of(&server, EventKind::PasskeyPossiblyCloned).await;
    assert_eq!(clones.len(), 1, "{clones:?}");
    assert_eq!(clones[0].subject.as_deref(), Some("alice"));

    // Removing it is a plain form too (the sign-in is recent).
    browser.navigate(&format!("{origin}/login")).await;
    browser.type_into("#username", "alice").await;
    browser
        .type_into("#password", crate::support::PASSWORD)
        .await;
    browser.click_and_wait("button[type=submit]").await;
    browser.click_and_wait(".passkey-remove").await;
    assert_eq!(
        browser.url().await,
        format!("{origin}/account?done=passkey_removed")
    );
    assert!(browser.body_text().await.contains("No passkeys yet"));
    browser.close().await;
}

/// An assertion made for another origin, or for another relying-party id, by the very
/// authenticator that holds alice's passkey: both refused and audited, while the same passkey
/// signs in from the configured origin.
#[tokio::test]
async fn an_assertion_for_another_origin_or_relying_party_is_refused() {
    let port = spare_port();
    let origin = format!("http://localhost:{port}");
    // A subdomain the configuration allows as an origin, so only the RP id is wrong there.
    let subdomain = format!("http://a.localhost:{port}");
    let server = TestServer::start_with(|config| {
        config.listen = format!("127.0.0.1:{port}");
        config.webauthn_rp_id = Some("localhost".into());
        config.webauthn_origins = vec![origin.clone(), subdomain.clone()];
    })
    .await;
    let (mut browser, laptop) = page_with_authenticator(&format!("{origin}/login")).await;
    let alice = server.session("alice", Delivery::Bearer).await;
    register(&server, &mut browser, &alice, "laptop").await;
    let login = |ceremony: Value, credential: Value| {
        let server = &server;
        async move {
            post(
                server,
                "/v1/login/passkey",
                None,
                json!({ "ceremony": ceremony, "credential": credential, "delivery": "bearer" }),
            )
            .await
            .status()
        }
    };
    let failures = || async { audit_of(&server, EventKind::PasskeyFailed).await.len() };

    // From the configured origin, it signs in.
    let (ceremony, credential) = assertion(&server, &mut browser).await;
    assert_eq!(login(ceremony, credential).await, StatusCode::OK);

    // The same passkey, the same RP id, a page of another origin (another port): the browser
    // names that origin in what it signs, and tessera refuses it.
    let other = TestServer::start().await;
    browser
        .navigate(&other.url("/login").replace("127.0.0.1", "localhost"))
        .await;
    let (ceremony, credential) = assertion(&server, &mut browser).await;
    assert_eq!(login(ceremony, credential).await, StatusCode::UNAUTHORIZED);
    assert_eq!(failures().await, 1, "the wrong origin is audited");

    // An allowed origin, but the passkey (its key copied to a credential for the subdomain)
    // signs for another RP id: refused too.
    browser.navigate(&format!("{subdomain}/login")).await;
    let held = browser
        .call(
            "WebAuthn.getCredentials",
            json!({ "authenticatorId": laptop }),
        )
        .await;
    let mut copied = held["credentials"][0].clone();
    copied["rpId"] = json!("a.localhost");
    remove_authenticator(&mut browser, &laptop).await;
    let elsewhere = add_authenticator(&mut browser).await;
    browser
        .call(
            "WebAuthn.addCredential",
            json!({ "authenticatorId": elsewhere, "credential": copied }),
        )
        .await;
    let begun = ok_json(post(&server, "/v1/login/passkey/options", None, json!({})).await).await;
    let mut options = begun["options"].clone();
    options["publicKey"]["rpId"] = json!("a.localhost");
    let credential = get(&mut browser, &options).await;
    assert_eq!(
        login(begun["ceremony"].clone(), credential).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(failures().await, 2, "the wrong RP id is audited");
    let details: Vec<String> = audit_of(&server, EventKind::PasskeyFailed)
        .await
        .into_iter()
        .filter_map(|e| e.detail)
        .collect();
    // Each refused for its own reason, by the relying party's checks (not as unknown).
    for reason in [
        "relying party origin does not match",
        "relying party id hash does not match",
    ] {
        assert!(
            details.iter().any(|d| d.contains(reason)),
            "{reason}: {details:?}"
        );
    }
    browser.close().await;
}

/// A clone racing the real authenticator: both sign a challenge with the same next counter,
/// and both answers arrive at once. Each is valid against the stored counter on its own; the
/// store's compare-and-set lets one sign in and refuses the other as a possible clone.
#[tokio::test]
async fn a_clone_racing_the_real_authenticator_gets_one_sign_in_between_them() {
    let (server, origin) = passkey_server().await;
    let (mut browser, real) = page_with_authenticator(&format!("{origin}/login")).await;
    let alice = server.session("alice", Delivery::Bearer).await;
    register(&server, &mut browser, &alice, "laptop").await;
    let held = browser
        .call(
            "WebAuthn.getCredentials",
            json!({ "authenticatorId": real }),
        )
        .await;
    let copy = held["credentials"][0].clone();

    let (first_ceremony, first) = assertion(&server, &mut browser).await;
    remove_authenticator(&mut browser, &real).await;
    let clone = add_authenticator(&mut browser).await;
    browser
        .call(
            "WebAuthn.addCredential",
            json!({ "authenticatorId": clone, "credential": copy }),
        )
        .await;
    let (second_ceremony, second) = assertion(&server, &mut browser).await;

    let sign_in = |ceremony: Value, credential: Value| {
        let body = json!({ "ceremony": ceremony, "credential": credential, "delivery": "bearer" });
        post(&server, "/v1/login/passkey", None, body)
    };
    let (a, b) = tokio::join!(
        sign_in(first_ceremony, first),
        sign_in(second_ceremony, second)
    );
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::UNAUTHORIZED],
        "one of the two gets in"
    );
    let clones = audit_of(&server, EventKind::PasskeyPossiblyCloned).await;
    assert_eq!(
        clones.len(),
        1,
        "the other is audited as a clone: {clones:?}"
    );
    browser.close().await;
}
