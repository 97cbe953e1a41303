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
