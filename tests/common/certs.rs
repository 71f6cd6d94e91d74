//! Helpers of the TLS tests: a throwaway CA and a server certificate for
//! `localhost` made with rcgen, a guard that stops a server process, and the
//! `tls` fact of a pool's stats.

use std::{
    path::{Path, PathBuf},
    process::Child,
};

use axum_pools::PoolManager;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

/// A CA and a server certificate for `localhost`, as PEM files in `dir`;
/// also a second, unrelated CA.
pub struct Certs {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

pub fn make_certs(dir: &Path) -> Certs {
    let (ca_cert, issuer) = ca("axum-pools test CA");
    let (other_cert, _) = ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let certs = Certs {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
    };
    std::fs::write(&certs.ca, ca_cert.pem()).unwrap();
    std::fs::write(&certs.other_ca, other_cert.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    certs
}

/// A server process, killed when dropped.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the stats of `pool` say of its transport (`server.tls`).
pub fn tls_in_stats(manager: &PoolManager, pool: &str) -> Option<String> {
    manager.stats_of(pool)?.server?.get("tls").cloned()
}
