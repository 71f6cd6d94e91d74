//! A Redis pool's URL: the TLS file parameters taken out of it, and the
//! parts of the several-host forms (`redis+cluster://`, `redis+sentinel://`).

use crate::tls;

/// Takes the TLS file parameters (`sslrootcert`, `sslcert`, `sslkey`) out
/// of a Redis URL's query.
pub(super) fn take_tls_files(url: &str) -> (String, tls::Files) {
    let mut files = tls::Files::default();
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), files);
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "sslrootcert" => &mut files.ca,
            "sslcert" => &mut files.cert,
            "sslkey" => &mut files.key,
            _ => {
                kept.push(pair);
                continue;
            }
        };
        *slot = Some(
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
                .into(),
        );
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, files)
}

/// The certificates to build the client with, read from `files`; `None`
/// without any file.
pub(super) fn certificates(files: &tls::Files) -> Result<Option<redis::TlsCertificates>, String> {
    let client_tls = match files.identity(["sslcert", "sslkey"])? {
        None => None,
        Some((cert, key)) => Some(redis::ClientTlsConfig {
            client_cert: tls::read("sslcert", cert)?,
            client_key: tls::read("sslkey", key)?,
        }),
    };
    let root_cert = match &files.ca {
        Some(ca) => Some(tls::read("sslrootcert", ca)?),
        None => None,
    };
    Ok(
        (client_tls.is_some() || root_cert.is_some()).then_some(redis::TlsCertificates {
            client_tls,
            root_cert,
        }),
    )
}

/// The parts of `[user:password@]h1:p1,h2:p2/path?query` (what follows a
/// several-host scheme).
pub(super) struct Hosts<'a> {
    /// `user:password@`, or empty.
    pub(super) credentials: String,
    pub(super) hosts: Vec<&'a str>,
    pub(super) path: &'a str,
    /// `?query`, or empty.
    pub(super) query: String,
}

pub(super) fn hosts(rest: &str) -> Hosts<'_> {
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, format!("?{query}")),
        None => (rest, String::new()),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((credentials, hosts)) => (format!("{credentials}@"), hosts),
        None => (String::new(), authority),
    };
    Hosts {
        credentials,
        hosts: hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect(),
        path,
        query,
    }
}
