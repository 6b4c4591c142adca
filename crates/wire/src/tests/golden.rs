//! Golden frames captured from real clients talking to RabbitMQ 3.10.8 (Erlang/OTP 25) through a
//! recording TCP proxy: every byte each side sent, one file per direction.
//!
//! - `pika-*.bin`: pika 1.x (Python). Connect, queue.declare with `x-message-ttl` (int) and
//!   `x-queue-type` (string), exchange.declare (direct), queue.bind, confirm.select,
//!   basic.publish with all 14 properties and a headers table of every type pika can encode
//!   (pika has no float encoder), basic.qos, basic.consume, basic.ack, basic.cancel, a second
//!   publish, basic.get (ok, then empty), queue.delete, exchange.delete, channel and connection
//!   close.
//! - `lapin-*.bin`: lapin 4.12 (Rust), the same flow with a topic exchange and a headers table
//!   holding one value of every RabbitMQ type letter but `U` and `L`.
//!
//! The client files keep the 8-byte protocol header the capture began with; the tests check it
//! and skip it. The server files are frames only. Heartbeats were disabled (`heartbeat=0`) so
//! that the captures are deterministic.
//!
//! Each capture is decoded frame by frame and every frame re-encoded: the concatenation must be
//! the capture, byte for byte.

use bytes::{Bytes, BytesMut};

use crate::constants::{FRAME_BODY, FRAME_HEADER, FRAME_METHOD};
use crate::frame::{Frame, decode_frame};
use crate::header::{ProtocolHeader, parse_protocol_header};
use crate::method::Method;
use crate::properties::{BasicProperties, ContentHeader};
use crate::value::{Decimal, FieldTable, FieldValue};

const PIKA_CLIENT: &[u8] = include_bytes!("../../tests/data/golden/pika-client.bin");
const PIKA_SERVER: &[u8] = include_bytes!("../../tests/data/golden/pika-server.bin");
const LAPIN_CLIENT: &[u8] = include_bytes!("../../tests/data/golden/lapin-client.bin");
const LAPIN_SERVER: &[u8] = include_bytes!("../../tests/data/golden/lapin-server.bin");

/// A client capture minus its protocol header, which must be 0-9-1's.
fn client_frames(capture: &[u8]) -> &[u8] {
    assert_eq!(parse_protocol_header(&capture[..8]), ProtocolHeader::Amqp091);
    &capture[8..]
}

/// Decodes every frame of `wire`, checks that each re-encodes to exactly its own bytes and that
/// the whole re-encoding is `wire`, and returns the frames with their original bytes.
fn decode_exact(name: &str, wire: &[u8]) -> Vec<(Frame, Bytes)> {
    let mut buf = BytesMut::from(wire);
    let mut out = BytesMut::new();
    let mut frames = Vec::new();
    let mut offset = 0;
    loop {
        let before = buf.len();
        let frame = match decode_frame(&mut buf, u32::MAX) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => panic!("{name}: frame #{} at offset {offset}: {e}", frames.len()),
        };
        let used = before - buf.len();
        let original = Bytes::copy_from_slice(&wire[offset..offset + used]);
        let start = out.len();
        frame.encode(&mut out).expect("encode");
        assert_eq!(
            &out[start..],
            &original[..],
            "{name}: frame #{} at offset {offset} ({frame:?}) re-encodes differently",
            frames.len()
        );
        frames.push((frame, original));
        offset += used;
    }
    assert!(buf.is_empty(), "{name}: {} bytes of a partial frame", buf.len());
    assert_eq!(&out[..], wire, "{name}: re-encoding differs");
    frames
}

fn methods(frames: &[(Frame, Bytes)]) -> Vec<&'static str> {
    frames
        .iter()
        .map(|(f, _)| match f {
            Frame::Method { method, .. } => method.name(),
            Frame::Header { .. } => "<header>",
            Frame::Body { .. } => "<body>",
            Frame::Heartbeat => "<heartbeat>",
        })
        .collect()
}

fn method(frames: &[(Frame, Bytes)], i: usize) -> &Method {
    match &frames[i].0 {
        Frame::Method { method, .. } => method,
        other => panic!("frame #{i} is not a method: {other:?}"),
    }
}

fn header(frames: &[(Frame, Bytes)], i: usize) -> &ContentHeader {
    match &frames[i].0 {
        Frame::Header { header, .. } => header,
        other => panic!("frame #{i} is not a content header: {other:?}"),
    }
}

fn body(frames: &[(Frame, Bytes)], i: usize) -> &[u8] {
    match &frames[i].0 {
        Frame::Body { payload, .. } => payload,
        other => panic!("frame #{i} is not a body: {other:?}"),
    }
}

fn table<'a>(t: &'a FieldTable, key: &str) -> &'a FieldTable {
    match t.get(key) {
        Some(FieldValue::Table(inner)) => inner,
        other => panic!("{key}: expected a table, got {other:?}"),
    }
}

/// Asserts `key` holds `expected` under type letter `letter`.
fn typed(t: &FieldTable, key: &str, letter: u8, expected: FieldValue) {
    let v = t.get(key).unwrap_or_else(|| panic!("{key} missing"));
    assert_eq!(v.type_letter() as char, letter as char, "{key}: letter");
    assert_eq!(v, &expected, "{key}: value");
}

fn s(text: &str) -> FieldValue {
    FieldValue::from(text)
}

/// Method, header and body frames, counted by their type octet.
fn frame_kinds(frames: &[(Frame, Bytes)]) -> [usize; 3] {
    let count = |kind| frames.iter().filter(|(_, raw)| raw[0] == kind).count();
    [count(FRAME_METHOD), count(FRAME_HEADER), count(FRAME_BODY)]
}

/// The server's connection.start, the same for both captures but for nothing client-specific.
fn check_connection_start(m: &Method) {
    let Method::ConnectionStart(start) = m else { panic!("expected connection.start, got {m:?}") };
    assert_eq!((start.version_major, start.version_minor), (0, 9));
    let props = &start.server_properties;
    assert_eq!(props.get("product").and_then(|v| v.as_str()), Some("RabbitMQ"));
    assert_eq!(props.get("version").and_then(|v| v.as_str()), Some("3.10.8"));
    let caps = table(props, "capabilities");
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
        typed(caps, cap, b't', FieldValue::Bool(true));
    }
    assert_eq!(caps.len(), 9);
    assert_eq!(&start.mechanisms[..], b"AMQPLAIN PLAIN");
    assert_eq!(&start.locales[..], b"en_US");
}

fn check_tune(m: &Method) {
    let Method::ConnectionTune(tune) = m else { panic!("expected connection.tune, got {m:?}") };
    assert_eq!((tune.channel_max, tune.frame_max, tune.heartbeat), (2047, 131072, 60));
}

fn check_queue_arguments(m: &Method, queue: &str) {
    let Method::QueueDeclare(q) = m else { panic!("expected queue.declare, got {m:?}") };
    assert_eq!(q.queue, queue);
    assert!(!q.durable && !q.exclusive && !q.auto_delete && !q.passive && !q.nowait);
    assert_eq!(q.arguments.len(), 2);
    typed(&q.arguments, "x-message-ttl", b'I', FieldValue::I32(60000));
    typed(&q.arguments, "x-queue-type", b'S', s("classic"));
}

#[test]
fn pika_client_frames_reencode_exactly() {
    let wire = client_frames(PIKA_CLIENT);
    let frames = decode_exact("pika client", wire);
    assert_eq!(frames.len(), 25);
    assert_eq!(frame_kinds(&frames), [21, 2, 2]);
    assert_eq!(
        methods(&frames),
        [
            "connection.start-ok",
            "connection.tune-ok",
            "connection.open",
            "channel.open",
            "queue.declare",
            "exchange.declare",
            "queue.bind",
            "confirm.select",
            "basic.publish",
            "<header>",
            "<body>",
            "basic.qos",
            "basic.consume",
            "basic.ack",
            "basic.cancel",
            "basic.publish",
            "<header>",
            "<body>",
            "basic.get",
            "basic.ack",
            "basic.get",
            "queue.delete",
            "exchange.delete",
            "channel.close",
            "connection.close",
        ]
    );

    let Method::ConnectionStartOk(ok) = method(&frames, 0) else { panic!("start-ok") };
    assert_eq!(ok.mechanism, "PLAIN");
    assert_eq!(&ok.response[..], b"\0guest\0guest");
    assert_eq!(ok.locale, "en_US");
    let props = &ok.client_properties;
    assert_eq!(props.get("product").and_then(|v| v.as_str()), Some("Pika Python Client Library"));
    assert_eq!(props.get("connection_name").and_then(|v| v.as_str()), Some("golden-pika"));
    typed(table(props, "capabilities"), "publisher_confirms", b't', FieldValue::Bool(true));

    let Method::ConnectionTuneOk(tune) = method(&frames, 1) else { panic!("tune-ok") };
    assert_eq!((tune.channel_max, tune.frame_max, tune.heartbeat), (2047, 131072, 0));
    check_queue_arguments(method(&frames, 4), "golden.q");

    let Method::BasicPublish(publish) = method(&frames, 8) else { panic!("publish") };
    assert_eq!((&*publish.exchange, &*publish.routing_key), ("golden.x", "golden.rk"));
    let h = header(&frames, 9);
    assert_eq!((h.class_id, h.weight, h.body_size), (60, 0, 17));
    // All 14 property flags: 0xFFFC.
    assert_eq!(&frames[9].1[19..21], b"\xff\xfc");
    let p = &h.properties;
    assert_eq!(
        p,
        &BasicProperties {
            headers: p.headers.clone(),
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            delivery_mode: Some(2),
            priority: Some(5),
            correlation_id: Some("corr-1".into()),
            reply_to: Some("reply.q".into()),
            expiration: Some("60000".into()),
            message_id: Some("msg-1".into()),
            timestamp: Some(1_700_000_000),
            kind: Some("golden.type".into()),
            user_id: Some("guest".into()),
            app_id: Some("golden-app".into()),
            cluster_id: Some("cluster-1".into()),
        }
    );
    let headers = p.headers.as_ref().expect("headers");
    let keys: Vec<&str> = headers.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        ["str", "small", "large", "bool", "nested", "list", "bytes", "dec", "when", "none"]
    );
    typed(headers, "str", b'S', s("héllo wörld ✓"));
    typed(headers, "small", b'I', FieldValue::I32(7));
    typed(headers, "large", b'l', FieldValue::I64(1 << 40));
    typed(headers, "bool", b't', FieldValue::Bool(true));
    typed(
        headers,
        "nested",
        b'F',
        FieldValue::Table(FieldTable::new().with("inner", "v").with("n", FieldValue::I32(-3))),
    );
    typed(
        headers,
        "list",
        b'A',
        FieldValue::Array(vec![FieldValue::I32(1), s("two"), FieldValue::Bool(false)]),
    );
    typed(headers, "bytes", b'x', FieldValue::Bytes(Bytes::from_static(b"\x00\x01\xfe\xff")));
    typed(headers, "dec", b'D', FieldValue::Decimal(Decimal { scale: 2, value: 314 }));
    // 2024-01-02T03:04:05Z.
    typed(headers, "when", b'T', FieldValue::Timestamp(1_704_164_645));
    typed(headers, "none", b'V', FieldValue::Void);
    assert_eq!(body(&frames, 10), br#"{"hello":"world"}"#);

    let Method::BasicQos(qos) = method(&frames, 11) else { panic!("qos") };
    assert_eq!((qos.prefetch_size, qos.prefetch_count, qos.global), (0, 10, false));
    let Method::BasicConsume(consume) = method(&frames, 12) else { panic!("consume") };
    assert_eq!(
        (&*consume.queue, &*consume.consumer_tag, consume.no_ack),
        ("golden.q", "golden-ctag", false)
    );
    let Method::BasicAck(ack) = method(&frames, 13) else { panic!("ack") };
    assert_eq!((ack.delivery_tag, ack.multiple), (1, false));
    let Method::BasicGet(get) = method(&frames, 20) else { panic!("get") };
    assert!(get.no_ack);
    let Method::ConnectionClose(close) = method(&frames, 24) else { panic!("close") };
    assert_eq!((close.reply_code, &*close.reply_text), (200, "Normal shutdown"));
}

#[test]
fn pika_server_frames_reencode_exactly() {
    let frames = decode_exact("pika server", PIKA_SERVER);
    assert_eq!(frames.len(), 24);
    assert_eq!(frame_kinds(&frames), [20, 2, 2]);
    assert!(frames.iter().all(|(f, _)| f.channel() <= 1));
    check_connection_start(method(&frames, 0));
    check_tune(method(&frames, 1));
    let Method::QueueDeclareOk(ok) = method(&frames, 4) else { panic!("declare-ok") };
    assert_eq!((&*ok.queue, ok.message_count, ok.consumer_count), ("golden.q", 0, 0));
    // The publisher confirm.
    let Method::BasicAck(confirm) = method(&frames, 8) else { panic!("confirm") };
    assert_eq!((confirm.delivery_tag, confirm.multiple), (1, false));
    let Method::BasicDeliver(deliver) = method(&frames, 11) else { panic!("deliver") };
    assert_eq!(
        (
            &*deliver.consumer_tag,
            deliver.delivery_tag,
            deliver.redelivered,
            &*deliver.exchange,
            &*deliver.routing_key
        ),
        ("golden-ctag", 1, false, "golden.x", "golden.rk")
    );
    // RabbitMQ relays the publisher's content header byte for byte.
    let published = decode_exact("pika client", client_frames(PIKA_CLIENT));
    assert_eq!(frames[12].1, published[9].1);
    assert_eq!(header(&frames, 12), header(&published, 9));
    assert_eq!(body(&frames, 13), br#"{"hello":"world"}"#);
    let Method::BasicGetOk(get) = method(&frames, 16) else { panic!("get-ok") };
    assert_eq!(
        (get.delivery_tag, &*get.exchange, &*get.routing_key, get.message_count),
        (2, "", "golden.q", 0)
    );
    assert_eq!(header(&frames, 17).properties.content_type.as_deref(), Some("text/plain"));
    assert!(matches!(method(&frames, 19), Method::BasicGetEmpty(_)));
    assert!(matches!(method(&frames, 23), Method::ConnectionCloseOk(_)));
}

#[test]
fn lapin_client_frames_reencode_exactly() {
    let wire = client_frames(LAPIN_CLIENT);
    let frames = decode_exact("lapin client", wire);
    assert_eq!(frames.len(), 25);
    assert_eq!(frame_kinds(&frames), [21, 2, 2]);
    assert_eq!(
        methods(&frames),
        [
            "connection.start-ok",
            "connection.tune-ok",
            "connection.open",
            "channel.open",
            "queue.declare",
            "exchange.declare",
            "queue.bind",
            "confirm.select",
            "basic.qos",
            "basic.publish",
            "<header>",
            "<body>",
            "basic.consume",
            "basic.ack",
            "basic.cancel",
            "basic.publish",
            "<header>",
            "<body>",
            "basic.get",
            "basic.ack",
            "basic.get",
            "queue.delete",
            "exchange.delete",
            "channel.close",
            "connection.close",
        ]
    );
    let Method::ConnectionStartOk(ok) = method(&frames, 0) else { panic!("start-ok") };
    let props = &ok.client_properties;
    assert_eq!(props.get("product").and_then(|v| v.as_str()), Some("lapin"));
    assert_eq!(props.get("connection_name").and_then(|v| v.as_str()), Some("golden-lapin"));
    typed(table(props, "capabilities"), "publisher_confirms", b't', FieldValue::Bool(true));
    check_queue_arguments(method(&frames, 4), "golden.lq");
    let Method::ExchangeDeclare(x) = method(&frames, 5) else { panic!("exchange.declare") };
    assert_eq!((&*x.exchange, &*x.kind), ("golden.lx", "topic"));

    let h = header(&frames, 10);
    assert_eq!((h.class_id, h.body_size), (60, 16));
    assert_eq!(&frames[10].1[19..21], b"\xff\xfc");
    let p = &h.properties;
    assert_eq!(p.kind.as_deref(), Some("golden.type"));
    assert_eq!(p.cluster_id.as_deref(), Some("cluster-l"));
    assert_eq!(p.timestamp, Some(1_700_000_000));
    let headers = p.headers.as_ref().expect("headers");
    // lapin keeps tables in a BTreeMap: keys arrive sorted.
    let keys: Vec<&str> = headers.iter().map(|(k, _)| k).collect();
    assert!(keys.is_sorted(), "{keys:?}");
    assert_eq!(headers.len(), 17);
    typed(headers, "bool", b't', FieldValue::Bool(true));
    typed(headers, "i8", b'b', FieldValue::I8(-8));
    typed(headers, "u8", b'B', FieldValue::U8(200));
    typed(headers, "i16", b's', FieldValue::I16(-1600));
    typed(headers, "u16", b'u', FieldValue::U16(60000));
    typed(headers, "i32", b'I', FieldValue::I32(-320_000));
    typed(headers, "u32", b'i', FieldValue::U32(4_000_000_000));
    typed(headers, "i64", b'l', FieldValue::I64(-64_000_000_000));
    typed(headers, "f32", b'f', FieldValue::F32(1.5));
    typed(headers, "f64", b'd', FieldValue::F64(-2.25));
    typed(headers, "dec", b'D', FieldValue::Decimal(Decimal { scale: 2, value: 314 }));
    typed(headers, "str", b'S', s("grüße €"));
    typed(
        headers,
        "arr",
        b'A',
        FieldValue::Array(vec![FieldValue::I32(1), s("two"), FieldValue::Bool(false)]),
    );
    typed(headers, "ts", b'T', FieldValue::Timestamp(1_700_000_000));
    typed(headers, "tbl", b'F', FieldValue::Table(FieldTable::new().with("inner", "v")));
    typed(headers, "bytes", b'x', FieldValue::Bytes(Bytes::from_static(b"\x00\x01\xfe\xff")));
    typed(headers, "void", b'V', FieldValue::Void);
    assert_eq!(body(&frames, 11), br#"{"from":"lapin"}"#);
    let Method::ChannelClose(close) = method(&frames, 23) else { panic!("channel.close") };
    assert_eq!((close.reply_code, &*close.reply_text), (200, "bye"));
}

#[test]
fn lapin_server_frames_reencode_exactly() {
    let frames = decode_exact("lapin server", LAPIN_SERVER);
    assert_eq!(frames.len(), 24);
    assert_eq!(frame_kinds(&frames), [20, 2, 2]);
    check_connection_start(method(&frames, 0));
    check_tune(method(&frames, 1));
    let Method::BasicConsumeOk(ok) = method(&frames, 10) else { panic!("consume-ok") };
    assert_eq!(ok.consumer_tag, "golden-lctag");
    let Method::BasicDeliver(deliver) = method(&frames, 11) else { panic!("deliver") };
    assert_eq!((&*deliver.exchange, &*deliver.routing_key), ("golden.lx", "golden.key"));
    let published = decode_exact("lapin client", client_frames(LAPIN_CLIENT));
    assert_eq!(frames[12].1, published[10].1);
    assert_eq!(body(&frames, 13), br#"{"from":"lapin"}"#);
    assert!(matches!(method(&frames, 19), Method::BasicGetEmpty(_)));
}

/// Both clients' publishes, re-encoded with [`crate::encode_content`], give the captured bytes.
#[test]
fn encode_content_matches_captured_publishes() {
    for (name, capture, at) in [("pika", PIKA_CLIENT, 8), ("lapin", LAPIN_CLIENT, 9)] {
        let frames = decode_exact(name, client_frames(capture));
        let h = header(&frames, at + 1);
        let mut out = BytesMut::new();
        crate::encode_content(
            &mut out,
            1,
            method(&frames, at),
            &h.properties,
            body(&frames, at + 2),
            131072,
        )
        .expect("encode_content");
        let captured: Vec<u8> =
            frames[at..at + 3].iter().flat_map(|(_, raw)| raw.iter().copied()).collect();
        assert_eq!(&out[..], &captured[..], "{name}");
    }
}
