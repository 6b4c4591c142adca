//! Connection-level behaviour: handshake, credentials, vhosts, foreign headers, frame-max,
//! channel-max, heartbeats, handshake timeout, client and server close, SIGTERM.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use warren_wire::Method;
use warren_wire::method::{ChannelOpen, ConnectionClose, ConnectionCloseOk};

use crate::TestBroker;
use crate::raw::Raw;

fn close_code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

#[tokio::test]
async fn lapin_connects_and_closes() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    assert!(conn.status().connected());
    let ch = conn.create_channel().await.expect("channel");
    ch.close(200, "bye".into()).await.expect("channel close");
    conn.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn server_properties_advertise_rabbitmq_capabilities() {
    let broker = TestBroker::start();
    let mut raw = Raw::connect(broker.addr).await;
    let Method::ConnectionStart(start) = raw.method().await else { panic!("start") };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    assert_eq!(&start.mechanisms[..], b"PLAIN AMQPLAIN");
    let Some(warren_wire::FieldValue::Table(caps)) = start.server_properties.get("capabilities")
    else {
        panic!("capabilities table")
    };
    for cap in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "connection.blocked",
        "consumer_priorities",
        "authentication_failure_close",
        "per_consumer_qos",
        "direct_reply_to",
    ] {
        assert_eq!(caps.get(cap).and_then(|v| v.as_bool()), Some(true), "{cap}");
    }
    for key in ["product", "version", "platform", "copyright", "information", "cluster_name"] {
        assert!(start.server_properties.get(key).is_some(), "{key}");
    }
}

#[tokio::test]
async fn tune_offers_rabbitmq_limits() {
    let broker = TestBroker::start();
    let mut raw = Raw::connect(broker.addr).await;
    let _start = raw.method().await;
    raw.send(
        0,
        warren_wire::method::ConnectionStartOk {
            mechanism: "PLAIN".into(),
            response: bytes::Bytes::from_static(b"\0guest\0guest"),
            locale: "en_US".into(),
            ..Default::default()
        },
    )
    .await;
    let Method::ConnectionTune(t) = raw.method().await else { panic!("tune") };
    assert_eq!((t.channel_max, t.frame_max, t.heartbeat), (2047, 131072, 60));
}

#[tokio::test]
async fn wrong_password_is_refused_with_403() {
    let broker = TestBroker::start();
    let uri = format!("amqp://guest:nope@{}/%2f", broker.addr);
    let err =
        Connection::connect(&uri, ConnectionProperties::default()).await.expect_err("refused");
    assert_eq!(close_code(&err), Some(403), "{err}");
}

#[tokio::test]
async fn unknown_vhost_is_refused_with_530() {
    let broker = TestBroker::start();
    let uri = format!("amqp://guest:guest@{}/nowhere", broker.addr);
    let err =
        Connection::connect(&uri, ConnectionProperties::default()).await.expect_err("refused");
    assert_eq!(close_code(&err), Some(530), "{err}");
}

#[tokio::test]
async fn default_user_and_vhost_come_from_rabbitmq_env_vars() {
    let broker = TestBroker::start_with(
        &[],
        &[
            ("RABBITMQ_DEFAULT_USER", "app"),
            ("RABBITMQ_DEFAULT_PASS", "s3cret"),
            ("RABBITMQ_DEFAULT_VHOST", "dev"),
        ],
    );
    let uri = format!("amqp://app:s3cret@{}/dev", broker.addr);
    let conn =
        Connection::connect(&uri, ConnectionProperties::default()).await.expect("app on dev");
    conn.close(200, "bye".into()).await.expect("close");
    let guest = Connection::connect(&broker.uri(), ConnectionProperties::default()).await;
    assert!(guest.is_err(), "guest no longer exists");
}

#[tokio::test]
async fn foreign_protocol_header_is_answered_with_ours() {
    let broker = TestBroker::start();
    for header in [
        &b"AMQP\x00\x01\x00\x00"[..],
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"AMQP\x01\x01\x00\x0a",
    ] {
        let mut sock = tokio::net::TcpStream::connect(broker.addr).await.expect("connect");
        sock.write_all(header).await.expect("write");
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut got))
            .await
            .expect("closed in time")
            .expect("read");
        assert_eq!(got, b"AMQP\x00\x00\x09\x01", "answer to {header:?}");
    }
}

#[tokio::test]
async fn short_header_then_eof_is_dropped_quietly() {
    let broker = TestBroker::start();
    let mut sock = tokio::net::TcpStream::connect(broker.addr).await.expect("connect");
    sock.write_all(b"AMQ").await.expect("write");
    sock.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut got))
        .await
        .expect("closed");
    // The broker still serves others.
    broker.connect().await.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn silent_client_is_dropped_after_the_handshake_timeout() {
    let broker = TestBroker::start_with(&["--handshake-timeout", "1"], &[]);
    let mut raw = Raw::connect(broker.addr).await;
    // Read connection.start, then say nothing.
    let _ = raw.method().await;
    assert!(raw.closed_within(Duration::from_secs(5)).await, "dropped");
}

#[tokio::test]
async fn oversized_frame_closes_the_connection_with_501() {
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    // A method frame header claiming 4 GiB.
    raw.send_bytes(b"\x01\x00\x01\xff\xff\xff\xf0").await;
    let Method::ConnectionClose(c) = raw.method().await else { panic!("close") };
    assert_eq!(c.reply_code, 501);
    assert!(c.reply_text.contains("exceeds negotiated frame-max 131072"), "{}", c.reply_text);
    raw.send(0, ConnectionCloseOk {}).await;
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    // Others are not disturbed.
    broker.connect().await.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn garbage_method_closes_with_a_syntax_error_and_others_survive() {
    let broker = TestBroker::start();
    let (other, other_ch) = broker.channel().await;
    let mut raw = Raw::open(broker.addr, 0).await;
    // queue.declare with its arguments cut off.
    raw.send_bytes(b"\x01\x00\x01\x00\x00\x00\x04\x00\x32\x00\x0a\xce").await;
    let Method::ConnectionClose(c) = raw.method().await else { panic!("close") };
    assert_eq!(c.reply_code, 502);
    assert!(other_ch.status().connected());
    other.close(200, "bye".into()).await.expect("other connection unharmed");
}

/// As RabbitMQ: channel-max limits how many channels are open, not the channel number.
#[tokio::test]
async fn channel_max_limits_open_channels_not_their_numbers() {
    let broker = TestBroker::start_with(&["--channel-max", "2"], &[]);
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(65535, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok for 65535") };
    raw.send(10, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok for 10") };
    raw.send(11, ChannelOpen::default()).await;
    let Method::ConnectionClose(c) = raw.method().await else { panic!("close") };
    assert_eq!(c.reply_code, 530);
    assert!(
        c.reply_text
            .contains("number of channels opened (2) has reached the negotiated channel_max (2)"),
        "{}",
        c.reply_text
    );
}

/// As RabbitMQ (its FRAME_SIZE_FUDGE): a body frame whose payload is exactly frame-max bytes
/// (8 over the limit in all) is taken; one byte more is a 501 frame error.
#[tokio::test]
async fn a_body_frame_of_frame_max_payload_is_taken_as_rabbitmq_takes_it() {
    use warren_wire::method::{BasicGet, BasicPublish, QueueDeclare};
    let broker = TestBroker::start_with(&["--frame-max", "4096"], &[]);
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok") };
    raw.send(1, QueueDeclare { queue: "fudge".into(), ..Default::default() }).await;
    let Method::QueueDeclareOk(_) = raw.method().await else { panic!("declare-ok") };
    let send_body = |size: usize| {
        let mut out = bytes::BytesMut::new();
        let publish = BasicPublish { routing_key: "fudge".into(), ..Default::default() };
        warren_wire::Frame::method(1, publish).encode(&mut out).expect("encode");
        let header = warren_wire::ContentHeader {
            class_id: 60,
            body_size: size as u64,
            ..Default::default()
        };
        warren_wire::Frame::Header { channel: 1, header: Box::new(header) }
            .encode(&mut out)
            .expect("encode");
        warren_wire::Frame::Body { channel: 1, payload: vec![b'x'; size].into() }
            .encode(&mut out)
            .expect("encode");
        out
    };
    raw.send_bytes(&send_body(4096)).await;
    raw.send(1, BasicGet { queue: "fudge".into(), no_ack: true, ..Default::default() }).await;
    let Method::BasicGetOk(_) = raw.method().await else { panic!("the message was taken") };
    raw.send_bytes(&send_body(4097)).await;
    // The get-ok's content frames come first.
    loop {
        match raw.frame().await.expect("a frame") {
            warren_wire::Frame::Method { method: Method::ConnectionClose(c), .. } => {
                assert_eq!(c.reply_code, 501);
                break;
            }
            warren_wire::Frame::Header { .. } | warren_wire::Frame::Body { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn frame_on_an_unopened_channel_is_a_channel_error() {
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(3, warren_wire::method::BasicQos { prefetch_count: 1, ..Default::default() }).await;
    let Method::ConnectionClose(c) = raw.method().await else { panic!("close") };
    assert_eq!(c.reply_code, 504);
}

#[tokio::test]
async fn heartbeats_are_sent_and_a_silent_peer_is_dropped() {
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 1).await;
    // The server sends heartbeats on an idle connection...
    let f = raw.frame().await.expect("a frame");
    assert_eq!(f, warren_wire::Frame::Heartbeat);
    // ...and, as we send none, drops us after two intervals or so.
    assert!(raw.closed_within(Duration::from_secs(6)).await, "silent peer dropped");
}

#[tokio::test]
async fn heartbeats_keep_a_lapin_connection_alive() {
    let broker = TestBroker::start();
    let uri = format!("{}?heartbeat=1", broker.uri());
    let conn = Connection::connect(&uri, ConnectionProperties::default()).await.expect("connect");
    let ch = conn.create_channel().await.expect("channel");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(conn.status().connected());
    ch.queue_declare("hb".into(), Default::default(), Default::default())
        .await
        .expect("still usable");
    conn.close(200, "bye".into()).await.expect("close");
}

#[tokio::test]
async fn client_close_is_answered_with_close_ok() {
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(
        0,
        ConnectionClose { reply_code: 200, reply_text: "bye".into(), ..Default::default() },
    )
    .await;
    let Method::ConnectionCloseOk(_) = raw.method().await else { panic!("close-ok") };
    // As RabbitMQ: the client closes the socket after close-ok, not the broker (closing
    // first makes clients such as lapin see a reset).
    assert!(
        !raw.closed_within(Duration::from_millis(500)).await,
        "broker left the socket to the client"
    );
}

#[tokio::test]
async fn sigterm_closes_connections_with_320_and_exits_0() {
    let mut broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    let pid = broker.pid();
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
    let Method::ConnectionClose(c) = raw.method().await else { panic!("close") };
    assert_eq!(c.reply_code, 320);
    assert!(c.reply_text.starts_with("CONNECTION_FORCED"), "{}", c.reply_text);
    raw.send(0, ConnectionCloseOk {}).await;
    let status = broker.wait();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn frames_pipelined_behind_connection_open_are_served() {
    // Some clients send channel.open without waiting for open-ok.
    let broker = TestBroker::start();
    let mut raw = Raw::connect(broker.addr).await;
    let _start = raw.method().await;
    raw.send(
        0,
        warren_wire::method::ConnectionStartOk {
            mechanism: "PLAIN".into(),
            response: bytes::Bytes::from_static(b"\0guest\0guest"),
            locale: "en_US".into(),
            ..Default::default()
        },
    )
    .await;
    let Method::ConnectionTune(t) = raw.method().await else { panic!("tune") };
    let mut out = bytes::BytesMut::new();
    for (ch, m) in [
        (
            0,
            warren_wire::Method::from(warren_wire::method::ConnectionTuneOk {
                channel_max: t.channel_max,
                frame_max: t.frame_max,
                heartbeat: 0,
            }),
        ),
        (
            0,
            warren_wire::method::ConnectionOpen { virtual_host: "/".into(), ..Default::default() }
                .into(),
        ),
        (1, ChannelOpen::default().into()),
    ] {
        warren_wire::Frame::method(ch, m).encode(&mut out).expect("encode");
    }
    raw.send_bytes(&out).await;
    let Method::ConnectionOpenOk(_) = raw.method().await else { panic!("open-ok") };
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("channel open-ok") };
}

#[tokio::test]
async fn channel_flow_on_is_acknowledged_and_off_is_not_implemented() {
    let broker = TestBroker::start();
    let mut raw = Raw::open(broker.addr, 0).await;
    raw.send(1, ChannelOpen::default()).await;
    let Method::ChannelOpenOk(_) = raw.method().await else { panic!("open-ok") };
    raw.send(1, warren_wire::method::ChannelFlow { active: true }).await;
    let Method::ChannelFlowOk(ok) = raw.method().await else { panic!("flow-ok") };
    assert!(ok.active);
    // As RabbitMQ: client-initiated flow control is not supported.
    raw.send(1, warren_wire::method::ChannelFlow { active: false }).await;
    let Method::ConnectionClose(c) = raw.method().await else { panic!("close") };
    assert_eq!(c.reply_code, 540);
    assert_eq!((c.class_id, c.method_id), (20, 20));
}
