//! Validation, environment and serde of the shared knobs.

use std::collections::HashMap;

use super::*;

fn field_of(c: PoolConfig) -> String {
    c.validate().unwrap_err().field().to_owned()
}

#[test]
fn defaults_are_valid() {
    PoolConfig::default().validate().unwrap();
}

#[test]
fn rejects_what_the_original_rejected() {
    assert_eq!(field_of(PoolConfig::default().max_size(0)), "max_size");
    assert_eq!(
        field_of(PoolConfig::default().min_size(5).max_size(4)),
        "max_size"
    );
    assert_eq!(
        field_of(PoolConfig::default().acquire_timeout(Duration::ZERO)),
        "acquire_timeout"
    );
    assert_eq!(
        field_of(PoolConfig::default().health_check_interval(Some(Duration::ZERO))),
        "health_check_interval"
    );
    assert_eq!(
        field_of(PoolConfig::default().validation_timeout(Duration::ZERO)),
        "validation_timeout"
    );
    // Checks off is fine.
    PoolConfig::default()
        .health_check_interval(None)
        .validate()
        .unwrap();
}

#[test]
fn messages_name_pool_field_and_value() {
    let err = PoolConfig::default()
        .health_check_interval(Some(Duration::ZERO))
        .validate()
        .unwrap_err()
        .for_pool("primary");
    assert_eq!(
        err.to_string(),
        "invalid config for pool 'primary': health_check_interval = 0s: must be greater than zero; use `None` (\"off\") to turn it off"
    );
}

#[test]
fn env_reads_every_knob() {
    let vars: HashMap<&str, &str> = HashMap::from([
        ("P_MIN_SIZE", "2"),
        ("P_MAX_SIZE", "8"),
        ("P_ACQUIRE_TIMEOUT", "1s 500ms"),
        ("P_IDLE_TIMEOUT", "off"),
        ("P_MAX_LIFETIME", "1h"),
        ("P_HEALTH_CHECK_INTERVAL", "none"),
        ("P_VALIDATION_TIMEOUT", "3s"),
        ("P_ALIVE_BYPASS_WINDOW", "100ms"),
        ("P_MAX_WAITING", "32"),
        ("P_LEAK_THRESHOLD", "30s"),
        ("P_QUERY_TIMEOUT", "1s"),
        ("P_REQUIRED", "no"),
    ]);
    let c = PoolConfig::from_lookup("P", |k| vars.get(k).map(|v| (*v).to_owned())).unwrap();
    assert_eq!(
        c,
        PoolConfig {
            min_size: 2,
            max_size: 8,
            acquire_timeout: Duration::from_millis(1500),
            idle_timeout: None,
            max_lifetime: Some(Duration::from_secs(3600)),
            health_check_interval: None,
            validation_timeout: Duration::from_secs(3),
            alive_bypass_window: Duration::from_millis(100),
            max_waiting: Some(32),
            leak_threshold: Some(Duration::from_secs(30)),
            slow_acquire_threshold: Some(Duration::from_secs(1)),
            query_timeout: Some(Duration::from_secs(1)),
            breaker: BreakerConfig::default(),
            required: false,
        }
    );
}

#[test]
fn env_error_names_variable_and_value() {
    let err = PoolConfig::from_lookup("APP_DB", |k| {
        (k == "APP_DB_ACQUIRE_TIMEOUT").then(|| "soon".to_owned())
    })
    .unwrap_err();
    assert_eq!(err.field(), "APP_DB_ACQUIRE_TIMEOUT");
    assert!(
        err.to_string()
            .starts_with("invalid pool config: APP_DB_ACQUIRE_TIMEOUT = soon: must be a duration"),
        "{err}"
    );
}

#[test]
fn serde_round_trip_and_unknown_field() {
    let c = PoolConfig::default()
        .max_waiting(Some(3))
        .idle_timeout(None);
    let json = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<PoolConfig>(&json).unwrap(), c);
    let err = serde_json::from_str::<PoolConfig>(r#"{"max_sise": 3}"#).unwrap_err();
    assert!(err.to_string().contains("max_sise"), "{err}");
}
