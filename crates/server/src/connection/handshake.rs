//! Connection handshake: protocol header, start/start-ok (PLAIN and AMQPLAIN), tune/tune-ok
//! and open, with RabbitMQ's server properties, capabilities and refusals.

use bytes::Bytes;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use warren_core::connections::ConnectionInfo;
use warren_core::users::Access;
use warren_core::{AmqpError, User};
use warren_wire::constants::PROTOCOL_HEADER;
use warren_wire::method::{ConnectionOpenOk, ConnectionStart, ConnectionTune};
use warren_wire::{FieldTable, FieldValue, Method, ProtocolHeader, parse_protocol_header};

use super::{ConnError, Connection};

/// Reads the 8-byte protocol header. A foreign one is answered with ours and refused.
pub(super) async fn protocol_header(
    socket: &mut (dyn super::socket::Io + Send),
) -> Result<(), ConnError> {
    let mut got = [0u8; 8];
    let mut n = 0;
    while n < got.len() {
        let read = socket.read(&mut got[n..]).await?;
        if read == 0 {
            return Err(ConnError::Handshake(format!(
                "peer closed after {n} bytes of the protocol header"
            )));
        }
        n += read;
        if parse_protocol_header(&got[..n]) == ProtocolHeader::Foreign {
            break;
        }
    }
    if parse_protocol_header(&got[..n]) != ProtocolHeader::Amqp091 {
        let _ = socket.write_all(&PROTOCOL_HEADER).await;
        let _ = socket.shutdown().await;
        return Err(ConnError::Handshake(format!("foreign protocol header {:?}", &got[..n])));
    }
    Ok(())
}

fn server_properties() -> FieldTable {
    let capabilities = [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ]
    .into_iter()
    .fold(FieldTable::new(), |t, c| t.with(c, true));
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_string());
    FieldTable::new()
        .with("capabilities", capabilities)
        .with("cluster_name", format!("warren@{host}").as_str())
        .with("copyright", "Copyright (c) the warren authors")
        .with("information", "warren: an AMQP 0-9-1 broker for RabbitMQ clients")
        .with("platform", "Rust")
        .with("product", "warren")
        .with("version", env!("CARGO_PKG_VERSION"))
}

/// What a client logs in with.
enum Credentials {
    /// PLAIN or AMQPLAIN: name and password, if the response could be read.
    Password(Option<(String, String)>),
    /// EXTERNAL: the user its TLS client certificate names, if it sent a verified one.
    Certificate(Option<String>),
}

/// Splits a PLAIN response `authzid \0 user \0 password`.
fn plain(response: &[u8]) -> Option<(String, String)> {
    let mut parts = response.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?.to_string();
    let pass = std::str::from_utf8(parts.next()?).ok()?.to_string();
    Some((user, pass))
}

/// Reads AMQPLAIN's table (without its length prefix) of LOGIN and PASSWORD.
fn amqplain(response: &Bytes) -> Option<(String, String)> {
    let table = FieldTable::decode_body(response).ok()?;
    let text = |k: &str| match table.get(k)? {
        FieldValue::LongStr(b) => String::from_utf8(b.to_vec()).ok(),
        _ => None,
    };
    Some((text("LOGIN")?, text("PASSWORD")?))
}

impl Connection {
    /// Runs start, tune and open. On success the connection has a user, a vhost and its
    /// negotiated limits.
    pub(super) async fn handshake(&mut self) -> Result<(), ConnError> {
        self.send(
            0,
            ConnectionStart {
                version_major: 0,
                version_minor: 9,
                server_properties: server_properties(),
                // EXTERNAL (RabbitMQ's rabbitmq_auth_mechanism_ssl) where TLS verified a
                // client certificate.
                mechanisms: if self.tls.as_ref().is_some_and(|t| t.login.is_some()) {
                    Bytes::from_static(b"EXTERNAL PLAIN AMQPLAIN")
                } else {
                    Bytes::from_static(b"PLAIN AMQPLAIN")
                },
                locales: Bytes::from_static(b"en_US"),
            },
        )?;
        self.flush_all().await?;
        let start_ok = match self.next_method().await? {
            Method::ConnectionStartOk(m) => m,
            other => return Err(self.unexpected(&other)),
        };
        let capability = |name: &str| {
            matches!(
                start_ok.client_properties.get("capabilities"),
                Some(FieldValue::Table(t)) if t.get(name).and_then(FieldValue::as_bool) == Some(true)
            )
        };
        // Kept encoded (owned bytes) for the registry: the decoded table's strings are slices
        // of the read buffer, and holding them would keep that buffer allocated (measured:
        // +8 KB per idle connection).
        self.client_properties = start_ok.client_properties.clone();
        self.cancel_notify = capability("consumer_cancel_notify");
        self.blocked_notify = capability("connection.blocked");
        let credentials = match &*start_ok.mechanism {
            "PLAIN" => Credentials::Password(plain(&start_ok.response)),
            "AMQPLAIN" => Credentials::Password(amqplain(&start_ok.response)),
            "EXTERNAL" if self.tls.is_some() => {
                Credentials::Certificate(self.tls.as_ref().and_then(|t| t.login.clone()))
            }
            other => {
                return Err(ConnError::Amqp(
                    AmqpError::command_invalid(format!(
                        "unknown authentication mechanism '{other}'"
                    )),
                    10,
                    11,
                ));
            }
        };
        let mechanism = start_ok.mechanism.clone();
        let user = self.authenticate(credentials, &mechanism)?;
        self.send(
            0,
            ConnectionTune {
                channel_max: self.config.channel_max,
                frame_max: self.config.frame_max,
                heartbeat: self.config.heartbeat,
            },
        )?;
        self.flush_all().await?;
        let tune_ok = match self.next_method().await? {
            Method::ConnectionTuneOk(m) => m,
            other => return Err(self.unexpected(&other)),
        };
        self.negotiate(tune_ok.channel_max, tune_ok.frame_max, tune_ok.heartbeat)?;
        let open = match self.next_method().await? {
            Method::ConnectionOpen(m) => m,
            other => return Err(self.unexpected(&other)),
        };
        // As RabbitMQ: the node's connection limit, the vhost's, the user's, then access.
        let amqp = |e| ConnError::Amqp(e, 10, 40);
        let node = self.broker.count_connection().map_err(amqp)?;
        let Some(vhost) = self.broker.vhost(&open.virtual_host) else {
            return Err(ConnError::Amqp(
                AmqpError::not_allowed(format!("vhost {} not found", open.virtual_host)),
                10,
                40,
            ));
        };
        let counted = vhost.open_connection(&user.name).map_err(amqp)?;
        let per_user = self.broker.count_user_connection(&user.name).map_err(amqp)?;
        let mut access = Access::new(self.broker.clone(), &user.name, &open.virtual_host);
        if !access.any() {
            return Err(ConnError::Amqp(
                AmqpError::not_allowed(format!(
                    "access to vhost '{}' refused for user '{}'",
                    open.virtual_host, user.name
                )),
                10,
                40,
            ));
        }
        self.vhost_connection = Some(counted);
        self.counted = vec![node, per_user];
        self.vhost = Some(vhost);
        let info = Arc::new(
            ConnectionInfo::new(
                self.id,
                &user.name,
                &open.virtual_host,
                self.peer,
                self.local,
                self.tls.is_some(),
                &std::mem::take(&mut self.client_properties),
                (self.frame_max, self.channel_max, self.heartbeat),
                {
                    let stop = self.shutdown.clone();
                    Box::new(move || stop.cancel())
                },
            )
            .with_events(self.events_tx.clone()),
        );
        self.info = Some(self.broker.register_connection(info));
        self.user = user.name;
        *self.access = access;
        self.send(0, ConnectionOpenOk { known_hosts: "".into() })?;
        self.flush_all().await?;
        tracing::info!(user = %self.user, vhost = %open.virtual_host, "connection open");
        Ok(())
    }

    fn authenticate(&self, credentials: Credentials, mechanism: &str) -> Result<User, ConnError> {
        let refused = || {
            ConnError::Amqp(
                AmqpError::access_refused(format!(
                    "Login was refused using authentication mechanism {mechanism}. For details see the broker logfile."
                )),
                10,
                11,
            )
        };
        let user = match credentials {
            Credentials::Password(given) => {
                let (name, pass) = given.ok_or_else(refused)?;
                self.broker.authenticate(&name, &pass).ok_or_else(|| {
                    tracing::warn!(user = %name, "login refused: bad credentials");
                    refused()
                })?
            }
            Credentials::Certificate(None) => {
                return Err(ConnError::Amqp(
                    AmqpError::access_refused("EXTERNAL login refused: no peer certificate"),
                    10,
                    11,
                ));
            }
            Credentials::Certificate(Some(name)) => self.broker.user(&name).ok_or_else(|| {
                tracing::warn!(user = %name, "EXTERNAL login refused: no such user");
                refused()
            })?,
        };
        let name = user.name.clone();
        if user.loopback_only && !self.peer.ip().is_loopback() {
            return Err(ConnError::Amqp(
                AmqpError::access_refused(format!("user '{name}' can only connect via localhost")),
                10,
                11,
            ));
        }
        Ok(user)
    }

    /// Applies the client's tune-ok, refusing values above what was offered.
    fn negotiate(
        &mut self,
        channel_max: u16,
        frame_max: u32,
        heartbeat: u16,
    ) -> Result<(), ConnError> {
        let refuse = |text: String| ConnError::Amqp(AmqpError::not_allowed(text), 10, 31);
        let offered_frame = self.config.frame_max;
        if frame_max != 0 && frame_max < warren_wire::constants::FRAME_MIN_SIZE {
            return Err(refuse(format!(
                "frame_max={frame_max} < {} min size",
                warren_wire::constants::FRAME_MIN_SIZE
            )));
        }
        if frame_max > offered_frame {
            return Err(refuse(format!("frame_max={frame_max} > {offered_frame} max size")));
        }
        if channel_max > self.config.channel_max {
            return Err(refuse(format!(
                "channel_max={channel_max} > {} max",
                self.config.channel_max
            )));
        }
        self.frame_max = if frame_max == 0 { offered_frame } else { frame_max };
        self.channel_max = if channel_max == 0 { self.config.channel_max } else { channel_max };
        self.heartbeat = heartbeat;
        Ok(())
    }
}
