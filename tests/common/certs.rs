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
/// also a second, unrelated CA, and a client certificate of the first CA
/// for the user `postgres` (its common name, as Postgres' `cert` auth
/// wants it).
pub struct Certs {
    pub ca: PathBuf,
    pub other_ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// The CA's key, for [`rsa_client`].
    ca_key: PathBuf,
}

fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(name);
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

const TEST_CA: &str = "axum-pools test CA";

fn ca_params(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

pub fn make_certs(dir: &Path) -> Certs {
    let (ca_cert, issuer) = ca(TEST_CA);
    let (other_cert, _) = ca("some other CA");
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "postgres");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let client_cert = params.signed_by(&client_key, &issuer).unwrap();
    let certs = Certs {
        ca: dir.join("ca.pem"),
        other_ca: dir.join("other-ca.pem"),
        cert: dir.join("server.crt"),
        key: dir.join("server.key"),
        client_cert: dir.join("client.crt"),
        client_key: dir.join("client.key"),
        ca_key: dir.join("ca.key"),
    };
    std::fs::write(&certs.ca_key, issuer.key().serialize_pem()).unwrap();
    std::fs::write(&certs.client_cert, client_cert.pem()).unwrap();
    std::fs::write(&certs.client_key, client_key.serialize_pem()).unwrap();
    std::fs::write(&certs.ca, ca_cert.pem()).unwrap();
    std::fs::write(&certs.other_ca, other_cert.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    certs
}

impl Certs {
    /// `&{cert}=…&{key}=…`: the client certificate and key as URL
    /// parameters of the names a driver takes.
    pub fn client_params(&self, cert: &str, key: &str) -> String {
        format!(
            "&{cert}={}&{key}={}",
            self.client_cert.display(),
            self.client_key.display()
        )
    }

    /// `url` with the path of the CA file replaced by the other CA's.
    pub fn with_other_ca(&self, url: &str) -> String {
        url.replace(
            &self.ca.display().to_string(),
            &self.other_ca.display().to_string(),
        )
    }
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

/// Replaces the server certificate and key of `certs` with new ones of the
/// same CA for `name` only (a renewed certificate, or another node).
pub fn renew_server_cert(certs: &Certs, name: &str) {
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&certs.ca_key).unwrap()).unwrap();
    let issuer = Issuer::new(ca_params(TEST_CA), ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec![name.to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
}

/// A client certificate of the test CA for the user `x509` whose key is
/// RSA in PKCS#8 form, as `openssl genrsa` writes it (the MySQL driver
/// takes RSA keys only; rcgen cannot make them): `(cert, key)` in `dir`.
pub fn rsa_client(certs: &Certs, dir: &Path) -> (PathBuf, PathBuf) {
    let key_path = dir.join("client-rsa.key");
    let ok = std::process::Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key_path)
        .arg("2048")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/services-up.sh installs it)")
        .success();
    assert!(ok, "openssl genrsa failed");
    let pem = std::fs::read_to_string(&key_path).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
    let key = KeyPair::from_pem(&pem).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&certs.ca_key).unwrap()).unwrap();
    let issuer = Issuer::new(ca_params(TEST_CA), ca_key);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, "x509");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let cert_path = dir.join("client-rsa.crt");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    (cert_path, key_path)
}
