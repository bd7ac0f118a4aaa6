//! TLS for `rediss://` URLs: the settings ([`Tls`]) and the redis-rs client built with them.

use crate::error::{Error, Result};

/// TLS settings for `rediss://` URLs (rustls; feature `tls`, on by default). With none set, the server's
/// certificate must chain to one of the system's root certificates and name the URL's host.
///
/// ```no_run
/// # fn f() -> Result<(), Box<dyn std::error::Error>> {
/// let config = rill::ClientConfig {
///     tls: rill::Tls {
///         ca_pem: Some(std::fs::read("ca.crt")?),
///         client_pem: Some((std::fs::read("client.crt")?, std::fs::read("client.key")?)),
///         ..Default::default()
///     },
///     ..Default::default()
/// };
/// let client = rill::Client::with_config("rediss://redis.internal:6380", config)?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Tls {
    /// PEM certificate(s) of the authority that signed the server's certificate, trusted instead of the
    /// system's roots (a private CA, or a managed Redis's own).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM client certificate and private key, for servers that authenticate clients (`tls-auth-clients yes`).
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Accept any server certificate and host name. Anyone on the path can then read and change the traffic:
    /// for a test server only, never by default.
    pub insecure: bool,
}

impl Tls {
    pub(super) fn is_set(&self) -> bool {
        self.ca_pem.is_some() || self.client_pem.is_some() || self.insecure
    }

    /// Each PEM given holds what it should (redis-rs would take a CA file without certificates as "trust
    /// nothing" and fail only at connect time, with a less helpful message).
    #[cfg(feature = "tls")]
    fn check_pem(&self) -> Result<()> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificates = |pem: &[u8]| {
            let all: std::result::Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem).collect();
            all.is_ok_and(|c| !c.is_empty())
        };
        let bad = |reason| {
            Err(Error::InvalidOption {
                option: "tls",
                reason,
            })
        };
        if let Some(ca) = &self.ca_pem
            && !certificates(ca)
        {
            return bad("the CA file holds no readable PEM certificate");
        }
        if let Some((cert, key)) = &self.client_pem {
            if !certificates(cert) {
                return bad("the client certificate file holds no readable PEM certificate");
            }
            if PrivateKeyDer::from_pem_slice(key).is_err() {
                return bad("the client key file holds no readable PEM private key");
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for Tls {
    // Key material stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<set>"))
            .field("client_pem", &self.client_pem.as_ref().map(|_| "<set>"))
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// The redis-rs client for `url`, with `tls` applied to a `rediss://` URL.
pub(super) fn open(url: &str, tls: &Tls) -> Result<redis::Client> {
    use redis::IntoConnectionInfo;
    let invalid = |source| Error::InvalidUrl {
        url: url.to_owned(),
        source,
    };
    #[cfg(feature = "tls")]
    if url.starts_with("rediss") && rustls::crypto::CryptoProvider::get_default().is_none() {
        // rustls panics at the first handshake when the build enables two crypto providers (ring here, aws-lc-rs
        // from another crate) and the process chose neither: choose ours, unless the application already did.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    if !tls.is_set() {
        return redis::Client::open(url).map_err(invalid);
    }
    let info = url.into_connection_info().map_err(invalid)?;
    let redis::ConnectionAddr::TcpTls {
        host,
        port,
        insecure,
        tls_params,
    } = info.addr().clone()
    else {
        return Err(Error::InvalidOption {
            option: "tls",
            reason: "TLS settings need a rediss:// URL",
        });
    };
    let info = info.set_addr(redis::ConnectionAddr::TcpTls {
        host,
        port,
        insecure: insecure || tls.insecure,
        tls_params,
    });
    #[cfg(feature = "tls")]
    {
        tls.check_pem()?;
        let certificates = redis::TlsCertificates {
            client_tls: tls.client_pem.clone().map(|(client_cert, client_key)| {
                redis::ClientTlsConfig {
                    client_cert,
                    client_key,
                }
            }),
            root_cert: tls.ca_pem.clone(),
        };
        redis::Client::build_with_tls(info, certificates).map_err(|source| Error::InvalidUrl {
            url: url.to_owned(),
            source,
        })
    }
    #[cfg(not(feature = "tls"))]
    {
        redis::Client::open(info).map_err(invalid)
    }
}
