//! Secrets by type: a pool's URL is a [`ConnectionUrl`], parsed once into
//! parts with every password and token held in a [`SecretString`].
//!
//! A [`SecretString`] (from the `secrecy` crate) has no `Display` and no
//! `Serialize`, its `Debug` prints `[REDACTED]`, and what it holds is zeroed
//! when it is dropped; reading it takes an explicit
//! [`expose_secret`](ExposeSecret::expose_secret). Every URL this crate
//! shows (logs, errors, `/pools/*` bodies, a config's `Debug` or its
//! serialized form) is rendered from the parts with each secret written
//! `***`; the whole URL reaches only the driver's parser. Copies outside
//! it are plain strings, not zeroed: the options a driver builds from it,
//! and the list a pool's [`Redactor`](crate::Redactor) scrubs messages
//! with.
//!
//! ```
//! use axum_pools::{ConnectionUrl, ExposeSecret};
//!
//! // An unencoded '#' in the password: still masked whole.
//! let url = ConnectionUrl::new("postgres://app:Zebra#Secret-9911@db:5432/app");
//! assert_eq!(url.to_string(), "postgres://app:***@db:5432/app");
//! assert_eq!(format!("{url:?}"), r#"ConnectionUrl("postgres://app:***@db:5432/app")"#);
//! let secrets: Vec<&str> = url.secrets().map(|s| s.expose_secret()).collect();
//! assert_eq!(secrets, ["Zebra#Secret-9911"]);
//! ```

//!
//! A secret cannot be printed or serialized by mistake; these do not
//! compile:
//!
//! ```compile_fail
//! let url = axum_pools::ConnectionUrl::new("postgres://app:s3cret@db/app");
//! let password = url.secrets().next().unwrap();
//! println!("{password}"); // no `Display`
//! ```
//!
//! ```compile_fail
//! let url = axum_pools::ConnectionUrl::new("postgres://app:s3cret@db/app");
//! let password = url.secrets().next().unwrap();
//! serde_json::to_string(password).unwrap(); // no `Serialize`
//! ```
//!
//! while the same, exposed on purpose, does:
//!
//! ```
//! use axum_pools::ExposeSecret;
//!
//! let url = axum_pools::ConnectionUrl::new("postgres://app:s3cret@db/app");
//! let password = url.secrets().next().unwrap();
//! println!("{}", password.expose_secret().len());
//! serde_json::to_string(password.expose_secret()).unwrap();
//! assert_eq!(format!("{password:?}"), "SecretBox<str>([REDACTED])");
//! ```

use std::{convert::Infallible, fmt, str::FromStr};

pub use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// What a secret is shown as.
pub(crate) const MASK: &str = "***";

/// Query-string / keyword names whose values are secrets.
const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "sslpassword",
    "token",
    "access_token",
    "auth_token",
    "secret",
    "client_secret",
    "api_key",
    "api-key",
    "apikey",
];

/// A pool's connection URL: kept whole only for the driver, shown only
/// with its secrets masked.
///
/// Parsed once, when it is made, as leniently as any driver reads it: a
/// password may hold unencoded `#`, `?`, `@` or `/`; a Redis URL's lone
/// user name is a token (`redis://tok@host`); the values of `password=`,
/// `pass=`, `token=`, `access_token=`, `client_secret=`, `api-key=` and the
/// like, in a query string or a keyword DSN (`host=db password='a b'`),
/// are secrets. Where the readings disagree the larger part is masked, so
/// a secret is over-masked rather than shown. Making one never fails; a URL
/// the driver cannot read fails the build, naming the pool.
///
/// `Display`, `Debug` and `Serialize` show the URL with each secret as
/// `***`; [`expose_secret`](Self::expose_secret) is the one way to the text
/// as written. It deserializes from a string and converts from `&str` and
/// `String`, so `DbConfig::from_url("…")` and configuration files read as
/// before.
///
/// ```
/// use axum_pools::ConnectionUrl;
///
/// let url: ConnectionUrl = "redis://:tok-3c9e1@cache:6379/0".into();
/// assert_eq!(url.to_string(), "redis://:***@cache:6379/0");
/// assert_eq!(serde_json::to_string(&url).unwrap(), r#""redis://:***@cache:6379/0""#);
/// assert_eq!(url.expose_secret(), "redis://:tok-3c9e1@cache:6379/0");
///
/// let dsn = ConnectionUrl::new("host=db user=app password='a b c' dbname=app");
/// assert_eq!(dsn.to_string(), "host=db user=app password=*** dbname=app");
/// ```
#[derive(Clone)]
pub struct ConnectionUrl {
    raw: SecretString,
    parts: Vec<Part>,
}

/// One piece of a parsed URL: text shown as it is, or a secret shown as
/// [`MASK`].
#[derive(Clone)]
enum Part {
    Text(String),
    Secret(SecretString),
}

impl ConnectionUrl {
    /// Parses `url` into its parts (never fails; see the type docs).
    ///
    /// ```
    /// let url = axum_pools::ConnectionUrl::new("mysql://app:p%40ss@db/app?ssl-mode=REQUIRED");
    /// assert_eq!(url.to_string(), "mysql://app:***@db/app?ssl-mode=REQUIRED");
    /// ```
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        let raw: String = url.into();
        let parts = parse(&raw);
        Self {
            raw: raw.into(),
            parts,
        }
    }

    /// The URL as written, secrets included: for a driver's parser (or a
    /// migration tool), never for a log.
    ///
    /// ```
    /// let url = axum_pools::ConnectionUrl::new("postgres://app:s3cret@db/app");
    /// assert_eq!(url.expose_secret(), "postgres://app:s3cret@db/app");
    /// ```
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        self.raw.expose_secret()
    }

    /// Every password and token the URL carries, as written (quotes of a
    /// keyword value left out), in the order they appear.
    ///
    /// ```
    /// use axum_pools::{ConnectionUrl, ExposeSecret};
    ///
    /// let url = ConnectionUrl::new("postgres://app:pw-1@db/app?sslpassword=pw-2");
    /// let all: Vec<&str> = url.secrets().map(|s| s.expose_secret()).collect();
    /// assert_eq!(all, ["pw-1", "pw-2"]);
    /// assert_eq!(ConnectionUrl::new("notes.db").secrets().count(), 0);
    /// ```
    pub fn secrets(&self) -> impl Iterator<Item = &SecretString> {
        self.parts.iter().filter_map(|part| match part {
            Part::Secret(secret) => Some(secret),
            Part::Text(_) => None,
        })
    }
}

impl fmt::Display for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for part in &self.parts {
            match part {
                Part::Text(text) => f.write_str(text)?,
                Part::Secret(_) => f.write_str(MASK)?,
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ConnectionUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ConnectionUrl")
            .field(&self.to_string())
            .finish()
    }
}

impl PartialEq for ConnectionUrl {
    fn eq(&self, other: &Self) -> bool {
        self.expose_secret() == other.expose_secret()
    }
}

impl Eq for ConnectionUrl {}

impl From<String> for ConnectionUrl {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl From<&str> for ConnectionUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<&String> for ConnectionUrl {
    fn from(url: &String) -> Self {
        Self::new(url.as_str())
    }
}

impl FromStr for ConnectionUrl {
    type Err = Infallible;

    fn from_str(url: &str) -> Result<Self, Infallible> {
        Ok(Self::new(url))
    }
}

/// Written out with its secrets masked: a config dumped to a log, a file
/// or an admin page holds no password.
impl Serialize for ConnectionUrl {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ConnectionUrl {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// The parts being collected: adjacent text is joined.
#[derive(Default)]
struct Parts(Vec<Part>);

impl Parts {
    fn text(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        match self.0.last_mut() {
            Some(Part::Text(last)) => last.push_str(text),
            _ => self.0.push(Part::Text(text.to_owned())),
        }
    }

    fn secret(&mut self, secret: &str) {
        self.0.push(Part::Secret(secret.into()));
    }
}

/// `url` in parts: its user information's secret, the values of secret
/// keys, and the text between them.
fn parse(url: &str) -> Vec<Part> {
    let mut parts = Parts::default();
    let rest = match scheme_end(url) {
        Some(i) => {
            let (scheme, after) = url.split_at(i + 3);
            parts.text(scheme);
            let (authority, rest) = after.split_at(authority_end(after));
            match authority.rfind('@') {
                Some(at) => {
                    let userinfo = &authority[..at];
                    match userinfo_secret(scheme, userinfo) {
                        Some(secret) => {
                            parts.text(&userinfo[..userinfo.len() - secret.len()]);
                            parts.secret(secret);
                        }
                        None => parts.text(userinfo),
                    }
                    parts.text(&authority[at..]);
                }
                None => parts.text(authority),
            }
            rest
        }
        // A keyword DSN (`host=db password='a b'`), read as libpq does.
        None if is_keyword_dsn(url) => {
            keyword_parts(url, &mut parts);
            return parts.0;
        }
        // No scheme (a typo such as `redis//u:p@h`, or `u:p@h/db`): the
        // secret is what follows the last ':' before the last '@'.
        None => match credentials_without_scheme(url) {
            Some((start, end)) => {
                parts.text(&url[..start]);
                parts.secret(&url[start..end]);
                &url[end..]
            }
            None => url,
        },
    };
    query_parts(rest, &mut parts);
    parts.0
}

/// Where the `://` after a URL's scheme is: only after a scheme (a letter,
/// then letters, digits, `+`, `-` or `.`), so that a `://` inside a value
/// of a keyword DSN (`application_name=http://svc`) does not make one.
pub(crate) fn scheme_end(url: &str) -> Option<usize> {
    let end = url.find("://")?;
    let scheme = &url[..end];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(end)
}

/// Whether `s` (which has no scheme) starts as a keyword DSN does: a key,
/// then `=` (spaces around it allowed).
fn is_keyword_dsn(s: &str) -> bool {
    let s = s.trim_start();
    let key_end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    key_end > 0 && s[key_end..].trim_start().starts_with('=')
}

/// Byte range of the password in a `user:password@host` string with no
/// `://`, if it has one.
fn credentials_without_scheme(s: &str) -> Option<(usize, usize)> {
    let before_query = s.find(['?', '#']).unwrap_or(s.len());
    let at = s[..before_query].rfind('@')?;
    let colon = s[..at].rfind(':')?;
    (colon + 1 < at).then_some((colon + 1, at))
}

/// The `@` that ends the user information in what follows `://`, read as
/// leniently as any driver: a password may hold raw `@`, `/`, `?` and `#`
/// (tokio-postgres takes everything up to the first `@` as credentials,
/// `#` and `?` included). Of these readings the latest `@` ends the
/// credentials, so a password is over-masked rather than shown:
/// - the last `@` before the first `/` that follows the first `@` (a
///   password with `#`, `?` or `@`);
/// - the last `@` before the query or fragment (a password with `/`);
/// - the last `@` of all, unless what lies between the first `@` and it
///   holds a `key=value` (then it is a query's, as in
///   `?application_name=a@b`).
pub(crate) fn userinfo_end(after: &str) -> Option<usize> {
    let first = after.find('@')?;
    let path = after[first..].find('/').map_or(after.len(), |p| p + first);
    let by_path = after[..path].rfind('@');
    let before_query = after.find(['?', '#']).unwrap_or(after.len());
    let by_query = after[..before_query].rfind('@');
    let last = after
        .rfind('@')
        .filter(|&last| !after[first..last].contains('='));
    by_path.max(by_query).max(last)
}

/// The secret of a URL's user information: the password after its first
/// `:`, or in a Redis URL (`scheme` starts it) a lone user name, which is a
/// token there (Redis logs in with a password: `redis://tok@h`).
fn userinfo_secret<'a>(scheme: &str, userinfo: &'a str) -> Option<&'a str> {
    match userinfo.split_once(':') {
        Some((_, password)) => Some(password),
        None if scheme.starts_with("redis") && !userinfo.is_empty() => Some(userinfo),
        None => None,
    }
}

/// End of the authority (`user:password@host:port`) in what follows `://`.
fn authority_end(after: &str) -> usize {
    let host_start = userinfo_end(after).map_or(0, |at| at + 1);
    after[host_start..]
        .find(['/', '?', '#'])
        .map_or(after.len(), |p| p + host_start)
}

/// Whether `key` names a secret.
fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k))
}

/// Adds what follows a URL's authority (path and query) to `parts`, with
/// the values of keys that name a secret as secrets. A value runs to the
/// next `&` (or the end), as tokio-postgres reads it: a `#`, `;` or space in
/// it is still the value's, so it is over-masked rather than shown.
fn query_parts(s: &str, parts: &mut Parts) {
    let mut i = 0;
    while i < s.len() {
        // Find the next `=`; the key is the run of key characters before it.
        let Some(eq) = s[i..].find('=').map(|p| p + i) else {
            parts.text(&s[i..]);
            break;
        };
        let key_start = s[..eq]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |p| p + 1)
            .max(i);
        let key = &s[key_start..eq];
        parts.text(&s[i..=eq]);
        let value_end = s[eq + 1..].find('&').map_or(s.len(), |p| p + eq + 1);
        let value = &s[eq + 1..value_end];
        if is_secret_key(key) && !value.is_empty() {
            parts.secret(value);
        } else {
            parts.text(value);
        }
        i = value_end;
    }
}

/// Adds a keyword DSN to `parts` as libpq reads one: `key = value` pairs
/// separated by whitespace, spaces around `=` allowed, a value either
/// quoted (to the closing quote) or bare (to the next whitespace),
/// with `\` escaping the next character in both. A secret is kept as the
/// driver reads it (no quotes, escapes resolved); what is shown masks its
/// whole written form.
fn keyword_parts(s: &str, parts: &mut Parts) {
    let bytes = s.as_bytes();
    let skip_space = |mut i: usize| {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    };
    let mut i = 0;
    while i < s.len() {
        let key_start = skip_space(i);
        let key_end = s[key_start..]
            .find(|c: char| c == '=' || c.is_ascii_whitespace())
            .map_or(s.len(), |p| p + key_start);
        let eq = skip_space(key_end);
        if eq >= s.len() || bytes[eq] != b'=' {
            // Not `key = value`: the rest is shown as it is (it holds no
            // value of a key).
            parts.text(&s[i..]);
            break;
        }
        let value_start = skip_space(eq + 1);
        parts.text(&s[i..value_start]);
        let (value, value_end) = keyword_value(s, value_start);
        if is_secret_key(&s[key_start..key_end]) && value_end > value_start {
            parts.secret(&value);
        } else {
            parts.text(&s[value_start..value_end]);
        }
        i = value_end;
    }
}

/// The value of a keyword DSN that starts at `start`, as libpq reads it,
/// and where its written form ends.
fn keyword_value(s: &str, start: usize) -> (String, usize) {
    let mut value = String::new();
    let mut chars = s[start..].char_indices();
    // libpq quotes with `'`; a `"` is taken as a quote too, so that a
    // value written so is masked whole.
    let quote = s[start..]
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"');
    if quote.is_some() {
        chars.next();
    }
    while let Some((at, c)) = chars.next() {
        match c {
            '\\' => {
                if let Some((_, next)) = chars.next() {
                    value.push(next);
                }
            }
            c if Some(c) == quote => return (value, start + at + 1),
            c if quote.is_none() && c.is_ascii_whitespace() => return (value, start + at),
            c => value.push(c),
        }
    }
    (value, s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(url: &str) -> Vec<String> {
        ConnectionUrl::new(url)
            .secrets()
            .map(|s| s.expose_secret().to_owned())
            .collect()
    }

    #[test]
    fn each_secret_is_its_own_part() {
        assert_eq!(secrets("postgres://u:a@b#c?d/e@h/db"), ["a@b#c?d/e"]);
        assert_eq!(
            secrets("redis+unix:///run/r.sock?db=2&pass=p-1&token=t-2"),
            ["p-1", "t-2"]
        );
        assert_eq!(secrets("redis://tok@cache"), ["tok"]);
        assert_eq!(secrets("postgres://app@db/app"), Vec::<String>::new());
        assert_eq!(secrets("host=h password=\"a b\" user=u"), ["a b"]);
        assert_eq!(secrets("app:pw@db/app"), ["pw"]);
    }

    #[test]
    fn what_is_shown_holds_no_secret_and_every_other_part() {
        let url =
            ConnectionUrl::new("mysql://root:Zebra#9911@10.0.0.7:3306/shop?ssl-mode=REQUIRED");
        let shown = url.to_string();
        assert_eq!(
            shown,
            "mysql://root:***@10.0.0.7:3306/shop?ssl-mode=REQUIRED"
        );
        assert_eq!(format!("{url:?}"), format!("ConnectionUrl({shown:?})"));
        assert_eq!(serde_json::to_value(&url).unwrap(), shown);
        // Reading it back gives the masked URL, not the secret.
        let back: ConnectionUrl =
            serde_json::from_value(serde_json::to_value(&url).unwrap()).unwrap();
        assert_ne!(back, url);
        assert_eq!(
            url,
            "mysql://root:Zebra#9911@10.0.0.7:3306/shop?ssl-mode=REQUIRED".into()
        );
    }

    #[test]
    fn values_are_read_as_the_drivers_read_them() {
        for (url, secret, shown) in [
            // A `://` inside a keyword DSN's value makes no scheme.
            (
                "host=db password=Zebra-Secret-9911 application_name=http://svc",
                "Zebra-Secret-9911",
                "host=db password=*** application_name=http://svc",
            ),
            // `:` and `@` in a keyword DSN's password.
            (
                "host=db user=app password=Zebra:Secret@9911 dbname=app",
                "Zebra:Secret@9911",
                "host=db user=app password=*** dbname=app",
            ),
            (
                "hostaddr=::1 user=u password=p@ssword1",
                "p@ssword1",
                "hostaddr=::1 user=u password=***",
            ),
            // libpq's quoting and escapes, spaces around `=`.
            (
                r"host=db password='a\'b c' user=u",
                "a'b c",
                "host=db password=*** user=u",
            ),
            (
                "host = db password = s3cret-pass",
                "s3cret-pass",
                "host = db password = ***",
            ),
            // A URL query value runs to the next `&`, `#` included.
            (
                "postgres://u@h/db?password=abc#defghij&sslmode=require",
                "abc#defghij",
                "postgres://u@h/db?password=***&sslmode=require",
            ),
        ] {
            let url = ConnectionUrl::new(url);
            assert_eq!(url.to_string(), shown);
            assert_eq!(secrets(url.expose_secret()), [secret]);
        }
    }

    #[test]
    fn an_empty_password_still_shows_as_masked() {
        assert_eq!(
            ConnectionUrl::new("postgres://u:@h/db").to_string(),
            "postgres://u:***@h/db"
        );
    }
}
