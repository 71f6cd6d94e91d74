//! Reading knobs from environment variables, and the duration forms of
//! serde and the environment (`"5s"`, `"250ms"`, `"off"`).

use std::time::Duration;

use super::ConfigError;

pub(crate) struct EnvReader<'a, L> {
    pub(crate) prefix: &'a str,
    pub(crate) lookup: L,
}

impl<L: Fn(&str) -> Option<String>> EnvReader<'_, L> {
    pub(crate) fn read<T>(
        &self,
        name: &str,
        slot: &mut T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<(), ConfigError> {
        let key = format!("{}_{name}", self.prefix);
        if let Some(raw) = (self.lookup)(&key) {
            *slot = parse(raw.trim()).map_err(|reason| ConfigError::new(&key, raw, reason))?;
        }
        Ok(())
    }
}

pub(crate) fn is_off(v: &str) -> bool {
    ["off", "none", "disabled"]
        .iter()
        .any(|w| v.eq_ignore_ascii_case(w))
}

pub(crate) fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" | "on" => Ok(true),
        "false" | "no" | "0" | "off" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

pub(crate) fn parse_count(v: &str) -> Result<usize, String> {
    v.parse()
        .map_err(|_| "must be a whole number, e.g. 16".to_owned())
}

pub(crate) fn parse_duration(v: &str) -> Result<Duration, String> {
    humantime::parse_duration(v)
        .map_err(|e| format!("must be a duration like `5s` or `250ms` ({e})"))
}

pub(crate) fn parse_opt_duration(v: &str) -> Result<Option<Duration>, String> {
    if is_off(v) {
        Ok(None)
    } else {
        parse_duration(v).map(Some)
    }
}

/// serde for `Option<Duration>` as `"5s"` or `"off"`/`null`.
pub(crate) mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("off"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(v) => super::parse_opt_duration(&v).map_err(serde::de::Error::custom),
        }
    }
}
