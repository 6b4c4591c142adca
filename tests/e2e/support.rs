//! Helpers the end-to-end modules share: bounded waits, reply codes of refusals, confirm-mode
//! channels, publishing with confirms, field tables.

use std::future::Future;
use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeBindOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

/// How long any single broker operation may take in a test.
pub const LIMIT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test if it takes more than 10 s.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("warren answered within 10 s")
}

/// The reply code of a channel.close / connection.close lapin reports.
pub fn code(err: &lapin::Error) -> Option<u16> {
    match err.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// Awaits an operation that must fail; returns the reply code it failed with.
pub async fn refused<T: std::fmt::Debug>(f: impl Future<Output = lapin::Result<T>>) -> u16 {
    let err = within(f).await.expect_err("the broker refuses");
    code(&err).unwrap_or_else(|| panic!("not a protocol error: {err}"))
}

/// A channel in confirm mode, so that a publish is known to be routed once confirmed.
pub async fn channel(conn: &Connection) -> Channel {
    let ch = within(conn.create_channel()).await.expect("channel.open");
    within(ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
    ch
}

/// Publishes and waits for the broker's ack.
pub async fn publish_props(
    ch: &Channel,
    exchange: &str,
    key: &str,
    body: &str,
    p: BasicProperties,
) {
    let confirm = within(ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        p,
    ))
    .await
    .expect("basic.publish");
    let confirmation = within(confirm).await.expect("confirm");
    assert!(confirmation.is_ack(), "{confirmation:?}");
}

pub async fn bind_exchange(ch: &Channel, destination: &str, source: &str, key: &str) {
    within(ch.exchange_bind(
        destination.into(),
        source.into(),
        key.into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.bind");
}

pub fn table(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert((*k).into(), v.clone());
    }
    t
}

pub fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// A queue's ready messages, by a passive declare.
pub async fn message_count(ch: &Channel, queue: &str) -> u32 {
    let passive = lapin::options::QueueDeclareOptions { passive: true, ..Default::default() };
    within(ch.queue_declare(queue.into(), passive, FieldTable::default()))
        .await
        .expect("passive declare")
        .message_count()
}

/// Runs `warren ctl ARGS` against `broker`; (success, stdout, stderr).
pub fn ctl(broker: &crate::TestBroker, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--data-dir")
        .arg(&broker.data_dir)
        .arg("ctl")
        .args(args)
        .output()
        .expect("run warren ctl");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.success(), text(out.stdout), text(out.stderr))
}

/// Declare arguments of a queue of type `kind` (`x-queue-type`), with `more`.
pub fn typed(kind: &str, more: &[(&str, AMQPValue)]) -> FieldTable {
    let mut t = table(more);
    t.insert("x-queue-type".into(), text(kind));
    t
}

/// queue.declare options of a durable queue.
pub fn durable() -> lapin::options::QueueDeclareOptions {
    lapin::options::QueueDeclareOptions { durable: true, ..Default::default() }
}

/// Declares a new durable queue `name` (deleting one of that name first).
pub async fn fresh(ch: &Channel, name: &str, args: FieldTable) {
    let delete = lapin::options::QueueDeleteOptions::default();
    let _ = within(ch.queue_delete(name.into(), delete)).await;
    within(ch.queue_declare(name.into(), durable(), args)).await.expect("queue.declare");
}

/// Deletes queues (whatever they hold), on a new channel.
pub async fn delete_queues(conn: &Connection, names: &[&str]) {
    let ch = within(conn.create_channel()).await.expect("channel");
    for n in names {
        let _ = ch.queue_delete((*n).into(), lapin::options::QueueDeleteOptions::default()).await;
    }
}
