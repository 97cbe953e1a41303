//! The builder assembles the server `tessera serve` runs: what a program embedding it sees.
//! (A test binary of its own: the builder installs the process-wide metrics recorder, which
//! the metrics module's unit tests must not share.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;

use tessera_core::at_rest::MasterKey;
use tessera_server::builder::BuildError;
use tessera_server::master_key::{self, MasterKeyError, MasterKeySource};
use tessera_server::serve::ServeError;
use tessera_server::service::{ClientInfo, Delivery};
use tessera_server::{Builder, Config};

/// A data directory of its own, removed afterwards.
struct Data(PathBuf);

impl Data {
    fn new() -> Data {
        Data(std::env::temp_dir().join(format!(
            "tessera-builder-{}",
            tessera_core::random::id().unwrap()
        )))
    }

    fn config(&self) -> Config {
        Config {
            data: self.0.join("data"),
            listen: "127.0.0.1:0".into(),
            argon2_memory_kib: 64,
            argon2_iterations: 1,
            ..Config::default()
        }
    }
}

impl Drop for Data {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `admin` can log in with `password`.
async fn admin_logs_in(server: &tessera_server::Server, password: &str) -> bool {
    let service = server.service();
    let login = service.login(
        "admin",
        password,
        None,
        Delivery::Bearer,
        ClientInfo::default(),
        None,
    );
    login.await.is_ok()
}

#[tokio::test]
async fn the_default_build_keeps_everything_in_a_private_data_directory() {
    let data = Data::new();
    let server = Builder::new(data.config()).build().await.unwrap();
    let dir = data.0.join("data");
    assert!(dir.join("tessera.db").is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o700,
            "the data directory is the owner's only"
        );
    }
    // First start: no key anywhere, so one is generated beside the data.
    assert_eq!(
        server.master_key_source(),
        &MasterKeySource::Generated(dir.join(master_key::DEFAULT_FILE))
    );
    let jwks = server.service().key_ring().jwks();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    drop(server);

    // Second start: the same key file is read, and the stored signing key decrypts.
    let again = Builder::new(data.config()).build().await.unwrap();
    assert_eq!(
        again.master_key_source(),
        &MasterKeySource::File(dir.join(master_key::DEFAULT_FILE))
    );
}

#[tokio::test]
async fn a_store_with_signing_keys_and_no_master_key_is_refused() {
    let data = Data::new();
    drop(Builder::new(data.config()).build().await.unwrap());
    std::fs::remove_file(data.0.join("data").join(master_key::DEFAULT_FILE)).unwrap();
    let error = Builder::new(data.config()).build().await.err().unwrap();
    assert!(
        matches!(error, BuildError::MasterKey(MasterKeyError::Missing(_))),
        "{error}"
    );
}

#[tokio::test]
async fn a_wrong_master_key_names_where_it_came_from() {
    let data = Data::new();
    drop(Builder::new(data.config()).build().await.unwrap());
    let error = Builder::new(data.config())
        .master_key(MasterKey::generate().unwrap())
        .build()
        .await
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("master key from the assembling program"),
        "{error}"
    );
}

#[tokio::test]
async fn the_first_admin_is_created_once_with_a_generated_password() {
    let data = Data::new();
    let server = Builder::new(data.config()).build().await.unwrap();
    let admin = server.create_first_admin(None).await.unwrap().unwrap();
    let password = admin.generated_password.unwrap();
    assert!(password.len() >= 22, "128 random bits");
    assert!(server.create_first_admin(None).await.unwrap().is_none());
    let user = server.service().user("admin").await.unwrap();
    assert_eq!(user.roles, vec!["admin".to_owned()]);
    assert!(
        admin_logs_in(&server, &password).await,
        "the generated password logs in"
    );
}

#[tokio::test]
async fn the_given_admin_password_is_used_and_not_echoed() {
    let data = Data::new();
    let server = Builder::new(data.config()).build().await.unwrap();
    let given = "a long admin password";
    let admin = server
        .create_first_admin(Some(given.into()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.generated_password, None);
    assert!(
        admin_logs_in(&server, given).await,
        "the given password logs in"
    );
}

#[tokio::test]
async fn serve_answers_on_the_bound_address_and_stops_on_shutdown() {
    let data = Data::new();
    let server = Builder::new(data.config()).build().await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (bound, address) = tokio::sync::oneshot::channel();
    let running = tokio::spawn(server.serve(
        move |addr| {
            let _ = bound.send(addr);
        },
        async move {
            let _ = stopped.await;
        },
    ));
    let addr = address.await.unwrap();
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
    assert!(
        reqwest::get(format!("http://{addr}/healthz"))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn plain_http_off_loopback_is_refused_before_serving() {
    let data = Data::new();
    let mut config = data.config();
    config.listen = "0.0.0.0:0".into();
    let server = Builder::new(config).build().await.unwrap();
    let error = server
        .serve(|_| panic!("nothing may be bound"), std::future::pending())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, ServeError::PlainHttpOnNetwork(_)),
        "{error}"
    );
}
