//! Loading the configuration: layering, typed values and the checks.

use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn keys_list_every_field() {
    let table = toml::Table::try_from(Config::default()).unwrap();
    let mut keys: Vec<&str> = table.keys().map(String::as_str).collect();
    // Fields whose default is None are absent from the serialized table.
    keys.extend([
        "tls_cert",
        "tls_key",
        "webhook_url",
        "webhook_secret",
        "login_url",
        "cookie_domain",
        "public_url",
        "webauthn_rp_id",
        "store",
        "master_key_file",
        "redis_ca_file",
        "redis_client_cert",
        "redis_client_key",
    ]);
    keys.sort();
    let mut listed: Vec<&str> = Config::KEYS.iter().map(|key| key.name).collect();
    listed.sort();
    assert_eq!(keys, listed);
}

/// Every key holding a duration, with a value in units and the same value in seconds.
const DURATIONS: &[(&str, &str, u64)] = &[
    ("idle_timeout", "30m", 1800),
    ("absolute_timeout", "12h", 43_200),
    ("access_token_lifetime", "10m", 600),
    ("refresh_grace", "10s", 10),
    ("leeway", "1m 30s", 90),
    ("activity_write_interval", "2m", 120),
    ("login_failure_window", "1h", 3600),
    ("login_lockout", "45s", 45),
    ("login_lockout_max", "2h", 7200),
    ("header_read_timeout", "5s", 5),
    ("body_read_timeout", "1m", 60),
    ("keep_alive_timeout", "90s", 90),
    ("key_poll_interval", "1min", 60),
];

/// Loads `text` as a config file (in a directory of its own, `name`), without environment.
fn load_file(name: &str, text: &str) -> Result<Config, ConfigError> {
    let dir = std::env::temp_dir().join(format!("tessera-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    std::fs::write(&file, text).unwrap();
    let loaded = Config::load(Some(&file), []);
    std::fs::remove_dir_all(&dir).unwrap();
    loaded
}

fn duration_of(config: &Config, key: &str) -> Duration {
    let table = toml::Table::try_from(config).unwrap();
    let text = table[key].as_str().unwrap();
    humantime::parse_duration(text).unwrap()
}

#[test]
fn durations_load_with_units_or_as_seconds_from_file_and_env() {
    for &(key, units, seconds) in DURATIONS {
        let expected = Duration::from_secs(seconds);
        let env_name = format!("TESSERA_{}", key.to_ascii_uppercase());
        let mut loaded = Vec::new();
        for value in [format!("{units:?}"), seconds.to_string()] {
            loaded.push(load_file("cfg7", &format!("{key} = {value}\n")).unwrap());
        }
        for value in [units.to_owned(), seconds.to_string()] {
            loaded.push(Config::load(None, env(&[(&env_name, &value)])).unwrap());
        }
        for config in loaded {
            assert_eq!(duration_of(&config, key), expected, "{key}");
        }
    }
    let cfg = Config::load(None, env(&[("TESSERA_IDLE_TIMEOUT", "30m")])).unwrap();
    assert_eq!(cfg.idle_timeout, Duration::from_secs(1800));
    assert_eq!(whole_seconds(cfg.idle_timeout), 1800);
}

#[test]
fn a_bad_duration_is_refused_naming_its_key() {
    for &(key, _, _) in DURATIONS {
        let env_name = format!("TESSERA_{}", key.to_ascii_uppercase());
        // Fractions of a second are refused rather than rounded: the service counts seconds.
        for bad in ["abc", "10 parsecs", "-1", "1.5", "500ms", "1s 500ms"] {
            match Config::load(None, env(&[(&env_name, bad)])) {
                Err(ConfigError::Invalid(problem)) => {
                    let message = problem.to_string();
                    assert!(
                        message.contains(&format!("`{key}`")),
                        "{key}={bad}: {message}"
                    )
                }
                other => panic!("{key}={bad} loaded: {other:?}"),
            }
        }
    }
    let message = load_file("cfg8", "leeway = \"5 minutes ago\"\n")
        .unwrap_err()
        .to_string();
    assert!(message.contains("`leeway`"), "{message}");
}

#[test]
fn the_algorithm_is_parsed_at_load_with_no_fallback() {
    let es = Config::load(None, env(&[("TESSERA_JWT_ALGORITHM", "ES256")])).unwrap();
    assert_eq!(es.jwt_algorithm, Algorithm::Es256);
    assert_eq!(Config::default().jwt_algorithm, Algorithm::EdDsa);
    // Names are exact: a misspelt or `none` algorithm stops the load instead of becoming EdDSA.
    for bad in ["none", "eddsa", "RS256", "HS256 ", ""] {
        match Config::load(None, env(&[("TESSERA_JWT_ALGORITHM", bad)])) {
            Err(ConfigError::Invalid(problem)) => {
                let message = problem.to_string();
                assert!(message.contains("`jwt_algorithm`"), "{bad}: {message}");
                assert!(
                    message.contains("EdDSA, ES256 or HS256"),
                    "{bad}: {message}"
                );
            }
            other => panic!("{bad:?} loaded: {other:?}"),
        }
    }
}

#[test]
fn the_defaults_written_as_toml_load_back_unchanged() {
    let text = toml::to_string(&Config::default()).unwrap();
    assert!(text.contains("idle_timeout = \"30m\""), "{text}");
    assert!(text.contains("jwt_algorithm = \"EdDSA\""), "{text}");
    assert_eq!(load_file("cfg9", &text).unwrap(), Config::default());
}

#[test]
fn redis_tls_files_need_a_tls_sessions_url() {
    let load = |pairs: &[(&str, &str)]| Config::load(None, env(pairs));
    let ok = load(&[
        ("TESSERA_SESSIONS", "rediss://cache:6380"),
        ("TESSERA_REDIS_CA_FILE", "/etc/tessera/redis-ca.pem"),
        ("TESSERA_REDIS_CLIENT_CERT", "/etc/tessera/redis.pem"),
        ("TESSERA_REDIS_CLIENT_KEY", "/etc/tessera/redis.key"),
    ])
    .unwrap();
    assert_eq!(
        ok.redis_ca_file,
        Some(PathBuf::from("/etc/tessera/redis-ca.pem"))
    );
    for (pairs, key) in [
        (
            vec![
                ("TESSERA_SESSIONS", "redis://cache:6379"),
                ("TESSERA_REDIS_CA_FILE", "/ca.pem"),
            ],
            "redis_ca_file",
        ),
        (vec![("TESSERA_REDIS_CA_FILE", "/ca.pem")], "redis_ca_file"),
        (
            vec![
                ("TESSERA_SESSIONS", "rediss://cache:6380"),
                ("TESSERA_REDIS_CLIENT_CERT", "/c.pem"),
            ],
            "redis_client_cert",
        ),
        (
            vec![
                ("TESSERA_SESSIONS", "rediss://cache:6380"),
                ("TESSERA_REDIS_CLIENT_KEY", "/c.key"),
            ],
            "redis_client_key",
        ),
    ] {
        let message = load(&pairs).unwrap_err().to_string();
        assert!(
            message.contains(&format!("`{key}`")),
            "{pairs:?}: {message}"
        );
    }
}

#[test]
fn store_urls_are_read_once_into_their_kind() {
    let load = |key: &str, value: &str| Config::load(None, env(&[(key, value)]));
    let store = |value: &str| load("TESSERA_STORE", value).map(|c| c.store);
    assert_eq!(
        store("sqlite:///var/lib/t.db").unwrap(),
        Some(StoreUrl::Sqlite(Some(PathBuf::from("/var/lib/t.db"))))
    );
    assert_eq!(store("sqlite://").unwrap(), Some(StoreUrl::Sqlite(None)));
    assert_eq!(
        store("postgresql://u@h/db").unwrap(),
        Some(StoreUrl::Postgres("postgresql://u@h/db".into()))
    );
    let sessions = |value: &str| load("TESSERA_SESSIONS", value).map(|c| c.sessions);
    assert_eq!(sessions("same").unwrap(), SessionsUrl::Same);
    assert_eq!(
        sessions("redis+cluster://h:7000").unwrap(),
        SessionsUrl::Redis("redis+cluster://h:7000".into())
    );
    for tls in [
        "rediss://cache:6380/0",
        "rediss+sentinel://s1:26379/m",
        "rediss+cluster://h:7000",
    ] {
        assert_eq!(sessions(tls).unwrap(), SessionsUrl::Redis(tls.into()));
    }
    for (key, value) in [
        ("TESSERA_STORE", "mysql://x"),
        ("TESSERA_STORE", "/var/lib/t.db"),
        ("TESSERA_SESSIONS", "Same"),
        ("TESSERA_SESSIONS", "rediss//h"),
    ] {
        let message = load(key, value).unwrap_err().to_string();
        let name = key.trim_start_matches("TESSERA_").to_ascii_lowercase();
        assert!(
            message.contains(&format!("`{name}`")),
            "{key}={value}: {message}"
        );
    }
}

#[test]
fn webhook_destinations_are_validated() {
    let with = |url: &str, allow_private: bool| Config {
        webhook_url: Some(url.to_owned()),
        webhook_secret: Some(Secret("sixteen characters!".to_owned())),
        webhook_allow_private: allow_private,
        ..Config::default()
    };
    for (url, allow_private) in [
        ("http://hooks.example/h", true),
        ("https://192.168.1.10/h", false),
        ("https://[fd00::1]/h", false),
        ("https://169.254.169.254/h", false),
        ("https://0.0.0.0/h", true),
    ] {
        assert!(
            matches!(
                with(url, allow_private).validate(),
                Err(ConfigError::Invalid(_))
            ),
            "{url} refused (allow_private {allow_private})"
        );
    }
    for (url, allow_private) in [
        ("https://hooks.example/h", false),
        ("http://127.0.0.1:9000/h", false),
        ("https://192.168.1.10/h", true),
    ] {
        assert!(
            with(url, allow_private).validate().is_ok(),
            "{url} allowed (allow_private {allow_private})"
        );
    }
}

#[test]
fn env_overrides_file_and_variables_other_than_keys_are_ignored() {
    let dir = std::env::temp_dir().join(format!("tessera-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    std::fs::write(
        &file,
        "idle_timeout = 100\nleeway = 5\n[role_permissions]\neditor = [\"w\"]\n",
    )
    .unwrap();
    let cfg = Config::load(
        Some(&file),
        env(&[
            ("TESSERA_IDLE_TIMEOUT", "200"),
            ("TESSERA_ADMIN_PASSWORD", "x"),
            ("TESSERA_ALLOWED_ORIGINS", "https://a.test, https://b.test"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.idle_timeout, Duration::from_secs(200));
    assert_eq!(cfg.leeway, Duration::from_secs(5));
    assert_eq!(
        cfg.allowed_origins,
        vec!["https://a.test", "https://b.test"]
    );
    assert_eq!(cfg.role_permissions["editor"], vec!["w"]);
    let json = Config::load(None, env(&[("TESSERA_LOG_FORMAT", "json")])).unwrap();
    assert_eq!(json.log_format, LogFormat::Json);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_keys_and_bad_values_are_refused() {
    let dir = std::env::temp_dir().join(format!("tessera-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    std::fs::write(&file, "idle_timeut = 100\n").unwrap();
    assert!(matches!(
        Config::load(Some(&file), []),
        Err(ConfigError::Invalid(_))
    ));
    assert!(Config::load(None, env(&[("TESSERA_JWT_ALGORITHM", "none")])).is_err());
    assert!(Config::load(None, env(&[("TESSERA_IDLE_TIMEOUT", "abc")])).is_err());
    assert!(Config::load(None, env(&[("TESSERA_LISTEN", "nowhere")])).is_err());
    assert!(Config::load(None, env(&[("TESSERA_HEADER_READ_TIMEOUT", "0")])).is_err());
    assert!(Config::load(None, env(&[("TESSERA_LOG_FORMAT", "xml")])).is_err());
    assert!(Config::load(None, env(&[("TESSERA_STORE", "mysql://x")])).is_err());
    assert!(Config::load(None, env(&[("TESSERA_SESSIONS", "memcached://x")])).is_err());
    let shared = Config::load(
        None,
        env(&[
            ("TESSERA_STORE", "postgres://db.internal/tessera"),
            (
                "TESSERA_SESSIONS",
                "redis+sentinel://s1:26379,s2:26379/main",
            ),
        ]),
    )
    .unwrap();
    assert_eq!(
        shared.store,
        Some(StoreUrl::Postgres("postgres://db.internal/tessera".into()))
    );
    assert_eq!(
        shared.sessions,
        SessionsUrl::Redis("redis+sentinel://s1:26379,s2:26379/main".into())
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn role_permission_names_keep_to_the_charset() {
    let dir = std::env::temp_dir().join(format!("tessera-cfg3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    for (map, ok) in [
        ("editor = [\"docs:write\", \"team/a.b_c-d\"]", true),
        ("\"editor,admin\" = [\"w\"]", false),
        ("editor = [\"w\\r\\nx\"]", false),
        ("editor = [\"a b\"]", false),
        ("\"\" = []", false),
    ] {
        std::fs::write(&file, format!("[role_permissions]\n{map}\n")).unwrap();
        let loaded = Config::load(Some(&file), []);
        assert_eq!(loaded.is_ok(), ok, "{map}: {loaded:?}");
        if let Err(ConfigError::Invalid(problem)) = loaded {
            assert_eq!(
                problem.key.as_deref(),
                Some("role_permissions"),
                "{problem}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_ipv6_prefix_loads_from_env_and_file_and_must_be_1_to_128() {
    assert_eq!(Config::default().login_ipv6_prefix, 64);
    let env_cfg = Config::load(None, env(&[("TESSERA_LOGIN_IPV6_PREFIX", "56")])).unwrap();
    assert_eq!(env_cfg.login_ipv6_prefix, 56);
    let dir = std::env::temp_dir().join(format!("tessera-cfg6-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.toml");
    std::fs::write(&file, "login_ipv6_prefix = 128\n").unwrap();
    assert_eq!(
        Config::load(Some(&file), []).unwrap().login_ipv6_prefix,
        128
    );
    std::fs::remove_dir_all(&dir).unwrap();
    for bad in ["0", "129", "-1", "64.5", "x"] {
        assert!(
            Config::load(None, env(&[("TESSERA_LOGIN_IPV6_PREFIX", bad)])).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn browser_and_proxy_keys_load_from_env_and_are_checked() {
    let cfg = Config::load(
        None,
        env(&[
            ("TESSERA_LOGIN_URL", "/login"),
            (
                "TESSERA_REDIRECT_ORIGINS",
                "https://app.example.com, https://*.example.com",
            ),
            ("TESSERA_COOKIE_DOMAIN", "example.com"),
            (
                "TESSERA_ACCESS_RULES",
                r#"[{ paths = ["/public"], policy = "bypass" }, { roles = ["admin"] }]"#,
            ),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.login_url.as_deref(), Some("/login"));
    assert_eq!(cfg.redirect_origins.len(), 2);
    assert_eq!(cfg.cookie_domain.as_deref(), Some("example.com"));
    assert_eq!(cfg.access_rules.len(), 2);
    assert_eq!(cfg.access_rules[1].roles, vec!["admin"]);
    for (key, value) in [
        ("TESSERA_LOGIN_URL", "//evil.example/login"),
        ("TESSERA_LOGIN_URL", "javascript:alert(1)"),
        ("TESSERA_REDIRECT_ORIGINS", "evil.example"),
        ("TESSERA_COOKIE_DOMAIN", "com"),
        ("TESSERA_COOKIE_DOMAIN", "127.0.0.1"),
        ("TESSERA_COOKIE_DOMAIN", "https://example.com"),
        ("TESSERA_ACCESS_RULES", r#"[{ path_regex = "(" }]"#),
        ("TESSERA_ACCESS_RULES", r#"[{ policy = "maybe" }]"#),
        ("TESSERA_ACCESS_RULES", r#"[{ pathz = ["/"] }]"#),
        ("TESSERA_ALLOWED_ORIGINS", "app.example.com"),
        ("TESSERA_ALLOWED_ORIGINS", "https://*.example.com"),
        ("TESSERA_ALLOWED_ORIGINS", "null"),
    ] {
        assert!(
            Config::load(None, env(&[(key, value)])).is_err(),
            "{key}={value}"
        );
    }
    assert!(
        Config::load(
            None,
            env(&[("TESSERA_LOGIN_URL", "https://auth.example.com/login")])
        )
        .is_ok()
    );
}

/// The problem of a file that does not load.
fn file_problem(name: &str, text: &str) -> Problem {
    match load_file(name, text) {
        Err(ConfigError::Invalid(problem)) => *problem,
        other => panic!("{text:?} loaded: {other:?}"),
    }
}

/// Where `problem` was found in a file: (line, column).
fn place(problem: &Problem) -> (usize, usize) {
    match &problem.origin {
        Origin::File { line, column, .. } => (*line, *column),
        other => panic!("not in the file: {other:?} ({problem})"),
    }
}

#[test]
fn an_unknown_key_in_the_file_is_named_at_its_line_with_the_key_meant() {
    let problem = file_problem(
        "cfg10",
        "listen = \"127.0.0.1:9000\"\n\nidle_timout = \"5m\"\n",
    );
    assert_eq!(place(&problem), (3, 1));
    assert_eq!(problem.key.as_deref(), Some("idle_timout"));
    assert_eq!(problem.suggestion.as_deref(), Some("idle_timeout"));
    let shown = problem.to_string();
    assert!(
        shown.ends_with(":3:1: `idle_timout`: unknown key; did you mean `idle_timeout`?"),
        "{shown}"
    );
    // Nothing near: no guess.
    let problem = file_problem("cfg11", "colour_scheme = \"dark\"\n");
    assert_eq!(problem.suggestion, None);
    // Inside a table too: an access rule's misspelt field.
    let problem = file_problem(
        "cfg12",
        "[[access_rules]]\npolicy = \"bypass\"\n\n[[access_rules]]\npathz = [\"/admin\"]\n",
    );
    assert_eq!(place(&problem).0, 5, "{problem}");
    assert_eq!(problem.suggestion.as_deref(), Some("paths"), "{problem}");
}

#[test]
fn a_bad_value_in_the_file_is_named_at_its_line_and_key() {
    let problem = file_problem("cfg13", "issuer = \"me\"\nleeway = \"5 minutes ago\"\n");
    assert_eq!(place(&problem), (2, 10));
    assert_eq!(problem.key.as_deref(), Some("leeway"));
    let problem = file_problem("cfg14", "# tessera\nlog_format = \"xml\"\n");
    assert_eq!(place(&problem).0, 2);
    assert_eq!(problem.key.as_deref(), Some("log_format"));
    // A value that reads but is refused by the checks is found at its key.
    let problem = file_problem("cfg15", "issuer = \"me\"\n\n  login_ipv6_prefix = 0\n");
    assert_eq!(place(&problem), (3, 3));
    assert_eq!(problem.key.as_deref(), Some("login_ipv6_prefix"));
    // A TOML syntax error has its place too.
    let problem = file_problem("cfg16", "issuer = \"me\"\nleeway = \n");
    assert_eq!(place(&problem).0, 2, "{problem}");
}

#[test]
fn unknown_tessera_variables_are_refused_with_the_variable_meant() {
    let refused = |name: &str| match Config::load(None, env(&[(name, "1")])) {
        Err(ConfigError::Invalid(problem)) => *problem,
        other => panic!("{name} accepted: {other:?}"),
    };
    let problem = refused("TESSERA_IDLE_TIMOUT");
    assert_eq!(
        problem.origin,
        Origin::Environment {
            variable: "TESSERA_IDLE_TIMOUT".into()
        }
    );
    assert_eq!(problem.suggestion.as_deref(), Some("TESSERA_IDLE_TIMEOUT"));
    assert!(
        problem
            .to_string()
            .starts_with("environment variable TESSERA_IDLE_TIMOUT: "),
        "{problem}"
    );
    assert_eq!(
        refused("TESSERA_ADMIN_PASSWD").suggestion.as_deref(),
        Some("TESSERA_ADMIN_PASSWORD")
    );
    assert_eq!(refused("TESSERA_COLOUR").suggestion, None);
    // The variables tessera reads besides the keys, the test suite's, and others' are fine.
    Config::load(
        None,
        env(&[
            ("TESSERA_CONFIG", "/nonexistent.toml"),
            ("TESSERA_ADMIN_PASSWORD", "x"),
            ("TESSERA_MASTER_KEY", "x"),
            ("TESSERA_TEST_DATABASE_URL", "postgres://x"),
            ("TESSERA_TEST_REDIS_URL", "redis://x"),
            ("TESSERATE", "1"),
            ("HOME", "/root"),
        ]),
    )
    .unwrap();
}

#[test]
fn a_value_refused_by_the_checks_names_its_variable() {
    let problem = match Config::load(None, env(&[("TESSERA_LOGIN_URL", "//evil.example")])) {
        Err(ConfigError::Invalid(problem)) => problem,
        other => panic!("loaded: {other:?}"),
    };
    assert_eq!(
        problem.origin,
        Origin::Environment {
            variable: "TESSERA_LOGIN_URL".into()
        }
    );
    assert_eq!(problem.key.as_deref(), Some("login_url"));
}

#[test]
fn the_commented_defaults_list_every_key_and_load_back_as_the_defaults() {
    let text = Config::defaults_toml();
    for key in Config::KEYS {
        assert!(
            text.contains(&format!("\n{} = ", key.name))
                || text.contains(&format!("\n# {} = (unset by default)", key.name)),
            "{}",
            key.name
        );
        assert!(text.contains(&key.env_name()), "{}", key.name);
    }
    assert!(text.contains("\nidle_timeout = \"30m\"\n"), "{text}");
    assert_eq!(load_file("cfg17", &text).unwrap(), Config::default());
}

#[test]
fn product_name_and_public_url_are_checked() {
    let cfg = Config::load(
        None,
        env(&[
            ("TESSERA_PRODUCT_NAME", "Acme sign-in"),
            ("TESSERA_PUBLIC_URL", "https://auth.example.com"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.product_name, "Acme sign-in");
    assert_eq!(cfg.public_url.as_deref(), Some("https://auth.example.com"));
    assert_eq!(Config::default().product_name, "tessera");
    for (variable, value, key) in [
        ("TESSERA_PRODUCT_NAME", "", "product_name"),
        ("TESSERA_PRODUCT_NAME", "a\u{7}b", "product_name"),
        ("TESSERA_PUBLIC_URL", "ftp://auth.example.com", "public_url"),
        (
            "TESSERA_PUBLIC_URL",
            "https://user:pw@auth.example.com",
            "public_url",
        ),
        (
            "TESSERA_PUBLIC_URL",
            "https://auth.example.com/?x=1",
            "public_url",
        ),
        ("TESSERA_PUBLIC_URL", "/relative", "public_url"),
    ] {
        match Config::load(None, env(&[(variable, value)])) {
            Err(ConfigError::Invalid(problem)) => {
                assert_eq!(problem.key.as_deref(), Some(key), "{value:?}")
            }
            other => panic!("{value:?} loaded: {other:?}"),
        }
    }
}
