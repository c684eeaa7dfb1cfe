//! TLS to the cluster: the rustls client configuration, built once at start-up, and the name
//! each node's certificate is checked against.
//!
//! Which name a node must prove: the configured `server_name` when there is one (one
//! certificate for the whole cluster), else the hostname the node announces (`CLUSTER SHARDS`
//! `hostname`, learned by the refresher), else the node's own host when it is a DNS name, else
//! the first seed's DNS name (managed clusters announce IPs but hold a certificate for the
//! service's name), else the node's IP address. Opening the TCP connection and `AUTH` stay in
//! `connect`; this module only wraps a connected socket.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::addr::host_of;
use super::stream::BackendStream;
use super::BackendError;
use crate::config::{BackendTlsConfig, Upstream};
use crate::tls::{load_certs, load_key, load_roots, provider, system_roots, TlsError};

/// The TLS side of every backend connection.
pub struct BackendTls {
    /// Replaced whole by a reload (SIGHUP): new connections use the new CA and certificate.
    connector: ArcSwap<TlsConnector>,
    /// `server_name` from the configuration: overrides every other choice.
    fixed_name: Option<ServerName<'static>>,
    /// The first seed's host, when it is a DNS name.
    seed_name: Option<ServerName<'static>>,
    /// Node address → hostname it announces; replaced whole by each topology refresh.
    announced: ArcSwap<HashMap<String, String>>,
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendTls")
            .field("fixed_name", &self.fixed_name)
            .field("seed_name", &self.seed_name)
            .finish_non_exhaustive()
    }
}

impl BackendTls {
    /// Loads the CA (or the system roots) and the client certificate, and builds the rustls
    /// configuration every backend connection shares.
    ///
    /// # Errors
    /// A file that cannot be read or used, or a server name that is not one.
    pub fn new(config: &BackendTlsConfig, seeds: &[Upstream]) -> Result<BackendTls, TlsError> {
        let provider = provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Setting {
                setting: "backend.tls",
                reason: e.to_string(),
            })?;
        let builder = if config.insecure_skip_verify {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        } else {
            let roots = match &config.ca_file {
                Some(path) => load_roots("backend.tls.ca_file (--upstream-tls-ca)", path)?,
                None => system_roots()?,
            };
            builder.with_root_certificates(roots)
        };
        let client_config = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => {
                let chain = load_certs("backend.tls.cert_file (--upstream-tls-cert)", cert)?;
                let key = load_key("backend.tls.key_file (--upstream-tls-key)", key)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| TlsError::Setting {
                        setting: "backend.tls.key_file (--upstream-tls-key)",
                        reason: format!("does not fit the client certificate: {e}"),
                    })?
            }
            _ => builder.with_no_client_auth(),
        };
        let fixed_name = match &config.server_name {
            Some(name) => {
                Some(
                    ServerName::try_from(name.clone()).map_err(|_| TlsError::Setting {
                        setting: "backend.tls.server_name",
                        reason: format!("'{name}' is not a DNS name or IP address"),
                    })?,
                )
            }
            None => None,
        };
        let seed_name = seeds
            .iter()
            .map(|seed| host_of(&seed.addr))
            .find(|host| host.parse::<std::net::IpAddr>().is_err())
            .and_then(|host| ServerName::try_from(host.to_string()).ok());
        Ok(BackendTls {
            connector: ArcSwap::from_pointee(TlsConnector::from(Arc::new(client_config))),
            fixed_name,
            seed_name,
            announced: ArcSwap::from_pointee(HashMap::new()),
        })
    }

    /// Takes the CA and certificates of `fresh` (loaded again from their files by a reload)
    /// for the connections opened from now on; open ones keep theirs.
    pub fn reload_certificates(&self, fresh: BackendTls) {
        self.connector.store(fresh.connector.load_full());
    }

    /// Whether `fresh` verifies node names the same way (a changed `server_name` needs a
    /// restart).
    pub fn same_names(&self, fresh: &BackendTls) -> bool {
        self.fixed_name == fresh.fixed_name
    }

    /// Replaces the announced hostnames (from a `CLUSTER SHARDS` reply).
    pub fn learn_hostnames(&self, names: HashMap<String, String>) {
        if **self.announced.load() != names {
            self.announced.store(Arc::new(names));
        }
    }

    /// The name `addr`'s certificate must carry (see the module comment for the order).
    fn server_name_for(&self, addr: &str) -> Result<ServerName<'static>, String> {
        if let Some(name) = &self.fixed_name {
            return Ok(name.clone());
        }
        if let Some(name) = self.announced.load().get(addr) {
            if let Ok(name) = ServerName::try_from(name.clone()) {
                return Ok(name);
            }
        }
        let host = host_of(addr);
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(self
                .seed_name
                .clone()
                .unwrap_or(ServerName::IpAddress(ip.into())));
        }
        ServerName::try_from(host.to_string())
            .map_err(|_| format!("'{host}' is not a valid TLS server name"))
    }

    /// Runs the TLS handshake on a connected socket.
    ///
    /// # Errors
    /// `Connect` naming the reason (an untrusted or mismatched certificate, a node that
    /// does not speak TLS, a refused client certificate).
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        addr: &str,
    ) -> Result<BackendStream, BackendError> {
        let name = self
            .server_name_for(addr)
            .map_err(|reason| BackendError::Connect {
                addr: addr.to_string(),
                reason,
            })?;
        let connector = self.connector.load_full();
        match connector.connect(name, tcp).await {
            Ok(tls) => Ok(BackendStream::Tls(Box::new(tls))),
            Err(error) => Err(BackendError::Connect {
                addr: addr.to_string(),
                reason: format!("TLS handshake failed: {error}"),
            }),
        }
    }
}

/// `insecure_skip_verify`: any certificate, any name. Handshake signatures are still checked,
/// so the peer at least holds the key of the certificate it sent.
#[derive(Debug)]
struct AnyServerCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tls(server_name: Option<&str>, seeds: &[&str]) -> BackendTls {
        let config = BackendTlsConfig {
            enabled: true,
            insecure_skip_verify: true,
            server_name: server_name.map(str::to_string),
            ..BackendTlsConfig::default()
        };
        let seeds: Vec<Upstream> = seeds
            .iter()
            .map(|s| crate::config::parse_upstream(s).unwrap())
            .collect();
        BackendTls::new(&config, &seeds).unwrap()
    }

    fn name(tls: &BackendTls, addr: &str) -> String {
        match tls.server_name_for(addr).unwrap() {
            ServerName::DnsName(d) => d.as_ref().to_string(),
            ServerName::IpAddress(ip) => format!("ip:{}", std::net::IpAddr::from(ip)),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn server_name_order() {
        let ips = tls(None, &["rediss://10.0.0.1:6379"]);
        assert_eq!(name(&ips, "10.0.0.2:6379"), "ip:10.0.0.2");
        assert_eq!(name(&ips, "[::1]:6379"), "ip:::1");
        assert_eq!(name(&ips, "node-3.example:6379"), "node-3.example");
        ips.learn_hostnames(HashMap::from([(
            "10.0.0.2:6379".to_string(),
            "node-2.example".to_string(),
        )]));
        assert_eq!(name(&ips, "10.0.0.2:6379"), "node-2.example");

        let seeded = tls(None, &["rediss://cfg.cache.example:6379"]);
        assert_eq!(name(&seeded, "10.0.0.2:6379"), "cfg.cache.example");

        let fixed = tls(Some("cluster.example"), &["rediss://10.0.0.1:6379"]);
        assert_eq!(name(&fixed, "10.0.0.2:6379"), "cluster.example");
    }
}
