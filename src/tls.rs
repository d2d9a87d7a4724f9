//! TLS for the HTTP and Flight TCP listeners (`[tls]`): rustls with the ring provider,
//! PEM files re-read when they change.
//!
//! [`Tls`] holds the current server configurations, one per listener (they differ only
//! in ALPN: HTTP offers `h2` and `http/1.1`, Flight `h2`). Every accepted connection
//! takes the configuration current at its handshake, so a certificate replaced on disk
//! reaches new connections within `tls.reload_interval_s` while connections already
//! open keep their session. Files that do not load (a half-written copy, a key that
//! does not match its certificate) leave the last good configuration in place and are
//! logged and counted (`fastk_tls_reload_errors_total`).
//!
//! With `client_ca_path`, a client must present a certificate signed by one of its CAs
//! (mutual TLS); without one its handshake fails. Calls this node makes to other nodes
//! (shards) use TLS too, trusting the same CA file and presenting this node's
//! certificate ([`Tls::client`]).

use crate::sync::{LockExt, RwLockExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which listener a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Http,
    Flight,
}

/// The listeners' TLS state.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    current: RwLock<Loaded>,
    stamp: Mutex<Vec<Option<(SystemTime, u64)>>>,
    pub reloads: AtomicU64,
    pub reload_errors: AtomicU64,
}

#[derive(Debug, Clone)]
struct Loaded {
    http: Arc<ServerConfig>,
    flight: Arc<ServerConfig>,
    /// What calls to other nodes trust (PEM: the client CA file, or this node's own
    /// chain without one) and present (this node's certificate and key).
    trust: Vec<u8>,
    identity: (Vec<u8>, Vec<u8>),
}

/// The ring provider with its cipher suites reordered: TLS 1.3 before 1.2, and within
/// each AES-128-GCM, then AES-256-GCM, then ChaCha20-Poly1305. The listeners choose
/// by this order, not the client's ([`ServerConfig::ignore_client_order`]): AES-128-GCM
/// is TLS 1.3's mandatory suite and does 10 AES rounds to AES-256's 14, so a bulk read
/// spends less on encryption, on both ends, than the AES-256 that rustls and OpenSSL
/// clients ask for first (docs/operations.md, "Security").
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        let name = format!("{:?}", s.suite());
        let tls12 = s.tls13().is_none();
        let rank = if name.contains("AES_128") {
            0
        } else if name.contains("AES_256") {
            1
        } else {
            2
        };
        (tls12, rank)
    });
    debug_assert!(format!("{:?}", p.cipher_suites[0].suite()).contains("TLS13_AES_128_GCM"));
    Arc::new(p)
}

impl Tls {
    /// The TLS state of `cfg`, or `None` when TLS is off. An error names the file and
    /// what is wrong with it.
    pub fn load(cfg: &TlsConfig) -> Result<Option<Arc<Tls>>, String> {
        if !cfg.enabled() {
            return Ok(None);
        }
        let tls = Tls {
            cert: PathBuf::from(&cfg.cert_path),
            key: PathBuf::from(&cfg.key_path),
            client_ca: (!cfg.client_ca_path.is_empty()).then(|| PathBuf::from(&cfg.client_ca_path)),
            current: RwLock::new(Loaded {
                http: Arc::new(placeholder()?),
                flight: Arc::new(placeholder()?),
                trust: Vec::new(),
                identity: (Vec::new(), Vec::new()),
            }),
            stamp: Mutex::new(Vec::new()),
            reloads: AtomicU64::new(0),
            reload_errors: AtomicU64::new(0),
        };
        let stamp = tls.stamps();
        let loaded = tls.build()?;
        *tls.current.write_now() = loaded;
        *tls.stamp.locked() = stamp;
        Ok(Some(Arc::new(tls)))
    }

    /// True when clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.client_ca.is_some()
    }

    /// The acceptor for a new connection on `side`, with the current certificate.
    pub fn acceptor(&self, side: Side) -> TlsAcceptor {
        let l = self.current.read_now();
        TlsAcceptor::from(Arc::clone(match side {
            Side::Http => &l.http,
            Side::Flight => &l.flight,
        }))
    }

    /// tonic's client TLS for a call to another node: trusts the CA file (or, without
    /// one, the certificates of this node's own chain) and presents this node's
    /// certificate, so mutual TLS between nodes works with one CA.
    pub fn client(&self) -> tonic::transport::ClientTlsConfig {
        let l = self.current.read_now();
        tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(l.trust.clone()))
            .identity(tonic::transport::Identity::from_pem(
                l.identity.0.clone(),
                l.identity.1.clone(),
            ))
    }

    fn paths(&self) -> Vec<&Path> {
        let mut v = vec![self.cert.as_path(), self.key.as_path()];
        v.extend(self.client_ca.as_deref());
        v
    }

    fn stamps(&self) -> Vec<Option<(SystemTime, u64)>> {
        self.paths()
            .into_iter()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.modified().ok()?, m.len()))
            })
            .collect()
    }

    fn build(&self) -> Result<Loaded, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", name(p)));
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let certs = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("tls.cert_path {}: {e}", name(&self.cert)))?;
        if certs.is_empty() {
            return Err(format!(
                "tls.cert_path {}: no PEM certificate in it",
                name(&self.cert)
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            format!(
                "tls.key_path {}: no usable PEM private key: {e}",
                name(&self.key)
            )
        })?;
        let mut roots = RootCertStore::empty();
        let mut trust = cert_pem.clone();
        let verifier = match &self.client_ca {
            None => None,
            Some(ca) => {
                let pem = read(ca)?;
                trust.clone_from(&pem);
                for c in CertificateDer::pem_slice_iter(&pem) {
                    let c = c.map_err(|e| format!("tls.client_ca_path {}: {e}", name(ca)))?;
                    roots
                        .add(c)
                        .map_err(|e| format!("tls.client_ca_path {}: {e}", name(ca)))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "tls.client_ca_path {}: no PEM certificate in it",
                        name(ca)
                    ));
                }
                Some(
                    WebPkiClientVerifier::builder_with_provider(
                        Arc::new(roots.clone()),
                        provider(),
                    )
                    .build()
                    .map_err(|e| format!("tls.client_ca_path {}: {e}", name(ca)))?,
                )
            }
        };
        let make = |alpn: &[&[u8]]| -> Result<Arc<ServerConfig>, String> {
            let b = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?;
            let b = match &verifier {
                Some(v) => b.with_client_cert_verifier(Arc::clone(v)),
                None => b.with_no_client_auth(),
            };
            let mut c = b
                .with_single_cert(certs.clone(), key.clone_key())
                .map_err(|e| {
                    format!(
                        "tls.cert_path {} with tls.key_path {}: {e}",
                        name(&self.cert),
                        name(&self.key)
                    )
                })?;
            c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            c.ignore_client_order = true;
            Ok(Arc::new(c))
        };
        Ok(Loaded {
            http: make(&[b"h2", b"http/1.1"])?,
            flight: make(&[b"h2"])?,
            trust,
            identity: (cert_pem, key_pem),
        })
    }

    /// Loads the files again when any changed since the last look.
    pub fn reload_if_changed(&self) {
        let now = self.stamps();
        {
            let mut seen = self.stamp.locked();
            if *seen == now {
                return;
            }
            *seen = now;
        }
        match self.build() {
            Ok(loaded) => {
                *self.current.write_now() = loaded;
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!("TLS certificate files changed: new connections use them");
            }
            Err(why) => {
                self.reload_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(%why, "TLS files changed but do not load; keeping the previous certificate");
            }
        }
    }
}

/// What a client (`fastk import`/`export` against a server with `[tls]`) trusts and
/// presents: PEM files of the CA and, for mutual TLS, its certificate and key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl ClientFiles {
    fn read(p: &Path, what: &str) -> Result<Vec<u8>, String> {
        std::fs::read(p).map_err(|e| format!("{what} {}: {e}", name(p)))
    }

    /// The PEM of the CA, and of the certificate and key when both are given.
    #[allow(clippy::type_complexity)]
    fn pems(&self) -> Result<(Option<Vec<u8>>, Option<(Vec<u8>, Vec<u8>)>), String> {
        let ca = self
            .ca
            .as_deref()
            .map(|p| Self::read(p, "--ca-cert"))
            .transpose()?;
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((
                Self::read(c, "--client-cert")?,
                Self::read(k, "--client-key")?,
            )),
            (None, None) => None,
            _ => return Err("give --client-cert and --client-key together".into()),
        };
        Ok((ca, identity))
    }

    /// tonic's TLS for a Flight client.
    pub fn tonic(&self) -> Result<tonic::transport::ClientTlsConfig, String> {
        let (ca, identity) = self.pems()?;
        let ca =
            ca.ok_or("a grpc+tls:// server needs --ca-cert (the CA that signed its certificate)")?;
        let mut c = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(ca));
        if let Some((cert, key)) = identity {
            c = c.identity(tonic::transport::Identity::from_pem(cert, key));
        }
        Ok(c)
    }

    /// rustls's configuration for an HTTPS client.
    pub fn rustls(&self) -> Result<rustls::ClientConfig, String> {
        let (ca, identity) = self.pems()?;
        let ca =
            ca.ok_or("an https:// server needs --ca-cert (the CA that signed its certificate)")?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&ca) {
            roots
                .add(c.map_err(|e| format!("--ca-cert: {e}"))?)
                .map_err(|e| format!("--ca-cert: {e}"))?;
        }
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        match identity {
            None => Ok(b.with_no_client_auth()),
            Some((cert, key)) => {
                let chain = CertificateDer::pem_slice_iter(&cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("--client-cert: {e}"))?;
                let key = PrivateKeyDer::from_pem_slice(&key)
                    .map_err(|e| format!("--client-key: {e}"))?;
                b.with_client_auth_cert(chain, key)
                    .map_err(|e| format!("--client-cert with --client-key: {e}"))
            }
        }
    }
}

/// A file's name for messages (not its directory: no machine paths in errors).
fn name(p: &Path) -> String {
    p.file_name()
        .map_or_else(|| "?".into(), |n| n.to_string_lossy().into_owned())
}

/// A configuration never served: [`Tls::load`] replaces it before it returns.
fn placeholder() -> Result<ServerConfig, String> {
    let b = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok(b.with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::server::ResolvesServerCertUsingSni::new())))
}

/// Re-reads the certificate files every `interval` until `stop`.
pub async fn watch(
    tls: Arc<Tls>,
    interval: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        tls.reload_if_changed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("rcgen");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    fn served_cert(t: &Tls) -> Vec<u8> {
        t.current.read_now().identity.0.clone()
    }

    #[test]
    fn a_changed_pair_is_loaded_and_a_broken_one_keeps_the_last_good() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let (a_cert, a_key) = pair();
        let (b_cert, b_key) = pair();
        std::fs::write(&cert, &a_cert).unwrap();
        std::fs::write(&key, &a_key).unwrap();
        let cfg = TlsConfig {
            cert_path: cert.to_string_lossy().into(),
            key_path: key.to_string_lossy().into(),
            ..TlsConfig::default()
        };
        let tls = Tls::load(&cfg).unwrap().expect("TLS on");
        assert_eq!(served_cert(&tls), a_cert.as_bytes());
        tls.reload_if_changed();
        assert_eq!(tls.reloads.load(Ordering::Relaxed), 0, "nothing changed");

        // Half a rotation: B's key under A's certificate does not load.
        std::fs::write(&key, format!("{b_key}\n")).unwrap();
        tls.reload_if_changed();
        assert_eq!(tls.reload_errors.load(Ordering::Relaxed), 1);
        assert_eq!(
            served_cert(&tls),
            a_cert.as_bytes(),
            "the last good pair stays"
        );

        // The other half: B's certificate too.
        std::fs::write(&cert, &b_cert).unwrap();
        tls.reload_if_changed();
        assert_eq!(tls.reloads.load(Ordering::Relaxed), 1);
        assert_eq!(served_cert(&tls), b_cert.as_bytes());

        // A file that is not PEM at start is an error naming it, not a panic.
        std::fs::write(&cert, "not a certificate").unwrap();
        let e = Tls::load(&cfg).unwrap_err();
        assert!(e.contains("c.pem"), "{e}");
        assert!(
            !e.contains(&dir.path().to_string_lossy().to_string()),
            "no directories in messages: {e}"
        );
    }
}
