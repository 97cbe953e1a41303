use std::time::{Duration, Instant};

use tessera_store::StoreError;
use tessera_store::conformance::{Fixture, test_service_url};
use tessera_store::events::{EventBus, Notice, StoreEvent};
use tessera_store::prelude::*;

use super::{PgStore, TestSchema};

/// A store on a fresh schema of the test database; the schema is dropped afterwards. The store
/// is declared first so its pool closes before the schema goes.
struct PgFixture {
    store: PgStore,
    _schema: TestSchema,
}

impl Fixture for PgFixture {
    fn store(&self) -> &dyn Store {
        &self.store
    }
}

fn database_url() -> Option<String> {
    test_service_url("TESSERA_TEST_DATABASE_URL")
}

async fn fresh() -> Option<PgFixture> {
    let schema = TestSchema::create(&database_url()?).await.unwrap();
    let store = PgStore::open(schema.url()).await.unwrap();
    Some(PgFixture {
        store,
        _schema: schema,
    })
}

tessera_store::store_conformance_tests!(optional fresh);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_starting_at_once_migrate_once() {
    let Some(url) = database_url() else { return };
    let schema = TestSchema::create(&url).await.unwrap();
    let (a, b, c) = tokio::join!(
        PgStore::open(schema.url()),
        PgStore::open(schema.url()),
        PgStore::open(schema.url()),
    );
    let (a, _b, _c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let again = a.migrate().await.unwrap();
    assert_eq!(again.from, PgStore::latest_version());
    assert_eq!(again.to, PgStore::latest_version());
    let client = a.client().await.unwrap();
    let rows = client
        .query(
            "SELECT version FROM tessera_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<i32> = (1..=PgStore::latest_version() as i32).collect();
    assert_eq!(versions, want, "each step applied exactly once");
}

/// Sessions stored before their `amr` was (all of them password logins) read back as
/// PASSWORD after the migration, and unbound to any DPoP key (`jkt`, a later step); a value that is not a byte is refused on write and, written
/// around the check, corrupt on read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_from_before_amr_was_stored_were_password_logins() {
    use tessera_core::assurance::{Method, Methods};
    let Some(url) = database_url() else { return };
    let schema = TestSchema::create(&url).await.unwrap();
    let store = PgStore::connect(schema.url()).await.unwrap();
    let amr_step = crate::schema::MIGRATIONS
        .iter()
        .position(|step| step.contains("ADD COLUMN amr"))
        .unwrap();
    {
        let client = store.client().await.unwrap();
        client
            .batch_execute(
                "CREATE TABLE tessera_migrations (
                     version    INTEGER NOT NULL PRIMARY KEY,
                     applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
                 )",
            )
            .await
            .unwrap();
        for (i, step) in crate::schema::MIGRATIONS[..amr_step].iter().enumerate() {
            client.batch_execute(step).await.unwrap();
            client
                .execute(
                    "INSERT INTO tessera_migrations (version) VALUES ($1)",
                    &[&(i as i32 + 1)],
                )
                .await
                .unwrap();
        }
        client
            .batch_execute(
                "INSERT INTO users (id, username, password_hash, roles, permissions, disabled,
                     created_at) VALUES ('u1', 'old', 'x', '{}', '{}', false, 1);
                 INSERT INTO sessions (id, user_id, created_at, last_seen_at, idle_expires_at,
                     absolute_expires_at) VALUES ('s1', 'u1', 1, 1, 1000, 2000),
                     ('s2', 'u1', 1, 1, 1000, 2000);",
            )
            .await
            .unwrap();
    }
    let migrated = store.migrate().await.unwrap();
    assert_eq!(migrated.from as usize, amr_step);
    let record = store.session_by_id(&"s1".into()).await.unwrap().unwrap();
    assert_eq!(record.session.amr, Methods::PASSWORD);
    assert_eq!(
        record.session.jkt, None,
        "sessions from before DPoP are unbound"
    );
    let listed = store.list_sessions(None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed.iter().all(|s| s.amr == Methods::PASSWORD),
        "{listed:?}"
    );

    let client = store.client().await.unwrap();
    client
        .execute("UPDATE sessions SET amr = 3 WHERE id = 's2'", &[])
        .await
        .unwrap();
    let record = store.session_by_id(&"s2".into()).await.unwrap().unwrap();
    assert_eq!(
        record.session.amr,
        Methods::PASSWORD.with(Method::OneTimeCode)
    );
    for bad in [256_i16, -1] {
        let refused = client
            .execute("UPDATE sessions SET amr = $1 WHERE id = 's2'", &[&bad])
            .await;
        assert!(refused.is_err(), "{bad} passed the check");
    }
    client
        .batch_execute(
            "ALTER TABLE sessions DROP CONSTRAINT sessions_amr_bits;
             UPDATE sessions SET amr = 256 WHERE id = 's2'",
        )
        .await
        .unwrap();
    let read = store.session_by_id(&"s2".into()).await;
    assert!(matches!(read, Err(StoreError::Corrupt(_))), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_build_is_refused() {
    let Some(url) = database_url() else { return };
    let schema = TestSchema::create(&url).await.unwrap();
    let store = PgStore::open(schema.url()).await.unwrap();
    store
        .client()
        .await
        .unwrap()
        .execute(
            "INSERT INTO tessera_migrations (version) VALUES ($1)",
            &[&(PgStore::latest_version() as i32 + 1)],
        )
        .await
        .unwrap();
    let error = PgStore::open(schema.url()).await.unwrap_err();
    assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_fails_closed_within_about_a_second() {
    // A port nothing listens on: connecting is refused at once. A black hole (no answer at
    // all) is bounded by the connect timeout.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let started = Instant::now();
    let error = PgStore::open(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A server that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let started = Instant::now();
    let error = PgStore::open(&format!("postgres://postgres@127.0.0.1:{port}/test"))
        .await
        .unwrap_err();
    assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
    let waited = started.elapsed();
    assert!(waited < Duration::from_millis(2500), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_reach_every_instance_of_the_same_schema_only() {
    let Some(url) = database_url() else { return };
    let schema = TestSchema::create(&url).await.unwrap();
    let other = TestSchema::create(&url).await.unwrap();
    let a = PgStore::open(schema.url()).await.unwrap();
    let b = PgStore::open(schema.url()).await.unwrap();
    let elsewhere = PgStore::open(other.url()).await.unwrap();
    let (bus_a, bus_b, bus_else) = (a.event_bus(), b.event_bus(), elsewhere.event_bus());
    let mut on_b = bus_b.subscribe();
    let mut on_else = bus_else.subscribe();
    // Each listener announces a resync once it listens.
    for rx in [&mut on_b, &mut on_else] {
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first, Notice::Resync);
    }
    let event = StoreEvent::SessionRevoked {
        session_id: "s1".into(),
    };
    let sent = Instant::now();
    bus_a.publish(&event).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), on_b.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, Notice::Event(event));
    eprintln!("NOTIFY reached the other instance in {:?}", sent.elapsed());
    assert!(
        tokio::time::timeout(Duration::from_millis(300), on_else.recv())
            .await
            .is_err(),
        "another schema's bus hears nothing"
    );
}

// ---------------------------------------------------------------------------------------------
// TLS: a private PostgreSQL cluster of the test's own, with a certificate from a CA made here
// ---------------------------------------------------------------------------------------------

mod tls {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use tessera_store::StoreError;

    use super::database_url;
    use crate::PgStore;

    /// A CA and a certificate it signed for `localhost` only, as PEM.
    struct Pki {
        ca: String,
        cert: String,
        key: String,
    }

    fn pki() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "tessera test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn is_root() -> bool {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    }

    /// PostgreSQL's server programs (`initdb`, `pg_ctl`): the newest installed version's.
    fn bin_dir() -> PathBuf {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's server programs are installed in /usr/lib/postgresql")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").exists())
            .collect();
        versions.sort();
        versions.pop().expect("initdb is installed")
    }

    /// PostgreSQL refuses to run as root: as root, programs run as the `postgres` user.
    fn as_postgres(program: &Path) -> Command {
        if is_root() {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(program);
            command
        } else {
            Command::new(program)
        }
    }

    fn run(mut command: Command) {
        let out = command.output().unwrap();
        assert!(
            out.status.success(),
            "{command:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A cluster on a spare port of 127.0.0.1, with `ssl = on` and `pki`'s certificate (or
    /// `ssl = off` without), stopped and removed when dropped.
    struct Cluster {
        dir: PathBuf,
        bin: PathBuf,
        port: u16,
    }

    impl Cluster {
        fn start(pki: Option<&Pki>) -> Cluster {
            let bin = bin_dir();
            let dir = std::env::temp_dir().join(format!(
                "tessera-pg-tls-{}",
                tessera_core::random::id().unwrap()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            let cluster = Cluster {
                dir,
                bin,
                port: std::net::TcpListener::bind("127.0.0.1:0")
                    .unwrap()
                    .local_addr()
                    .unwrap()
                    .port(),
            };
            let data = cluster.dir.join("data");
            if is_root() {
                run({
                    let mut c = Command::new("chown");
                    c.arg("postgres:").arg(&cluster.dir);
                    c
                });
            }
            run({
                let mut c = as_postgres(&cluster.bin.join("initdb"));
                c.arg("-D").arg(&data).args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                ]);
                c
            });
            let ssl = match pki {
                Some(pki) => {
                    for (name, pem) in [("server.crt", &pki.cert), ("server.key", &pki.key)] {
                        std::fs::write(data.join(name), pem).unwrap();
                    }
                    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                }
                None => "ssl = off\n",
            };
            let conf = format!(
                "\n{ssl}listen_addresses = '127.0.0.1'\nport = {}\n\
                 unix_socket_directories = '{}'\nfsync = off\n",
                cluster.port,
                cluster.dir.display()
            );
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(data.join("postgresql.conf"))
                .unwrap();
            std::io::Write::write_all(&mut file, conf.as_bytes()).unwrap();
            drop(file);
            if is_root() {
                run({
                    let mut c = Command::new("chown");
                    c.arg("-R").arg("postgres:").arg(&cluster.dir);
                    c
                });
            }
            if pki.is_some() {
                // The key must be private to the server's user, or PostgreSQL refuses it.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(
                    data.join("server.key"),
                    std::fs::Permissions::from_mode(0o600),
                )
                .unwrap();
            }
            run({
                let mut c = as_postgres(&cluster.bin.join("pg_ctl"));
                c.arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(cluster.dir.join("log"))
                    .args(["-w", "-t", "30", "start"]);
                c
            });
            cluster
        }

        /// A URL to this cluster that reaches 127.0.0.1 under the name `host`.
        fn url(&self, host: &str, params: &str) -> String {
            format!(
                "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&{params}",
                self.port
            )
        }
    }

    impl Drop for Cluster {
        fn drop(&mut self) {
            let _ = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"])
                .output();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Whether the store's connections are encrypted, as the server sees them.
    async fn encrypted(store: &PgStore) -> bool {
        let client = store.client().await.unwrap();
        client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await
            .unwrap()
            .get(0)
    }

    /// `verify-full` with the right CA and host name works, encrypted; a wrong host name or a
    /// wrong CA is refused; `verify-ca` checks the CA but not the name.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verify_modes_check_the_ca_and_the_host_name() {
        // Runs where the other PostgreSQL tests run.
        if database_url().is_none() {
            return;
        }
        let pki_ = pki();
        let cluster = Cluster::start(Some(&pki_));
        let ca = cluster.dir.join("ca.pem");
        std::fs::write(&ca, &pki_.ca).unwrap();
        let wrong_ca = cluster.dir.join("other-ca.pem");
        std::fs::write(&wrong_ca, pki().ca).unwrap();
        let root = |file: &Path| format!("sslrootcert={}", file.display());

        let full = cluster.url("localhost", &format!("sslmode=verify-full&{}", root(&ca)));
        let store = PgStore::open(&full)
            .await
            .expect("verify-full, right CA and name");
        assert!(encrypted(&store).await, "the connection is TLS");
        // The event bus's own connection goes through TLS too.
        let bus = store.event_bus();
        drop(bus);

        let wrong_name = cluster.url("db.example", &format!("sslmode=verify-full&{}", root(&ca)));
        let refused = PgStore::connect(&wrong_name).await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "a certificate for another name: {refused:?}"
        );

        let wrong = cluster.url(
            "localhost",
            &format!("sslmode=verify-full&{}", root(&wrong_ca)),
        );
        let refused = PgStore::connect(&wrong).await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "a certificate from another CA: {refused:?}"
        );
        let refused = PgStore::connect(&cluster.url(
            "localhost",
            &format!("sslmode=verify-ca&{}", root(&wrong_ca)),
        ))
        .await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable(_))),
            "verify-ca, another CA: {refused:?}"
        );

        let ca_only = cluster.url("db.example", &format!("sslmode=verify-ca&{}", root(&ca)));
        let store = PgStore::connect(&ca_only)
            .await
            .expect("verify-ca does not compare the host name");
        assert!(encrypted(&store).await);

        // `require` encrypts without checking the certificate; `disable` does not encrypt.
        let store = PgStore::connect(&cluster.url("db.example", "sslmode=require"))
            .await
            .unwrap();
        assert!(encrypted(&store).await);
        let store = PgStore::connect(&cluster.url("localhost", "sslmode=disable"))
            .await
            .unwrap();
        assert!(!encrypted(&store).await);
        // The default (`prefer`) takes TLS when the server offers it.
        let store = PgStore::connect(&cluster.url("localhost", "application_name=t"))
            .await
            .unwrap();
        assert!(encrypted(&store).await);
    }

    /// Never a silent downgrade: `require` and `verify-*` fail against a server without TLS
    /// (a cluster with `ssl = off`), where `prefer` goes on in plain TCP.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn required_tls_fails_against_a_server_without_it() {
        if database_url().is_none() {
            return;
        }
        let cluster = Cluster::start(None);
        let ca = cluster.dir.join("ca.pem");
        std::fs::write(&ca, pki().ca).unwrap();
        for params in [
            "sslmode=require".to_owned(),
            format!("sslmode=verify-ca&sslrootcert={}", ca.display()),
            format!("sslmode=verify-full&sslrootcert={}", ca.display()),
        ] {
            let refused = PgStore::connect(&cluster.url("localhost", &params)).await;
            assert!(
                matches!(refused, Err(StoreError::Unavailable(_))),
                "{params}: {refused:?}"
            );
        }
        let store = PgStore::connect(&cluster.url("localhost", "sslmode=prefer"))
            .await
            .expect("prefer goes on without TLS");
        assert!(!encrypted(&store).await);
    }
}
