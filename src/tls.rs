//! The one TLS stack of every backend (feature `tls`): rustls with the
//! `ring` crypto provider (it builds with a C compiler alone; aws-lc-rs
//! would add minutes of CMake-free but large C builds), trust roots from the
//! platform (`rustls-native-certs`, which honours `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`) plus an optional CA file per pool, and an optional
//! client certificate and key (mutual TLS).
//!
//! How much of the server's certificate is checked follows libpq's
//! `sslmode`s:
//!
//! | [`Verify`] | the chain | the host name |
//! |---|---|---|
//! | `Nothing` (`require`, `prefer`) | no | no |
//! | `Chain` (`verify-ca`) | yes, to the CA file only | no |
//! | `Full` (`verify-full`) | yes | yes |
//!
//! The handshake's signatures are checked in every mode. A chain checked
//! without the name trusts only the pool's CA file, never the platform's
//! roots: any publicly trusted certificate (one for a domain an attacker
//! owns) would pass otherwise. libpq refuses `verify-ca` with
//! `sslrootcert=system`, and the MySQL client wants `--ssl-ca` for
//! `VERIFY_CA`, for the same reason.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

/// How much of the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Encrypt, check nothing (libpq's `require` and `prefer`).
    Nothing,
    /// The chain up to a trusted root, not the host name (`verify-ca`).
    Chain,
    /// The chain and the host name (`verify-full`).
    Full,
}

/// What a pool's TLS needs besides its mode: extra trust and a client
/// identity, as files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Files {
    /// A PEM file of CA certificates trusted besides the platform's.
    pub(crate) ca: Option<PathBuf>,
    /// A PEM client certificate chain, with `key`.
    pub(crate) cert: Option<PathBuf>,
    /// The PEM private key of `cert`.
    pub(crate) key: Option<PathBuf>,
}

impl Files {
    /// The client certificate and key, which go together; `names` are the
    /// backend's own words for them in the error.
    pub(crate) fn identity(&self, names: [&str; 2]) -> Result<Option<(&Path, &Path)>, String> {
        match (&self.cert, &self.key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            _ => Err(format!(
                "{} and {} go together: set both or neither",
                names[0], names[1]
            )),
        }
    }
}

/// The bytes of `path`, the file the user gave as `name`, for drivers that
/// take PEM bytes; the error names both.
#[cfg(any(feature = "mysql", feature = "redis"))]
pub(crate) fn read(name: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{name} {}: {e}", path.display()))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes `ring` the process's default provider unless one is set: the
/// redis and mysql_async drivers build their rustls configs with
/// `ClientConfig::builder()`, which panics when another crate of the
/// application also compiled in aws-lc-rs and nobody chose.
#[cfg(any(feature = "mysql", feature = "redis"))]
pub(crate) fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A rustls client config for `verify` with `files`; `alpn` is offered in
/// that order. The error says which file or setting is wrong.
pub(crate) fn client_config(
    verify: Verify,
    files: &Files,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let builder = match verify {
        Verify::Full => builder.with_root_certificates(roots(files)?),
        Verify::Chain | Verify::Nothing => {
            let chain = match verify {
                Verify::Chain => Some(
                    WebPkiServerVerifier::builder_with_provider(ca_only(files)?, provider.clone())
                        .build()
                        .map_err(|e| format!("TLS setup: {e}"))?,
                ),
                _ => None,
            };
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Partial { chain, provider }))
        }
    };
    let mut config = match files.identity(["sslcert", "sslkey"])? {
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslcert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("sslkey {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("sslcert/sslkey: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The platform's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` when set) and the
/// CA file's.
fn roots(files: &Files) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    add_ca_file(&mut roots, files)?;
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: set sslrootcert or SSL_CERT_FILE, or install the platform's CA bundle"
                .to_owned(),
        );
    }
    Ok(Arc::new(roots))
}

/// The CA file's certificates alone, for a chain checked without the host
/// name (see the module docs); the file is required.
fn ca_only(files: &Files) -> Result<Arc<RootCertStore>, String> {
    if files.ca.is_none() {
        return Err(CA_REQUIRED.to_owned());
    }
    let mut roots = RootCertStore::empty();
    add_ca_file(&mut roots, files)?;
    Ok(Arc::new(roots))
}

/// Why a chain check without the name needs a CA file.
pub(crate) const CA_REQUIRED: &str = "sslmode=verify-ca needs sslrootcert, the CA that signed the server's certificate: without a host name check the platform's roots would accept any publicly trusted certificate; set sslrootcert, or use sslmode=verify-full";

/// Adds the certificates of the CA file, if there is one, to `roots`.
fn add_ca_file(roots: &mut RootCertStore, files: &Files) -> Result<(), String> {
    if let Some(ca) = &files.ca {
        let certs = CertificateDer::pem_file_iter(ca)
            .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("sslrootcert {}: {e}", ca.display()))?;
        let (added, _) = roots.add_parsable_certificates(certs);
        if added == 0 {
            return Err(format!(
                "sslrootcert {}: no CA certificate in it",
                ca.display()
            ));
        }
    }
    Ok(())
}

/// `verify-ca` (`chain`: the chain must lead to a trusted root; the name is
/// not checked, and webpki checks the chain before the name, so a name
/// error means the chain passed) and `require`/`prefer` (no `chain`: any
/// certificate). The handshake's signatures are checked either way.
struct Partial {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for Partial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Partial")
            .field("chain", &self.chain.is_some())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for Partial {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError::*, Error::InvalidCertificate};
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(InvalidCertificate(NotValidForName | NotValidForNameContext { .. })) => {
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

const UNTRUSTED: &str =
    "server certificate is not trusted: unknown issuer; set sslrootcert or SSL_CERT_FILE";
const MISMATCH: &str = "server certificate does not match the host name (host name mismatch); connect by the name on the certificate, or use sslmode=verify-ca";
const EXPIRED: &str = "server certificate has expired";
const CLIENT_CERT: &str = "the server requires a client certificate (TLS alert certificate_required); set sslcert and sslkey";

/// A TLS failure in words a user can act on, found anywhere in `error`'s
/// chain; `None` when the chain holds no TLS error.
pub(crate) fn reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::{CertificateError as C, Error as E};
    let mut next = Some(error);
    while let Some(e) = next {
        let tls = e.downcast_ref::<E>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<E>())
        });
        if let Some(tls) = tls {
            return Some(match tls {
                E::InvalidCertificate(C::UnknownIssuer) => UNTRUSTED.to_owned(),
                E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    MISMATCH.to_owned()
                }
                E::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => EXPIRED.to_owned(),
                E::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
                    CLIENT_CERT.to_owned()
                }
                other => format!("TLS handshake failed: {other}"),
            });
        }
        if let Some(reason) = reason_in_text(&e.to_string()) {
            return Some(reason);
        }
        next = e.source();
    }
    None
}

/// The same from an error's text, for drivers that keep rustls' error out
/// of the source chain (the redis crate stores it behind an `Arc<dyn
/// Error>` whose chain skips it; h2 prints its I/O error without giving
/// it as the source): rustls' own wording of the certificate errors.
fn reason_in_text(text: &str) -> Option<String> {
    if text.contains("received fatal alert: CertificateRequired") {
        return Some(CLIENT_CERT.to_owned());
    }
    if !text.contains("invalid peer certificate") {
        return None;
    }
    Some(if text.contains("UnknownIssuer") {
        UNTRUSTED.to_owned()
    } else if text.contains("NotValidForName") || text.contains("not valid for name") {
        MISMATCH.to_owned()
    } else if text.contains("Expired") || text.contains("expired") {
        EXPIRED.to_owned()
    } else {
        format!("TLS handshake failed: {text}")
    })
}

/// The negotiated protocol as the stats show it (`TLSv1.3`).
pub(crate) fn version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    }
}
