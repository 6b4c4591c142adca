//! A raw AMQP client on warren-wire, for what lapin will not send: malformed frames, silence,
//! foreign headers, odd tune values.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_wire::frame::decode_frame;
use warren_wire::method::{ConnectionOpen, ConnectionStartOk, ConnectionTuneOk};
use warren_wire::{FieldTable, Frame, Method};

/// A socket speaking frames.
pub struct Raw {
    pub sock: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects and sends the protocol header.
    pub async fn connect(addr: std::net::SocketAddr) -> Raw {
        let mut sock = TcpStream::connect(addr).await.expect("tcp connect");
        sock.write_all(b"AMQP\x00\x00\x09\x01").await.expect("header");
        Raw { sock, buf: BytesMut::new() }
    }

    /// Connects, logs in as guest, opens `/` with the given heartbeat.
    pub async fn open(addr: std::net::SocketAddr, heartbeat: u16) -> Raw {
        let mut raw = Raw::connect(addr).await;
        let Method::ConnectionStart(_) = raw.method().await else { panic!("expected start") };
        raw.send(
            0,
            ConnectionStartOk {
                client_properties: FieldTable::new(),
                mechanism: "PLAIN".into(),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: "en_US".into(),
            },
        )
        .await;
        let Method::ConnectionTune(t) = raw.method().await else { panic!("expected tune") };
        raw.send(
            0,
            ConnectionTuneOk { channel_max: t.channel_max, frame_max: t.frame_max, heartbeat },
        )
        .await;
        raw.send(0, ConnectionOpen { virtual_host: "/".into(), ..Default::default() }).await;
        let Method::ConnectionOpenOk(_) = raw.method().await else { panic!("expected open-ok") };
        raw
    }

    /// Sends one method frame.
    pub async fn send(&mut self, channel: u16, m: impl Into<Method>) {
        let mut out = BytesMut::new();
        Frame::method(channel, m).encode(&mut out).expect("encode");
        self.sock.write_all(&out).await.expect("write");
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.sock.write_all(bytes).await.expect("write");
    }

    /// The next frame, or None at end of stream (10 s limit).
    pub async fn frame(&mut self) -> Option<Frame> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(f) =
                    decode_frame(&mut self.buf, u32::MAX).expect("valid frame from warren")
                {
                    return Some(f);
                }
                if self.sock.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("warren answered within 10 s")
    }

    /// The next method, skipping heartbeats.
    pub async fn method(&mut self) -> Method {
        loop {
            match self.frame().await.expect("a frame, not end of stream") {
                Frame::Method { method, .. } => return method,
                Frame::Heartbeat => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

    /// Reads until end of stream (within `limit`); true if the server closed the socket.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let mut scratch = [0u8; 4096];
        tokio::time::timeout(limit, async {
            loop {
                match self.sock.read(&mut scratch).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }
}
