//! A Redis pool's URL: the TLS file parameters taken out of it.

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
