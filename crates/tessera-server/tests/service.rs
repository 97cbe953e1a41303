//! The service's rules without HTTP: a server assembled by the builder on a fresh store with a
//! manual clock, driven through `Tessera`'s own calls (what the HTTP layer and the CLI call).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;

use tessera_core::TokenError;
use tessera_core::at_rest::MasterKey;
use tessera_server::clock::ManualClock;
use tessera_server::service::{Actor, ClientInfo, Delivery, ServiceError, Tessera};
use tessera_server::{Builder, Config, Server};

const PASSWORD: &str = "correct horse battery";
const T0: i64 = 1_800_000_000;

/// A service on its own data directory (removed afterwards), with `alice` (role `editor`).
struct Fixture {
    server: Server,
    clock: Arc<ManualClock>,
    dir: PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!(
            "tessera-service-{}",
            tessera_core::random::id().unwrap()
        ));
        let config = Config {
            data: dir.clone(),
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..Config::default()
        };
        let clock = Arc::new(ManualClock::new(T0));
        let server = Builder::new(config)
            .master_key(MasterKey::generate().unwrap())
            .clock(clock.clone())
            .build()
            .await
            .unwrap();
        server
            .service()
            .create_user(
                &Actor::cli(),
                "alice",
                PASSWORD,
                vec!["editor".into()],
                vec![],
            )
            .await
            .unwrap();
        Fixture { server, clock, dir }
    }

    fn service(&self) -> &Tessera {
        self.server.service()
    }

    async fn login(&self, delivery: Delivery) -> tessera_server::service::Credentials {
        self.login_with(PASSWORD, delivery).await.unwrap()
    }

    /// Two sessions of alice's, a cookie one and a bearer one: their access tokens, and the
    /// bearer session's identity.
    async fn two_sessions(&self) -> (String, String, tessera_server::service::Identity) {
        let cookie = self.login(Delivery::Cookie).await.access_token;
        let bearer = self.login(Delivery::Bearer).await.access_token;
        let identity = self.service().authenticate(&bearer).await.unwrap();
        (cookie, bearer, identity)
    }

    /// Alice's login with `password`, as it answers.
    async fn login_with(
        &self,
        password: &str,
        delivery: Delivery,
    ) -> Result<tessera_server::service::Credentials, ServiceError> {
        self.service()
            .login(
                "alice",
                password,
                None,
                delivery,
                ClientInfo::default(),
                None,
            )
            .await
    }
}

fn token_error(result: Result<impl std::fmt::Debug, ServiceError>) -> TokenError {
    match result {
        Err(ServiceError::Token(error)) => error,
        other => panic!("expected a token error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_logged_out_session_fails_its_next_check_in_both_formats() {
    let f = Fixture::new().await;
    for delivery in [Delivery::Cookie, Delivery::Bearer] {
        let credentials = f.login(delivery).await;
        let identity = f
            .service()
            .authenticate(&credentials.access_token)
            .await
            .unwrap();
        assert_eq!(identity.username, "alice");
        f.service()
            .logout(&identity, ClientInfo::default())
            .await
            .unwrap();
        let after = f.service().authenticate(&credentials.access_token).await;
        assert_eq!(token_error(after), TokenError::Revoked, "{delivery:?}");
    }
}

#[tokio::test]
async fn the_idle_timeout_slides_with_use_and_ends_an_unused_session() {
    let f = Fixture::new().await;
    let idle = f.service().settings().policy.idle_timeout;
    let token = f.login(Delivery::Cookie).await.access_token;
    // Used just inside the idle timeout, twice: each use moves the end.
    for _ in 0..2 {
        f.clock.advance(idle - 90);
        f.service().authenticate(&token).await.unwrap();
    }
    f.clock.advance(idle + 1);
    let after = f.service().authenticate(&token).await;
    assert_eq!(token_error(after), TokenError::Expired);
}

#[tokio::test]
async fn the_absolute_timeout_never_moves_however_often_the_session_is_used() {
    let f = Fixture::new().await;
    let settings = f.service().settings();
    let (idle, absolute) = (
        settings.policy.idle_timeout,
        settings.policy.absolute_timeout,
    );
    let credentials = f.login(Delivery::Cookie).await;
    assert_eq!(credentials.session_expires_at, T0 + absolute);
    let mut now = T0;
    while now + idle / 2 < T0 + absolute {
        f.clock.advance(idle / 2);
        now += idle / 2;
        f.service()
            .authenticate(&credentials.access_token)
            .await
            .unwrap();
    }
    f.clock.advance(T0 + absolute - now + 1);
    let after = f.service().authenticate(&credentials.access_token).await;
    assert_eq!(token_error(after), TokenError::Expired);
}

#[tokio::test]
async fn a_refresh_repeated_in_the_grace_window_returns_the_same_pair_and_a_later_replay_revokes() {
    let f = Fixture::new().await;
    let grace = f.service().settings().refresh_grace;
    let first = f.login(Delivery::Bearer).await;
    let refresh = first.refresh_token.clone().unwrap();
    let next = f
        .service()
        .refresh(&refresh, ClientInfo::default(), None)
        .await
        .unwrap();
    let again = f
        .service()
        .refresh(&refresh, ClientInfo::default(), None)
        .await
        .unwrap();
    assert_eq!(next.access_token, again.access_token, "the same successor");
    assert_eq!(next.refresh_token, again.refresh_token);
    assert_ne!(next.refresh_token, first.refresh_token);

    f.clock.advance(grace + 1);
    let replay = f
        .service()
        .refresh(&refresh, ClientInfo::default(), None)
        .await;
    assert!(
        matches!(replay, Err(ServiceError::RefreshReuse)),
        "{replay:?}"
    );
    // Theft assumed: the whole session is gone, the successor included.
    let successor = f.service().authenticate(&next.access_token).await;
    assert_eq!(token_error(successor), TokenError::Revoked);
    let successor_refresh = f
        .service()
        .refresh(
            next.refresh_token.as_deref().unwrap(),
            ClientInfo::default(),
            None,
        )
        .await;
    assert!(successor_refresh.is_err());
}

#[tokio::test]
async fn a_role_change_ends_every_session_so_no_token_keeps_old_roles() {
    let f = Fixture::new().await;
    let (cookie, bearer, identity) = f.two_sessions().await;
    assert_eq!(identity.roles, vec!["editor".to_owned()]);
    f.service()
        .set_roles(&Actor::cli(), "alice", vec!["viewer".into()])
        .await
        .unwrap();
    for token in [&cookie, &bearer] {
        let after = f.service().authenticate(token).await;
        assert_eq!(token_error(after), TokenError::Revoked);
    }
    let fresh = f.login(Delivery::Bearer).await.access_token;
    let identity = f.service().authenticate(&fresh).await.unwrap();
    assert_eq!(identity.roles, vec!["viewer".to_owned()]);
}

#[tokio::test]
async fn a_password_change_keeps_the_caller_signed_in_and_ends_every_other_session() {
    let f = Fixture::new().await;
    let (other, mine, identity) = f.two_sessions().await;
    let wrong = f
        .service()
        .change_password(
            &identity,
            "not the password",
            "a new long password",
            Delivery::Bearer,
            ClientInfo::default(),
        )
        .await;
    assert!(
        matches!(wrong, Err(ServiceError::InvalidCredentials)),
        "{wrong:?}"
    );
    f.service().authenticate(&other).await.unwrap();

    let fresh = f
        .service()
        .change_password(
            &identity,
            PASSWORD,
            "a new long password",
            Delivery::Bearer,
            ClientInfo::default(),
        )
        .await
        .unwrap();
    f.service().authenticate(&fresh.access_token).await.unwrap();
    for token in [&other, &mine] {
        let after = f.service().authenticate(token).await;
        assert_eq!(token_error(after), TokenError::Revoked);
    }
    let old = f.login_with(PASSWORD, Delivery::Bearer).await;
    assert!(
        matches!(old, Err(ServiceError::InvalidCredentials)),
        "{old:?}"
    );
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_pair_and_the_right_one_waits_too() {
    let f = Fixture::new().await;
    let limit = f.service().settings().throttle.account_max_failures;
    for _ in 0..limit {
        let wrong = f.login_with("wrong password", Delivery::Bearer).await;
        assert!(
            matches!(wrong, Err(ServiceError::InvalidCredentials)),
            "{wrong:?}"
        );
    }
    let locked = f.login_with(PASSWORD, Delivery::Bearer).await;
    assert!(
        matches!(locked, Err(ServiceError::RateLimited { retry_after }) if retry_after > 0),
        "{locked:?}"
    );
}
