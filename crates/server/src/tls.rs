//! AMQPS: AMQP 0-9-1 over TLS on RabbitMQ's port 5671, with rustls. Enabled by a certificate
//! and key (`--ssl-certfile`, `--ssl-keyfile`, RabbitMQ's `ssl_options`); with a CA
//! (`--ssl-cacertfile`) and `--ssl-verify verify_peer`, client certificates are verified, and
//! a client with a verified one may log in with the EXTERNAL mechanism as the user its
//! certificate names (RabbitMQ's `rabbitmq_auth_mechanism_ssl`, `ssl_cert_login_from`).
//!
//! The TLS task decrypts into one end of a Unix socket pair and the connection runs on the
//! other end exactly as on a TCP socket (see `connection::socket`), so TLS costs the hot path
//! nothing and a plain connection nothing at all.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use warren_core::Broker;

use crate::config::{CertLogin, Config, SslVerify};
use crate::connection::socket::Stream;
use crate::connection::{self, TlsPeer};

/// How long a closed connection's TLS side may take to finish sending.
const LINGER: Duration = Duration::from_secs(2);

/// The TLS side of the listener, if the configuration asks for one.
pub(crate) fn acceptor(config: &Config) -> anyhow::Result<Option<TlsAcceptor>> {
    let (cert, key) = match (&config.ssl_certfile, &config.ssl_keyfile) {
        (Some(c), Some(k)) => (c, k),
        (None, None) => return Ok(None),
        _ => bail!("TLS needs both --ssl-certfile and --ssl-keyfile"),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match (&config.ssl_cacertfile, config.ssl_verify) {
        (Some(ca), SslVerify::VerifyPeer) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(ca)? {
                roots.add(c).with_context(|| format!("adding a CA from {}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider);
            let verifier = if config.ssl_fail_if_no_peer_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(verifier.build().context("client verification")?)
        }
        (None, SslVerify::VerifyPeer) => bail!("--ssl-verify verify_peer needs --ssl-cacertfile"),
        _ => builder.with_no_client_auth(),
    };
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let server = builder.with_single_cert(certs(cert)?, key).context("certificate and key")?;
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("no certificate in {}", path.display());
    }
    Ok(certs)
}

/// Serves one TLS client: the handshake (within the handshake timeout), then the connection.
pub(crate) async fn serve(
    tcp: TcpStream,
    (peer, local): (SocketAddr, SocketAddr),
    acceptor: TlsAcceptor,
    broker: Arc<Broker>,
    config: Arc<Config>,
    shutdown: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let limit = Duration::from_secs(config.handshake_timeout);
    let mut tls = match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return debug!(%peer, "TLS handshake failed: {e}"),
        Err(_) => return debug!(%peer, "no TLS handshake within {limit:?}"),
    };
    let login = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|cert| login_name(cert, config.ssl_cert_login_from));
    let (mut mine, theirs) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => return debug!(%peer, "no socket pair for a TLS connection: {e}"),
    };
    // Bytes both ways until either side closes; the connection never waits for it.
    let relay =
        tokio::spawn(async move { tokio::io::copy_bidirectional(&mut tls, &mut mine).await });
    let stream = Stream::Unix(theirs);
    let tls = Some(TlsPeer { login });
    connection::serve(stream, peer, local, tls, broker, config, shutdown).await;
    let abort = relay.abort_handle();
    if tokio::time::timeout(LINGER, relay).await.is_err() {
        // The client keeps its side open: the relay (and the socket) go now.
        abort.abort();
        debug!(%peer, "the TLS client did not close within {LINGER:?}");
    }
}

/// The user a client certificate logs in as: its subject's first common name, or its whole
/// subject as RabbitMQ writes it (RFC 4514, last RDN first: `CN=guest,O=client`).
pub(crate) fn login_name(cert: &CertificateDer<'_>, from: CertLogin) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = cert.subject();
    match from {
        CertLogin::CommonName => {
            subject.iter_common_name().next()?.as_str().ok().map(str::to_string)
        }
        CertLogin::DistinguishedName => {
            let rdns: Vec<String> = subject
                .iter_rdn()
                .map(|rdn| {
                    let parts: Vec<String> = rdn
                        .iter()
                        .map(|attr| {
                            let oid = attr.attr_type().to_id_string();
                            let value = attr.as_str().unwrap_or_default();
                            format!("{}={}", abbreviation(&oid).unwrap_or(&oid), escape(value))
                        })
                        .collect();
                    parts.join("+")
                })
                .collect();
            Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
        }
    }
}

/// RabbitMQ's names for attribute types (others are written as their dotted OID).
fn abbreviation(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.4" => "SN",
        "2.5.4.42" => "GIVENNAME",
        "2.5.4.43" => "INITIALS",
        "2.5.4.44" => "GENERATIONQUALIFIER",
        "2.5.4.3" => "CN",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "TITLE",
        "2.5.4.6" => "C",
        "2.5.4.5" => "SERIALNUMBER",
        "2.5.4.65" => "PSEUDONYM",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.2.840.113549.1.9.1" => "EMAILADDRESS",
        "2.5.4.9" => "STREET",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// Escapes an attribute value as RFC 4514 (and RabbitMQ) do.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.len().saturating_sub(1);
    for (i, c) in value.char_indices() {
        match c {
            ' ' | '#' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            // As RabbitMQ: non-printable and non-ASCII characters (and `~`) as their UTF-8
            // bytes in hex.
            c if (c as u32) < 32 || (c as u32) >= 126 => {
                let mut bytes = [0u8; 4];
                for b in c.encode_utf8(&mut bytes).bytes() {
                    out.push_str(&format!("\\{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn values_are_escaped_as_rfc_4514() {
        assert_eq!(escape("guest"), "guest");
        assert_eq!(escape("#a b "), "\\#a b\\ ");
        assert_eq!(escape("a,b+c"), "a\\,b\\+c");
        assert_eq!(escape(" x"), "\\ x");
        assert_eq!(escape("é~"), "\\C3\\A9\\7E");
    }
}
