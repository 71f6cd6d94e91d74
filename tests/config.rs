//! The pool configs through serde and at build: an unknown key is an error
//! naming it, among the flattened knobs too; a config serializes with its
//! password masked; a URL the backend refuses is shown redacted, or by its
//! length alone when it has no scheme, with the fix for a password holding
//! a character that URLs reserve.

use axum_pools::DbConfig;

#[test]
fn an_unknown_knob_is_an_error_naming_it_among_the_flattened_knobs() {
    let e = serde_json::from_str::<DbConfig>(r#"{"url": "notes.db", "max_sise": 3}"#)
        .expect_err("an unknown knob was accepted");
    let text = e.to_string();
    assert!(text.contains("unknown field `max_sise`"), "{text}");
    assert!(
        text.contains("max_size"),
        "the known ones are named: {text}"
    );
    let e = serde_json::from_str::<DbConfig>(
        r#"{"url": "notes.db", "breaker": {"open_durration": "1s"}}"#,
    )
    .expect_err("an unknown breaker knob was accepted");
    assert!(e.to_string().contains("open_durration"), "{e}");

    // What is known still reads, the outer fields and the knobs alike.
    let c: DbConfig = serde_json::from_str(
        r#"{"url": "notes.db", "max_size": 3, "acquire_timeout": "750ms",
            "transaction_pooling": true, "breaker": {"open_duration": "2s"}}"#,
    )
    .unwrap();
    assert_eq!(c.pool.max_size, 3);
    assert_eq!(
        c.pool.acquire_timeout,
        std::time::Duration::from_millis(750)
    );
    assert!(c.transaction_pooling);
    assert_eq!(
        c.pool.breaker.open_duration,
        std::time::Duration::from_secs(2)
    );
}

#[cfg(feature = "redis")]
#[test]
fn redis_and_http_configs_are_as_strict() {
    let e = serde_json::from_str::<axum_pools::RedisConfig>(
        r#"{"url": "redis://127.0.0.1/0", "max_sise": 3}"#,
    )
    .expect_err("accepted");
    assert!(e.to_string().contains("max_sise"), "{e}");
}

#[cfg(feature = "http")]
#[test]
fn http_configs_are_as_strict() {
    let e = serde_json::from_str::<axum_pools::HttpConfig>(
        r#"{"base_url": "http://127.0.0.1:9", "retries": 1, "max_sise": 3}"#,
    )
    .expect_err("accepted");
    assert!(e.to_string().contains("max_sise"), "{e}");
    let c: axum_pools::HttpConfig =
        serde_json::from_str(r#"{"base_url": "http://127.0.0.1:9", "retries": 1, "max_size": 3}"#)
            .unwrap();
    assert_eq!((c.retries, c.pool.max_size), (1, 3));
}

#[test]
fn configs_serialize_with_the_password_masked() {
    let c = DbConfig::from_url("postgres://app:Zebra#Secret-9911@db.internal/app").max_size(4);
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("Secret"), "{json}");
    assert!(
        json.contains(r#""url":"postgres://app:***@db.internal/app""#),
        "{json}"
    );
    assert!(json.contains(r#""max_size":4"#), "{json}");
    #[cfg(feature = "redis")]
    {
        let c = axum_pools::RedisConfig::from_url("redis://:pa%23ss-word-1@cache:6379/0");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("ss-word"), "{json}");
        assert!(json.contains("redis://:***@cache:6379/0"), "{json}");
    }
    #[cfg(feature = "http")]
    {
        let c = axum_pools::HttpConfig::new("https://api:tok-123456789@billing.internal/v1");
        let json = serde_json::to_string(&c).unwrap();
        assert!(!json.contains("tok-123456789"), "{json}");
        assert!(
            json.contains("https://api:***@billing.internal/v1"),
            "{json}"
        );
    }
}

#[test]
fn a_config_read_from_a_file_holds_its_password_only_as_a_secret() {
    use axum_pools::ExposeSecret;

    let c: DbConfig = serde_json::from_str(
        r#"{"url": "postgres://app:Zebra#Secret-9911@db.internal:5432/app?sslmode=verify-full", "max_size": 4}"#,
    )
    .unwrap();
    // The one secret, whole (the unencoded '#' included), and nothing else.
    let secrets: Vec<&str> = c.url.secrets().map(|s| s.expose_secret()).collect();
    assert_eq!(secrets, ["Zebra#Secret-9911"]);
    // Every rendering of the config shows the other parts and no secret.
    let shown = "postgres://app:***@db.internal:5432/app?sslmode=verify-full";
    for text in [
        c.url.to_string(),
        format!("{:?}", c.url),
        format!("{c:?}"),
        serde_json::to_string(&c).unwrap(),
    ] {
        assert!(text.contains(shown), "{text}");
        assert!(!text.contains("Secret-9911"), "{text}");
    }
    // The driver gets the URL as written.
    assert_eq!(
        c.url.expose_secret(),
        "postgres://app:Zebra#Secret-9911@db.internal:5432/app?sslmode=verify-full"
    );
    // A config written out and read back has lost its secret, not kept it.
    let back: DbConfig = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    assert_ne!(back, c);
    assert_eq!(back.url.to_string(), shown);
}

/// The error's `Display` and `Debug`, which must not hold any part of the
/// password `Zebra#Secret-9911`.
#[cfg(any(feature = "postgres", feature = "redis"))]
fn without_password(e: &axum_pools::PoolError) -> [String; 2] {
    let texts = [e.to_string(), format!("{e:?}")];
    for text in &texts {
        assert!(!text.contains("Zebra"), "{text}");
        assert!(!text.contains("Secret"), "{text}");
    }
    texts
}

/// Postgres reads `key=value` strings too: text that is neither is refused,
/// and the error shows its length, never its text.
#[cfg(feature = "postgres")]
#[tokio::test]
async fn a_refused_url_without_a_scheme_is_shown_by_its_length_only() {
    let e = axum_pools::PoolManager::builder()
        .database::<diesel_async::AsyncPgConnection>("db", DbConfig::from_url("Zebra#Secret-9911"))
        .build()
        .await
        .expect_err("accepted");
    for text in without_password(&e) {
        assert!(text.contains("17 characters without a scheme"), "{text}");
        assert!(text.contains("url: invalid connection string: "), "{text}");
    }
    assert!(
        e.to_string().contains("pool 'db'"),
        "the pool is named: {e}"
    );
}

/// The redis crate reads URLs as the WHATWG standard does: a raw `#` in the
/// password ends the URL there. The build fails saying to percent-encode
/// it, and shows no part of the password.
#[cfg(feature = "redis")]
#[tokio::test]
async fn a_password_with_a_raw_hash_fails_the_build_with_the_fix() {
    let e = axum_pools::PoolManager::builder()
        .redis(
            "cache",
            axum_pools::RedisConfig::from_url("redis://:Zebra#Secret-9911@127.0.0.1:6379/0"),
        )
        .build()
        .await
        .expect_err("accepted");
    for text in without_password(&e) {
        assert!(text.contains("redis://:***@127.0.0.1:6379/0"), "{text}");
        assert!(text.contains("%23"), "the fix is named: {text}");
    }
}
