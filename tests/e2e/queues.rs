//! Queues as RabbitMQ has them: server-generated names, passive, durable, exclusive and
//! auto-delete queues, the redeclare equivalence rules, reserved names, declare-ok counts, bind
//! and unbind, purge, delete (if-unused, if-empty), the empty-name shortcut for the last queue
//! declared on a channel, and the queue arguments warren refuses.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, BasicQosOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};

use crate::TestBroker;
use crate::support::*;

/// Publishes through the default exchange (straight to `queue`) and waits for the ack.
async fn send(ch: &Channel, queue: &str, body: &str) {
    let confirm = within(ch.basic_publish(
        "".into(),
        queue.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish");
    let confirmation = within(confirm).await.expect("confirm");
    assert!(confirmation.is_ack(), "{confirmation:?}");
}

/// Publishes to an exchange and waits for the ack.
async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str) {
    let confirm = within(ch.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish");
    let confirmation = within(confirm).await.expect("confirm");
    assert!(confirmation.is_ack(), "{confirmation:?}");
}

/// One message from `queue` with basic.get (no-ack).
async fn get(ch: &Channel, queue: &str) -> Option<String> {
    within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
        .map(|m| String::from_utf8_lossy(&m.delivery.data).into_owned())
}

/// Every message ready in `queue`.
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = get(ch, queue).await {
        out.push(m);
    }
    out
}

async fn declare(ch: &Channel, name: &str, o: QueueDeclareOptions) -> lapin::Queue {
    within(ch.queue_declare(name.into(), o, FieldTable::default()))
        .await
        .unwrap_or_else(|e| panic!("queue.declare {name:?}: {e}"))
}

async fn declare_args(
    ch: &Channel,
    name: &str,
    o: QueueDeclareOptions,
    args: FieldTable,
) -> lapin::Queue {
    within(ch.queue_declare(name.into(), o, args))
        .await
        .unwrap_or_else(|e| panic!("queue.declare {name:?}: {e}"))
}

fn plain() -> QueueDeclareOptions {
    QueueDeclareOptions::default()
}

fn passive() -> QueueDeclareOptions {
    QueueDeclareOptions { passive: true, ..Default::default() }
}

/// After a channel error: the failed channel is closed, and the connection still serves a new
/// channel.
async fn assert_channel_closed_connection_alive(conn: &Connection, failed: &Channel) {
    assert!(!failed.status().connected(), "the channel was closed");
    assert!(conn.status().connected(), "the connection survives");
    let ch = within(conn.create_channel()).await.expect("a new channel");
    declare(&ch, "", QueueDeclareOptions { exclusive: true, ..Default::default() }).await;
}

/// Runs `op` on a fresh channel of `conn`; it must fail with `expected`, and only the channel.
async fn expect_channel_error<T, F, Fut>(conn: &Connection, expected: u16, what: &str, op: F)
where
    T: std::fmt::Debug,
    F: FnOnce(Channel) -> Fut,
    Fut: Future<Output = lapin::Result<T>>,
{
    let ch = within(conn.create_channel()).await.expect("channel.open");
    let c = refused(op(ch.clone())).await;
    assert_eq!(c, expected, "{what}");
    assert_channel_closed_connection_alive(conn, &ch).await;
}

/// Whether queue `name` exists, by a passive declare on a channel of its own (a queue that is
/// exclusive to another connection counts as existing).
async fn queue_exists(conn: &Connection, name: &str) -> bool {
    let ch = within(conn.create_channel()).await.expect("channel.open");
    match within(ch.queue_declare(name.into(), passive(), FieldTable::default())).await {
        Ok(_) => {
            within(ch.close(200, "done".into())).await.expect("channel.close");
            true
        }
        Err(e) if code(&e) == Some(405) => true,
        Err(e) => {
            assert_eq!(code(&e), Some(404), "{e}");
            false
        }
    }
}

/// Waits (briefly) until queue `name` no longer exists.
async fn wait_queue_gone(conn: &Connection, name: &str) {
    for _ in 0..100 {
        if !queue_exists(conn, name).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("queue '{name}' still exists");
}

#[tokio::test]
async fn server_generated_names() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    let a = declare(&ch, "", plain()).await;
    let b = declare(&ch, "", plain()).await;
    for q in [&a, &b] {
        let name = q.name().as_str();
        assert!(name.starts_with("amq.gen-"), "{name}");
        assert_eq!(name.len(), 30, "{name}");
        assert!(
            name["amq.gen-".len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'),
            "{name}"
        );
        assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    }
    assert_ne!(a.name(), b.name());
    // A real queue: it can be found, published to and read from.
    assert!(queue_exists(&conn, a.name().as_str()).await);
    send(&ch, a.name().as_str(), "hello").await;
    assert_eq!(drain(&ch, a.name().as_str()).await, ["hello"]);
    // A passive declare by its name is allowed.
    let again = declare(&ch, a.name().as_str(), passive()).await;
    assert_eq!(again.name(), a.name());
}

#[tokio::test]
async fn passive_declare_finds_a_queue_or_is_404() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare(&ch, "here", plain()).await;
    send(&ch, "here", "1").await;
    let q = declare(&ch, "here", passive()).await;
    assert_eq!(q.name().as_str(), "here");
    assert_eq!(q.message_count(), 1);

    expect_channel_error(&conn, 404, "passive declare of a missing queue", |ch| async move {
        ch.queue_declare("nosuch".into(), passive(), FieldTable::default()).await
    })
    .await;
    // The passive declare did not create it.
    assert!(!queue_exists(&conn, "nosuch").await);
}

/// `queue.declare` is not among the methods whose empty queue name RabbitMQ expands to the last
/// declared queue (`rabbit_channel:expand_shortcuts/2`), so a passive declare of `""` looks up a
/// queue called `""`: 404.
#[tokio::test]
async fn passive_declare_with_an_empty_name_is_404() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "last", plain()).await;
    let c = refused(ch.queue_declare("".into(), passive(), FieldTable::default())).await;
    assert_eq!(c, 404);
    assert_channel_closed_connection_alive(&conn, &ch).await;
}

#[tokio::test]
async fn durable_and_auto_delete_must_match_on_redeclare() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let durable = QueueDeclareOptions { durable: true, ..Default::default() };
    declare(&ch, "d", durable).await;
    declare(&ch, "d", durable).await;
    declare(&ch, "t", plain()).await;
    let auto = QueueDeclareOptions { auto_delete: true, ..Default::default() };
    declare(&ch, "a", auto).await;

    for (name, opts, what) in [
        ("d", plain(), "durable queue redeclared transient"),
        ("t", durable, "transient queue redeclared durable"),
        ("t", auto, "redeclared auto-delete"),
        ("a", plain(), "auto-delete queue redeclared without it"),
    ] {
        expect_channel_error(&conn, 406, what, |ch| async move {
            ch.queue_declare(name.into(), opts, FieldTable::default()).await
        })
        .await;
        assert!(queue_exists(&conn, name).await, "{what}: still there");
    }
}

/// RabbitMQ checks the exclusive owner first and strictly
/// (`rabbit_amqqueue:check_exclusive_access(Q, Owner, strict)` in `assert_equivalence`), so a
/// redeclare that differs in `exclusive` fails with 405 RESOURCE_LOCKED, not 406.
#[tokio::test]
async fn redeclare_with_a_different_exclusive_flag_is_405() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "shared", plain()).await;
    declare(&ch, "mine", QueueDeclareOptions { exclusive: true, ..Default::default() }).await;
    expect_channel_error(&conn, 405, "shared redeclared exclusive", |ch| async move {
        let o = QueueDeclareOptions { exclusive: true, ..Default::default() };
        ch.queue_declare("shared".into(), o, FieldTable::default()).await
    })
    .await;
    expect_channel_error(&conn, 405, "exclusive redeclared shared", |ch| async move {
        ch.queue_declare("mine".into(), plain(), FieldTable::default()).await
    })
    .await;
}

#[tokio::test]
async fn redeclare_with_a_different_queue_argument_is_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let lazy = table(&[("x-queue-mode", text("lazy"))]);
    declare_args(&ch, "q", plain(), lazy.clone()).await;
    // The same arguments are fine.
    declare_args(&ch, "q", plain(), lazy).await;
    expect_channel_error(&conn, 406, "x-queue-mode lazy -> default", |ch| async move {
        let args = table(&[("x-queue-mode", text("default"))]);
        ch.queue_declare("q".into(), plain(), args).await
    })
    .await;
    declare(&ch, "noargs", plain()).await;
    expect_channel_error(&conn, 406, "none -> x-queue-mode lazy", |ch| async move {
        let args = table(&[("x-queue-mode", text("lazy"))]);
        ch.queue_declare("noargs".into(), plain(), args).await
    })
    .await;
}

/// `rabbit_misc:assert_args_equivalence/4` looks up each of the queue type's arguments in both
/// tables: an argument the queue was declared with and the redeclare lacks is `received none
/// but current is ...`, a 406.
#[tokio::test]
async fn redeclare_without_a_queue_argument_is_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare_args(&ch, "q", plain(), table(&[("x-queue-mode", text("lazy"))])).await;
    expect_channel_error(&conn, 406, "x-queue-mode lazy -> none", |ch| async move {
        ch.queue_declare("q".into(), plain(), FieldTable::default()).await
    })
    .await;
}

/// RabbitMQ compares only the queue type's own arguments on redeclare
/// (`rabbit_amqqueue:assert_args_equivalence/2` over `rabbit_queue_type:arguments/2`); others,
/// like an application's `x-custom`, may differ.
#[tokio::test]
async fn redeclare_with_other_arguments_is_accepted() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare_args(&ch, "q", plain(), table(&[("x-custom", text("one"))])).await;
    declare_args(&ch, "q", plain(), table(&[("x-custom", text("two"))])).await;
    declare_args(&ch, "q", plain(), table(&[("other", AMQPValue::LongInt(1))])).await;
    declare(&ch, "q", plain()).await;
}

/// `rabbit_misc:assert_field_equivalence/4` special-cases `x-queue-type`: absent and `classic`
/// are equivalent both ways (rabbitmq-common#341).
#[tokio::test]
async fn absent_x_queue_type_and_classic_are_equivalent() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    let classic = table(&[("x-queue-type", text("classic"))]);
    declare(&ch, "a", plain()).await;
    declare_args(&ch, "a", plain(), classic.clone()).await;
    declare_args(&ch, "b", plain(), classic).await;
    declare(&ch, "b", plain()).await;
}

#[tokio::test]
async fn amq_prefix_is_refused_with_403() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    for name in ["amq.custom", "amq.direct", "amq."] {
        expect_channel_error(&conn, 403, name, |ch| async move {
            ch.queue_declare(name.into(), plain(), FieldTable::default()).await
        })
        .await;
        assert!(!queue_exists(&conn, name).await, "{name} not created");
    }
}

/// `rabbit_channel` runs `check_name('queue', Name)` on every non-empty name of a non-passive
/// queue.declare, before looking the queue up: `amq.gen-...` names are refused too, even for a
/// queue the server generated (only a passive declare may name it).
#[tokio::test]
async fn amq_gen_names_cannot_be_declared_by_clients() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let generated = declare(&ch, "", plain()).await;
    let name = generated.name().to_string();
    expect_channel_error(&conn, 403, "amq.gen-mine", |ch| async move {
        ch.queue_declare("amq.gen-mine".into(), plain(), FieldTable::default()).await
    })
    .await;
    expect_channel_error(&conn, 403, "redeclare a generated name", |ch| async move {
        ch.queue_declare(name.as_str().into(), plain(), FieldTable::default()).await
    })
    .await;
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection() {
    let broker = TestBroker::start();
    let (owner, _) = broker.channel().await;
    let och = channel(&owner).await;
    let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
    declare(&och, "ex", exclusive).await;
    send(&och, "ex", "kept").await;
    within(och.queue_bind(
        "ex".into(),
        "amq.direct".into(),
        "ex".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("the owner binds");

    let (other, _) = broker.channel().await;
    expect_channel_error(&other, 405, "declare exclusive", |ch| async move {
        ch.queue_declare("ex".into(), exclusive, FieldTable::default()).await
    })
    .await;
    expect_channel_error(&other, 405, "declare", |ch| async move {
        ch.queue_declare("ex".into(), plain(), FieldTable::default()).await
    })
    .await;
    expect_channel_error(&other, 405, "passive declare", |ch| async move {
        ch.queue_declare("ex".into(), passive(), FieldTable::default()).await
    })
    .await;
    expect_channel_error(&other, 405, "consume", |ch| async move {
        ch.basic_consume(
            "ex".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    expect_channel_error(&other, 405, "get", |ch| async move {
        ch.basic_get("ex".into(), BasicGetOptions::default()).await
    })
    .await;
    expect_channel_error(&other, 405, "bind", |ch| async move {
        ch.queue_bind(
            "ex".into(),
            "amq.fanout".into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
    expect_channel_error(&other, 405, "unbind", |ch| async move {
        ch.queue_unbind("ex".into(), "amq.direct".into(), "ex".into(), FieldTable::default()).await
    })
    .await;
    expect_channel_error(&other, 405, "purge", |ch| async move {
        ch.queue_purge("ex".into(), QueuePurgeOptions::default()).await
    })
    .await;
    expect_channel_error(&other, 405, "delete", |ch| async move {
        ch.queue_delete("ex".into(), QueueDeleteOptions::default()).await
    })
    .await;

    // Others may still publish to it.
    let pch = channel(&other).await;
    publish(&pch, "amq.direct", "ex", "from other").await;
    // The owner was not disturbed and its queue is intact.
    assert_eq!(drain(&och, "ex").await, ["kept", "from other"]);
    let again = declare(&och, "ex", exclusive).await;
    assert_eq!(again.message_count(), 0);
}

#[tokio::test]
async fn exclusive_queue_is_deleted_with_its_connection() {
    let broker = TestBroker::start();
    let (owner, och) = broker.channel().await;
    let exclusive = QueueDeclareOptions { exclusive: true, ..Default::default() };
    declare(&och, "ex", exclusive).await;
    let generated = declare(&och, "", exclusive).await;
    let (other, _) = broker.channel().await;
    assert!(queue_exists(&other, "ex").await);

    within(owner.close(200, "bye".into())).await.expect("connection.close");
    wait_queue_gone(&other, "ex").await;
    wait_queue_gone(&other, generated.name().as_str()).await;
    // The name is free again, for anyone.
    let och = channel(&other).await;
    declare(&och, "ex", plain()).await;
}

#[tokio::test]
async fn auto_delete_queue_goes_after_its_last_consumer() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let auto = QueueDeclareOptions { auto_delete: true, ..Default::default() };
    declare(&ch, "ad", auto).await;
    // No consumer yet: it stays, through publishes and gets.
    let pch = channel(&conn).await;
    send(&pch, "ad", "m").await;
    assert_eq!(drain(&pch, "ad").await, ["m"]);
    assert!(queue_exists(&conn, "ad").await);

    let c1 = within(ch.basic_consume(
        "ad".into(),
        "c1".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume c1");
    let c2 = within(ch.basic_consume(
        "ad".into(),
        "c2".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume c2");
    within(ch.basic_cancel(c1.tag(), BasicCancelOptions::default())).await.expect("cancel c1");
    assert!(queue_exists(&conn, "ad").await, "one consumer left");
    within(ch.basic_cancel(c2.tag(), BasicCancelOptions::default())).await.expect("cancel c2");
    wait_queue_gone(&conn, "ad").await;

    // Closing the consumer's channel counts as cancelling.
    declare(&pch, "ad2", auto).await;
    let cch = within(conn.create_channel()).await.expect("channel");
    let _c = within(cch.basic_consume(
        "ad2".into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    assert!(queue_exists(&conn, "ad2").await);
    within(cch.close(200, "bye".into())).await.expect("channel.close");
    wait_queue_gone(&conn, "ad2").await;
}

#[tokio::test]
async fn declare_ok_counts_ready_messages_and_consumers() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    let q = declare(&ch, "counted", plain()).await;
    assert_eq!((q.message_count(), q.consumer_count()), (0, 0));
    for i in 0..3 {
        send(&ch, "counted", &i.to_string()).await;
    }
    let q = declare(&ch, "counted", plain()).await;
    assert_eq!((q.message_count(), q.consumer_count()), (3, 0));

    // A consumer with prefetch 1 holds one message unacked: two stay ready.
    let cch = within(conn.create_channel()).await.expect("channel");
    within(cch.basic_qos(1, BasicQosOptions::default())).await.expect("qos");
    let mut consumer = within(cch.basic_consume(
        "counted".into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    let first = within(consumer.next()).await.expect("a delivery").expect("delivery ok");
    assert_eq!(first.data, b"0");
    let q = declare(&ch, "counted", plain()).await;
    assert_eq!((q.message_count(), q.consumer_count()), (2, 1));
    let q = declare(&ch, "counted", passive()).await;
    assert_eq!((q.message_count(), q.consumer_count()), (2, 1));
}

#[tokio::test]
async fn bind_and_unbind_with_arguments() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare(&ch, "q", plain()).await;
    let args = table(&[("x-custom", text("a"))]);
    within(ch.queue_bind(
        "q".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        args.clone(),
    ))
    .await
    .expect("bind with arguments");
    publish(&ch, "amq.direct", "k", "1").await;
    assert_eq!(drain(&ch, "q").await, ["1"]);

    // Arguments are part of a binding's identity: unbinding with others removes nothing.
    within(ch.queue_unbind("q".into(), "amq.direct".into(), "k".into(), FieldTable::default()))
        .await
        .expect("unbind of a binding that does not exist");
    publish(&ch, "amq.direct", "k", "2").await;
    assert_eq!(drain(&ch, "q").await, ["2"]);

    within(ch.queue_unbind("q".into(), "amq.direct".into(), "k".into(), args))
        .await
        .expect("unbind");
    publish(&ch, "amq.direct", "k", "3").await;
    assert!(drain(&ch, "q").await.is_empty());

    // Headers bindings: the arguments are the match.
    let hargs = table(&[("x-match", text("all")), ("kind", text("x"))]);
    within(ch.queue_bind(
        "q".into(),
        "amq.headers".into(),
        "".into(),
        QueueBindOptions::default(),
        hargs.clone(),
    ))
    .await
    .expect("bind to amq.headers");
    let props = BasicProperties::default().with_headers(table(&[("kind", text("x"))]));
    let confirm = within(ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"h",
        props.clone(),
    ))
    .await
    .expect("publish");
    within(confirm).await.expect("confirm");
    assert_eq!(drain(&ch, "q").await, ["h"]);
    within(ch.queue_unbind("q".into(), "amq.headers".into(), "".into(), hargs))
        .await
        .expect("unbind from amq.headers");
    let confirm = within(ch.basic_publish(
        "amq.headers".into(),
        "".into(),
        BasicPublishOptions::default(),
        b"h2",
        props,
    ))
    .await
    .expect("publish");
    within(confirm).await.expect("confirm");
    assert!(drain(&ch, "q").await.is_empty());
}

/// An unbind whose queue or exchange does not exist is a no-op in RabbitMQ
/// (`rabbit_db_binding:delete` answers ok for missing resources: `absent_errs_only` with Mnesia,
/// `_Errs -> ok` with Khepri).
#[tokio::test]
async fn unbind_with_a_missing_queue_or_exchange_is_ok() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    declare(&ch, "q", plain()).await;
    within(ch.queue_unbind("q".into(), "nosuchexchange".into(), "k".into(), FieldTable::default()))
        .await
        .expect("missing exchange");
    within(ch.queue_unbind(
        "nosuchqueue".into(),
        "amq.direct".into(),
        "k".into(),
        FieldTable::default(),
    ))
    .await
    .expect("missing queue");
}

#[tokio::test]
async fn purge_removes_and_counts_ready_messages_only() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare(&ch, "p", plain()).await;
    for i in 0..3 {
        send(&ch, "p", &i.to_string()).await;
    }
    // One is taken with a manual ack and left unacknowledged: not ready, not purged.
    let gch = within(conn.create_channel()).await.expect("channel");
    let held = within(gch.basic_get("p".into(), BasicGetOptions { no_ack: false }))
        .await
        .expect("basic.get")
        .expect("a message");
    assert_eq!(held.delivery.data, b"0");
    let n = within(ch.queue_purge("p".into(), QueuePurgeOptions::default())).await.expect("purge");
    assert_eq!(n, 2);
    assert!(drain(&ch, "p").await.is_empty());
    let n = within(ch.queue_purge("p".into(), QueuePurgeOptions::default())).await.expect("purge");
    assert_eq!(n, 0);
    expect_channel_error(&conn, 404, "purge a missing queue", |ch| async move {
        ch.queue_purge("nosuch".into(), QueuePurgeOptions::default()).await
    })
    .await;
}

#[tokio::test]
async fn delete_if_unused_if_empty_and_the_message_count() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;

    // if-unused: refused while a consumer is there.
    declare(&ch, "used", plain()).await;
    let cch = within(conn.create_channel()).await.expect("channel");
    let _consumer = within(cch.basic_consume(
        "used".into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    expect_channel_error(&conn, 406, "delete if-unused", |ch| async move {
        let o = QueueDeleteOptions { if_unused: true, ..Default::default() };
        ch.queue_delete("used".into(), o).await
    })
    .await;
    assert!(queue_exists(&conn, "used").await);

    // if-empty: refused while messages are ready; if-unused does not mind messages.
    declare(&ch, "full", plain()).await;
    send(&ch, "full", "a").await;
    send(&ch, "full", "b").await;
    expect_channel_error(&conn, 406, "delete if-empty", |ch| async move {
        let o = QueueDeleteOptions { if_empty: true, ..Default::default() };
        ch.queue_delete("full".into(), o).await
    })
    .await;
    assert!(queue_exists(&conn, "full").await);
    let n =
        within(ch.queue_delete(
            "full".into(),
            QueueDeleteOptions { if_unused: true, ..Default::default() },
        ))
        .await
        .expect("delete if-unused with messages");
    assert_eq!(n, 2, "delete-ok counts the messages");
    assert!(!queue_exists(&conn, "full").await);

    // Empty and unused: both conditions hold.
    declare(&ch, "idle", plain()).await;
    let n = within(ch.queue_delete(
        "idle".into(),
        QueueDeleteOptions { if_unused: true, if_empty: true, ..Default::default() },
    ))
    .await
    .expect("delete");
    assert_eq!(n, 0);

    // A missing queue: delete-ok with 0.
    let n = within(ch.queue_delete("nosuch".into(), QueueDeleteOptions::default()))
        .await
        .expect("delete of a missing queue");
    assert_eq!(n, 0);

    // Without conditions a queue in use goes, and its consumer is cancelled.
    let n = within(ch.queue_delete("used".into(), QueueDeleteOptions::default()))
        .await
        .expect("delete");
    assert_eq!(n, 0);
    assert!(!queue_exists(&conn, "used").await);
}

#[tokio::test]
async fn empty_queue_name_means_the_last_queue_declared_on_the_channel() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare(&ch, "first", plain()).await;
    declare(&ch, "second", plain()).await;

    // bind
    within(ch.queue_bind(
        "".into(),
        "amq.direct".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind ''");
    publish(&ch, "amq.direct", "k", "routed").await;
    // get
    assert_eq!(get(&ch, "").await.as_deref(), Some("routed"));
    assert_eq!(get(&ch, "first").await, None);
    // unbind
    within(ch.queue_unbind("".into(), "amq.direct".into(), "k".into(), FieldTable::default()))
        .await
        .expect("unbind ''");
    publish(&ch, "amq.direct", "k", "unrouted").await;
    assert_eq!(get(&ch, "second").await, None);
    // purge
    send(&ch, "second", "x").await;
    let n =
        within(ch.queue_purge("".into(), QueuePurgeOptions::default())).await.expect("purge ''");
    assert_eq!(n, 1);
    // consume
    let mut consumer = within(ch.basic_consume(
        "".into(),
        "".into(),
        BasicConsumeOptions { no_ack: true, ..Default::default() },
        FieldTable::default(),
    ))
    .await
    .expect("consume ''");
    send(&ch, "second", "to the consumer").await;
    let d = within(consumer.next()).await.expect("a delivery").expect("delivery ok");
    assert_eq!(d.data, b"to the consumer");
    assert_eq!(d.routing_key.as_str(), "second");
    within(ch.basic_cancel(consumer.tag(), BasicCancelOptions::default())).await.expect("cancel");
    // A passive declare makes a queue the last one too; delete acts on it.
    declare(&ch, "first", passive()).await;
    send(&ch, "first", "f").await;
    let n =
        within(ch.queue_delete("".into(), QueueDeleteOptions::default())).await.expect("delete ''");
    assert_eq!(n, 1);
    assert!(!queue_exists(&conn, "first").await);
    assert!(queue_exists(&conn, "second").await);

    // Server-named queues work the same way.
    let generated = declare(&ch, "", plain()).await;
    send(&ch, generated.name().as_str(), "g").await;
    assert_eq!(get(&ch, "").await.as_deref(), Some("g"));

    // A channel that declared nothing has no last queue: 404.
    expect_channel_error(&conn, 404, "get '' on a fresh channel", |ch| async move {
        ch.basic_get("".into(), BasicGetOptions::default()).await
    })
    .await;
    expect_channel_error(&conn, 404, "bind '' on a fresh channel", |ch| async move {
        ch.queue_bind(
            "".into(),
            "amq.direct".into(),
            "k".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
    })
    .await;
}

/// `rabbit_channel:expand_routing_key_shortcut/3`: on queue.bind (and unbind) with an empty queue
/// name and an empty routing key, the routing key becomes the last declared queue's name.
#[tokio::test]
async fn bind_with_empty_queue_and_key_uses_the_queue_name_as_key() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare(&ch, "named", plain()).await;
    within(ch.queue_bind(
        "".into(),
        "amq.direct".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind '' ''");
    publish(&ch, "amq.direct", "named", "by name").await;
    publish(&ch, "amq.direct", "", "by empty key").await;
    assert_eq!(drain(&ch, "named").await, ["by name"]);
    within(ch.queue_unbind("".into(), "amq.direct".into(), "".into(), FieldTable::default()))
        .await
        .expect("unbind '' ''");
    publish(&ch, "amq.direct", "named", "after unbind").await;
    assert!(drain(&ch, "named").await.is_empty());
}

#[tokio::test]
async fn unimplemented_queue_arguments_are_a_540_connection_error() {
    let broker = TestBroker::start();
    let (bystander, bystander_ch) = broker.channel().await;
    for (arg, value) in [("x-queue-type", text("other")), ("x-queue-type", text("kafka"))] {
        let (conn, ch) = broker.channel().await;
        let args = table(&[(arg, value)]);
        let c = refused(ch.queue_declare("withargs".into(), plain(), args)).await;
        assert_eq!(c, 540, "{arg}");
        assert!(within(conn.create_channel()).await.is_err(), "{arg}: the connection was closed");
        // Other connections are unharmed, and nothing was declared.
        assert!(bystander.status().connected(), "{arg}");
        assert!(!queue_exists(&bystander, "withargs").await, "{arg}");
    }
    declare(&bystander_ch, "still-fine", plain()).await;
}

#[tokio::test]
async fn x_queue_type_classic_is_accepted() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    let classic = table(&[("x-queue-type", text("classic"))]);
    declare_args(&ch, "cq", plain(), classic.clone()).await;
    declare_args(&ch, "cq", plain(), classic).await;
    send(&ch, "cq", "m").await;
    assert_eq!(drain(&ch, "cq").await, ["m"]);
    let generated =
        declare_args(&ch, "", plain(), table(&[("x-queue-type", text("classic"))])).await;
    assert!(generated.name().as_str().starts_with("amq.gen-"));
}
