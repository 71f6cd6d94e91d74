//! Credential redaction for every message that may carry a connection URL.
//!
//! Pools are configured with URLs such as `postgres://app:s3cret@db/app`. The
//! password must never reach a log line, an error, a health body or a panic, so
//! a pool's URL is a [`ConnectionUrl`], shown only as
//! its masked rendering ([`redact_url`] for a URL held as a string), and
//! every backend error is passed through a [`Redactor`] that knows the pool's
//! secrets before it is stored or shown: a backstop, since drivers do not
//! echo passwords.
//!
//! ```
//! use axum_pools::redact_url;
//!
//! assert_eq!(
//!     redact_url("postgres://app:s3cret@db.internal:5432/app"),
//!     "postgres://app:***@db.internal:5432/app"
//! );
//! assert_eq!(
//!     redact_url("host=db user=app password=s3cret"),
//!     "host=db user=app password=***"
//! );
//! ```

use std::fmt;

use crate::secret::{ConnectionUrl, ExposeSecret, MASK, scheme_end, userinfo_end};

/// Returns `url` with its password (and any secret query or keyword value)
/// replaced by `***`: [`ConnectionUrl`]'s rendering, for a URL held as a
/// plain string.
///
/// Works on strings that are not valid URLs too (keyword/value DSNs, typos):
/// it never fails and never returns the secret.
///
/// ```
/// use axum_pools::redact_url;
///
/// assert_eq!(redact_url("redis://:tok@cache:6379/0"), "redis://:***@cache:6379/0");
/// assert_eq!(redact_url("mysql://root@127.0.0.1/test"), "mysql://root@127.0.0.1/test");
/// assert_eq!(redact_url("sqlite://app.db?password=x"), "sqlite://app.db?password=***");
/// ```
#[must_use]
pub fn redact_url(url: &str) -> String {
    ConnectionUrl::new(url).to_string()
}

/// Percent-decodes `s` (for passwords written with `%40` and friends).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// How the URL of a pool whose backend refused it is shown: redacted when
/// it has a scheme (the password is masked however it is written), else
/// never its text (it may be a password pasted in the wrong place), only
/// its length.
pub(crate) fn refused(url: &ConnectionUrl) -> String {
    let raw = url.expose_secret();
    if scheme_end(raw).is_some() {
        url.to_string()
    } else {
        format!(
            "a url of {} characters without a scheme",
            raw.chars().count()
        )
    }
}

/// The fix when the password of a URL that could not be parsed holds a
/// character that URLs reserve.
pub(crate) fn encoding_hint(url: &ConnectionUrl) -> Option<&'static str> {
    let after = url.expose_secret().split_once("://")?.1;
    let userinfo = &after[..userinfo_end(after)?];
    let password = userinfo.split_once(':')?.1;
    password.contains(['#', '?', '@', '/', '%']).then_some(
        "a password holding '#', '?', '@', '/' or '%' must be percent-encoded \
         (%23, %3F, %40, %2F, %25)",
    )
}

/// The shortest secret [`Redactor::scrub`] looks for.
const MIN_SCRUBBED: usize = 8;

/// `text` with each whole-token occurrence of `secret` masked.
fn replace_tokens(text: &str, secret: &str) -> String {
    let bounded = |c: Option<char>| !c.is_some_and(char::is_alphanumeric);
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(secret) {
        if at < last {
            continue;
        }
        let end = at + secret.len();
        if bounded(text[..at].chars().next_back()) && bounded(text[end..].chars().next()) {
            out.push_str(&text[last..at]);
            out.push_str(MASK);
            last = end;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// Knows one pool's secrets and removes them from any text.
///
/// Backend errors are produced by drivers that may echo parts of the
/// connection string; a pool's `Redactor` scrubs each message before it is
/// stored, logged or shown.
///
/// ```
/// use axum_pools::Redactor;
///
/// let r = Redactor::from_url("postgres://app:Zebra-Secret-9911@db/app");
/// assert_eq!(r.url(), "postgres://app:***@db/app");
/// assert_eq!(
///     r.scrub("auth failed with Zebra-Secret-9911"),
///     "auth failed with ***"
/// );
/// // A user `test` with the password `test`: the user name stays readable.
/// let r = Redactor::from_url("postgres://test:test@db/app");
/// assert_eq!(r.scrub(r#"role "test" does not exist"#), r#"role "test" does not exist"#);
/// ```
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
    url: String,
}

impl Redactor {
    /// Builds a redactor for `url`: its secrets ([`ConnectionUrl::secrets`]),
    /// raw and percent-decoded, are what [`scrub`](Self::scrub) removes, and
    /// [`url`](Self::url) is its masked rendering.
    ///
    /// ```
    /// use axum_pools::{ConnectionUrl, Redactor};
    ///
    /// let url = ConnectionUrl::new("redis://:tok-Zebra-9911@cache:6379/0");
    /// let r = Redactor::new(&url);
    /// assert_eq!(r.url(), "redis://:***@cache:6379/0");
    /// assert_eq!(r.scrub("ERR invalid password tok-Zebra-9911"), "ERR invalid password ***");
    /// ```
    #[must_use]
    pub fn new(url: &ConnectionUrl) -> Self {
        let mut secrets = Vec::new();
        for secret in url.secrets() {
            let secret = secret.expose_secret();
            secrets.push(secret.to_owned());
            // A password may itself hold an '@', which a driver's reading
            // may end it at: its first part too.
            if let Some((first, _)) = secret.split_once('@') {
                secrets.push(first.to_owned());
            }
        }
        let decoded: Vec<String> = secrets.iter().map(|s| percent_decode(s)).collect();
        secrets.extend(decoded);
        let url = url.to_string();
        // Scrubbing is a backstop (drivers do not echo passwords): a short
        // secret would shred every message, and one equal to another part
        // of the URL (password `test` for user `test`) would hide that part
        // and tell that the two are equal. Such a password still never
        // appears through `url()`.
        let parts: Vec<&str> = url
            .split([':', '/', '@', '?', '&', '=', ',', ';', ' '])
            .collect();
        secrets.retain(|s| s.chars().count() >= MIN_SCRUBBED && !parts.contains(&s.as_str()));
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets, url }
    }

    /// [`new`](Self::new) for a URL held as a plain string.
    #[must_use]
    pub fn from_url(url: &str) -> Self {
        Self::new(&ConnectionUrl::new(url))
    }

    /// The redacted URL, safe to show.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `text` with every known secret of at least 8 characters replaced
    /// by `***` where it stands as a whole token (no letter or digit
    /// right before or after it).
    #[must_use]
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in &self.secrets {
            out = replace_tokens(&out, secret);
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("url", &self.url)
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_in_authority() {
        assert_eq!(
            redact_url("postgres://user:pa:ss@host/db"),
            "postgres://user:***@host/db"
        );
        assert_eq!(
            redact_url("mysql://u:p%40ss@h:3306/db?ssl-mode=required"),
            "mysql://u:***@h:3306/db?ssl-mode=required"
        );
        // '@' inside the password: the last '@' of the authority separates the host.
        assert_eq!(redact_url("postgres://u:a@b@h/db"), "postgres://u:***@h/db");
        // A raw '/' inside the password never shows it.
        assert_eq!(
            redact_url("postgres://u:pa/ss@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(
            redact_url("redis://:s/e/c@h:6379/0"),
            "redis://:***@h:6379/0"
        );
    }

    #[test]
    fn masks_credentials_in_strings_without_a_scheme() {
        assert_eq!(
            redact_url("redis//:hunter2-x@nonsense"),
            "redis//:***@nonsense"
        );
        assert_eq!(
            redact_url("app:pw@db.internal/app"),
            "app:***@db.internal/app"
        );
        let r = Redactor::from_url("redis//:hunter2-x@nonsense");
        assert_eq!(
            r.scrub("bad url redis//:hunter2-x@nonsense"),
            "bad url redis//:***@nonsense"
        );
    }

    #[test]
    fn leaves_urls_without_secrets_alone() {
        for url in [
            "postgres://postgres@127.0.0.1:5432/test",
            "sqlite://notes.db",
            "file:notes.db?mode=rwc",
            "notes.db",
            "",
        ] {
            assert_eq!(redact_url(url), url);
        }
    }

    #[test]
    fn masks_secret_parameters() {
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=x1y2&sslmode=disable"),
            "postgres://h/db?user=u&password=***&sslmode=disable"
        );
        assert_eq!(
            redact_url("host=h password='abc' dbname=d"),
            "host=h password=*** dbname=d"
        );
    }

    #[test]
    fn redactor_scrubs_raw_and_decoded_password() {
        let r = Redactor::from_url("postgres://u:p%40ssword@h/db?token=tok-12345");
        let msg = r.scrub("failed: p%40ssword / p@ssword / tok-12345");
        assert!(!msg.contains("ssword"), "{msg}");
        assert!(!msg.contains("tok-12345"), "{msg}");
        assert_eq!(r.url(), "postgres://u:***@h/db?token=***");
        let r = Redactor::from_url("mysql://u:pass/word@w@h/db");
        assert_eq!(r.scrub("bad pass/word@w, pass/word"), "bad ***, ***");
        assert!(!format!("{r:?}").contains("ssword"));
    }

    #[test]
    fn every_way_a_url_carries_a_secret_is_masked() {
        for (url, password, shown) in [
            (
                "postgres://u:Zebra#Secret-9911@host/db",
                "Zebra#Secret-9911",
                "postgres://u:***@host/db",
            ),
            (
                "postgres://u:Zebra?Secret-9911@host:5432/db?sslmode=require",
                "Zebra?Secret-9911",
                "postgres://u:***@host:5432/db?sslmode=require",
            ),
            (
                "redis://:pa#ss-word@cache:6379/0",
                "pa#ss-word",
                "redis://:***@cache:6379/0",
            ),
            (
                "mysql://u:a@b#c?d/e@host/db",
                "a@b#c?d/e",
                "mysql://u:***@host/db",
            ),
            // An `@` in the query leaves the credentials where they are.
            (
                "postgres://u:Zebra-9911@host/db?application_name=a@b",
                "Zebra-9911",
                "postgres://u:***@host/db?application_name=a@b",
            ),
            (
                "redis+unix:///run/redis.sock?db=2&pass=Zebra-9911",
                "Zebra-9911",
                "redis+unix:///run/redis.sock?db=2&pass=***",
            ),
            (
                "unix:///run/redis.sock?pass=Zebra-9911",
                "Zebra-9911",
                "unix:///run/redis.sock?pass=***",
            ),
            (
                "redis://tok-Zebra-9911@cache:6379",
                "tok-Zebra-9911",
                "redis://***@cache:6379",
            ),
            (
                "https://api/v1?access_token=Zebra-9911&client_secret=Zebra-9912&api-key=Zebra-9913",
                "Zebra-9912",
                "https://api/v1?access_token=***&client_secret=***&api-key=***",
            ),
            (
                "host=db user=app password='Zebra 9911 x' dbname=app",
                "Zebra 9911 x",
                "host=db user=app password=*** dbname=app",
            ),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            let r = Redactor::from_url(url);
            assert_eq!(r.url(), shown);
            assert_eq!(r.scrub(&format!("echo {password}.")), "echo ***.", "{url}");
        }
        // A user name with a password is not a token: it stays.
        assert_eq!(redact_url("redis://app:pw@cache"), "redis://app:***@cache");
        assert_eq!(redact_url("postgres://app@db/app"), "postgres://app@db/app");
    }

    #[test]
    fn a_refused_url_without_a_scheme_shows_only_its_length() {
        let url = ConnectionUrl::new;
        assert_eq!(refused(&url("redis://:pa#ss@h")), "redis://:***@h");
        assert_eq!(
            refused(&url("Zebra#Secret:x@y")),
            "a url of 16 characters without a scheme"
        );
        assert!(
            encoding_hint(&url("redis://:pa#ss@h"))
                .unwrap()
                .contains("%23")
        );
        assert_eq!(encoding_hint(&url("redis://:pass@h")), None);
        assert_eq!(encoding_hint(&url("notes.db")), None);
    }

    #[test]
    fn scrubbing_takes_whole_tokens_and_spares_the_other_parts() {
        // Short, or equal to the user name: not scrubbed (never in `url()`).
        let r = Redactor::from_url("postgres://test:test@db/app");
        assert_eq!(r.url(), "postgres://test:***@db/app");
        assert_eq!(
            r.scrub("role \"test\" does not exist"),
            "role \"test\" does not exist"
        );
        let r = Redactor::from_url("postgres://app:short@db/app");
        assert_eq!(r.scrub("short"), "short");
        // Whole tokens only.
        let r = Redactor::from_url("postgres://app:Zebra-9911x@db/app");
        assert_eq!(r.scrub("x Zebra-9911x y"), "x *** y");
        assert_eq!(r.scrub("xZebra-9911xy"), "xZebra-9911xy");
    }
}
