//! AMQPS: lapin over TLS (rustls on both sides) against the broker's 5671-style listener,
//! with certificates made by the `openssl` command for each test: publish, confirm and get
//! over TLS; client certificates verified against a CA and the EXTERNAL mechanism logging in
//! as the certificate's common name or whole subject (RabbitMQ's `ssl_cert_login_from`); a
//! client without a certificate refused when one is required.

use std::path::{Path, PathBuf};
use std::process::Command;

use lapin::options::{BasicGetOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};

use crate::TestBroker;
use crate::support::{code, within};

/// A CA, a server certificate for localhost and a client certificate with `subject`.
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn new(client_subject: &str) -> Certs {
        let dir = std::env::temp_dir().join(format!(
            "warren-tls-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        openssl(
            &dir,
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=warren test CA",
                ],
            ]
            .concat(),
        );
        // Extensions make version 3 certificates (webpki refuses version 1).
        std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
            .expect("server extensions");
        std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
            .expect("client extensions");
        for (name, subject, ext) in
            [("server", "/CN=localhost", "server.ext"), ("client", client_subject, "client.ext")]
        {
            let (key, csr, pem) =
                (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
            openssl(
                &dir,
                &[&["req"], &ec[..], &["-keyout", &key, "-out", &csr, "-subj", subject]].concat(),
            );
            let sign = [
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-days",
                "2",
                "-extfile",
                ext,
            ];
            openssl(&dir, &sign);
        }
        Certs { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(name)).expect("cert file")
    }

    /// lapin's TLS settings: trust the test CA, and present the client certificate if asked.
    fn client(&self, identity: bool) -> OwnedTLSConfig {
        OwnedTLSConfig {
            identity: identity.then(|| OwnedIdentity::PKCS8 {
                pem: self.read("client.pem"),
                key: self.read("client.key"),
            }),
            cert_chain: Some(String::from_utf8(self.read("ca.pem")).expect("pem")),
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl runs");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A free loopback port for the TLS listener.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A broker with TLS on a port of its own; `extra` flags added.
fn tls_broker(certs: &Certs, extra: &[&str]) -> (TestBroker, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let (cert, key) = (certs.path("server.pem"), certs.path("server.key"));
    let mut args = vec!["--ssl-listen", &listen, "--ssl-certfile", &cert, "--ssl-keyfile", &key];
    args.extend_from_slice(extra);
    (TestBroker::start_with(&args, &[]), port)
}

async fn connect(uri: &str, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    within(Connection::connect_with_config(uri, ConnectionProperties::default(), tls, runtime))
        .await
}

/// Declares, publishes with a confirm and gets the message back on `conn`.
async fn round_trip(conn: &Connection) {
    let ch = within(conn.create_channel()).await.expect("channel");
    ch.confirm_select(Default::default()).await.expect("confirm");
    ch.queue_declare("tls-q".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    let confirm = ch
        .basic_publish(
            "".into(),
            "tls-q".into(),
            BasicPublishOptions::default(),
            b"secret",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("confirm");
    assert!(confirm.is_ack());
    let got = ch.basic_get("tls-q".into(), BasicGetOptions { no_ack: true }).await.expect("get");
    assert_eq!(got.expect("a message").delivery.data, b"secret");
}

#[tokio::test]
async fn lapin_publishes_and_gets_over_tls() {
    let certs = Certs::new("/CN=someone");
    let (broker, port) = tls_broker(&certs, &[]);
    let conn = connect(&format!("amqps://guest:guest@localhost:{port}/%2f"), certs.client(false))
        .await
        .expect("TLS connection");
    round_trip(&conn).await;
    // The plain listener goes on as before.
    round_trip(&broker.connect().await).await;
    // A client that does not trust the server's certificate fails its handshake.
    let untrusted = OwnedTLSConfig::default();
    assert!(
        connect(&format!("amqps://guest:guest@localhost:{port}/%2f"), untrusted).await.is_err()
    );
}

/// A broker verifying client certificates against the test CA (`extra` flags added), a client
/// certificate with `subject`, and the broker's EXTERNAL and PLAIN AMQPS URIs.
fn verifying_broker(subject: &str, extra: &[&str]) -> (Certs, TestBroker, String, String) {
    let certs = Certs::new(subject);
    let ca = certs.path("ca.pem");
    let mut flags = vec!["--ssl-cacertfile", &ca, "--ssl-verify", "verify_peer"];
    flags.extend_from_slice(extra);
    let (broker, port) = tls_broker(&certs, &flags);
    let external = format!("amqps://localhost:{port}/%2f?auth_mechanism=external");
    let plain = format!("amqps://guest:guest@localhost:{port}/%2f");
    (certs, broker, external, plain)
}

#[tokio::test]
async fn external_logs_in_as_the_client_certificates_common_name() {
    let login = ["--ssl-cert-login-from", "common_name"];
    let (certs, _broker, uri, plain) = verifying_broker("/O=client/CN=guest", &login);
    let conn = connect(&uri, certs.client(true)).await.expect("EXTERNAL login as guest");
    round_trip(&conn).await;
    // Without a certificate (allowed: fail_if_no_peer_cert is off) EXTERNAL is refused, and
    // PLAIN still works.
    let e = connect(&uri, certs.client(false)).await.expect_err("no certificate, no EXTERNAL");
    assert!(matches!(code(&e), Some(403) | None), "{e}");
    round_trip(&connect(&plain, certs.client(false)).await.expect("PLAIN over TLS")).await;
}

#[tokio::test]
async fn external_logs_in_as_the_whole_subject_by_default_and_a_certificate_can_be_required() {
    // The user named by the certificate's subject as RabbitMQ writes it (last RDN first).
    let flags = ["--ssl-fail-if-no-peer-cert", "--default-user", "CN=app,O=client"];
    let (certs, _broker, uri, plain) = verifying_broker("/O=client/CN=app", &flags);
    let conn = connect(&uri, certs.client(true)).await.expect("EXTERNAL login as the subject");
    round_trip(&conn).await;
    assert!(connect(&plain, certs.client(false)).await.is_err(), "a certificate is required");
}
