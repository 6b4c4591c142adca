//! Exchanges as RabbitMQ has them: the default exchange, the `amq.*` exchanges, declare (passive,
//! durable, auto-delete, internal, arguments) and its equivalence rules, reserved names, unknown
//! types, delete (if-unused, missing), exchange-to-exchange bindings and auto-delete.

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    ExchangeUnbindOptions, QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};

use crate::TestBroker;
use crate::support::*;

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str) {
    publish_props(ch, exchange, key, body, BasicProperties::default()).await
}

/// Every message ready in `queue`, taken with basic.get (no-ack).
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) =
        within(ch.basic_get(queue.into(), lapin::options::BasicGetOptions { no_ack: true }))
            .await
            .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

async fn declare_queue(ch: &Channel, name: &str) {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("queue.declare");
}

async fn declare(ch: &Channel, name: &str, kind: ExchangeKind, o: ExchangeDeclareOptions) {
    within(ch.exchange_declare(name.into(), kind, o, FieldTable::default()))
        .await
        .expect("exchange.declare");
}

async fn bind_queue(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    within(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("queue.bind");
}

fn passive() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions { passive: true, ..Default::default() }
}

/// Whether `name` exists, by a passive declare on a channel of its own.
async fn exchange_exists(conn: &Connection, name: &str) -> bool {
    let ch = within(conn.create_channel()).await.expect("channel.open");
    match within(ch.exchange_declare(
        name.into(),
        ExchangeKind::Direct,
        passive(),
        FieldTable::default(),
    ))
    .await
    {
        Ok(()) => {
            within(ch.close(200, "done".into())).await.expect("channel.close");
            true
        }
        Err(e) => {
            assert_eq!(code(&e), Some(404), "{e}");
            false
        }
    }
}

/// Waits (briefly) until `name` no longer exists.
async fn wait_exchange_gone(conn: &Connection, name: &str) {
    for _ in 0..100 {
        if !exchange_exists(conn, name).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("exchange '{name}' still exists");
}

/// After a channel error: the failed channel is closed, and the connection still serves a new
/// channel.
async fn assert_channel_closed_connection_alive(conn: &Connection, failed: &Channel) {
    assert!(!failed.status().connected(), "the channel was closed");
    assert!(conn.status().connected(), "the connection survives");
    let ch = within(conn.create_channel()).await.expect("a new channel");
    within(ch.queue_declare(
        "".into(),
        QueueDeclareOptions { exclusive: true, ..Default::default() },
        FieldTable::default(),
    ))
    .await
    .expect("the new channel works");
}

#[tokio::test]
async fn default_exchange_routes_by_queue_name() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare_queue(&ch, "dq1").await;
    declare_queue(&ch, "dq2").await;
    publish(&ch, "", "dq1", "one").await;
    publish(&ch, "", "dq2", "two").await;
    // No queue of that name: dropped, and the channel lives on.
    publish(&ch, "", "nosuchqueue", "lost").await;
    assert_eq!(drain(&ch, "dq1").await, ["one"]);
    assert_eq!(drain(&ch, "dq2").await, ["two"]);
}

#[tokio::test]
async fn default_exchange_refuses_declare_delete_and_bind_with_403() {
    let broker = TestBroker::start();
    let (conn, setup) = broker.channel().await;
    declare_queue(&setup, "q").await;
    declare(&setup, "x", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;

    let ch = channel(&conn).await;
    let c = refused(ch.exchange_declare(
        "".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 403, "declare ''");
    assert_channel_closed_connection_alive(&conn, &ch).await;

    let ch = channel(&conn).await;
    let c = refused(ch.exchange_declare(
        "".into(),
        ExchangeKind::Direct,
        passive(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 403, "passive declare ''");
    assert_channel_closed_connection_alive(&conn, &ch).await;

    let ch = channel(&conn).await;
    let c = refused(ch.exchange_delete("".into(), ExchangeDeleteOptions::default())).await;
    assert_eq!(c, 403, "delete ''");
    assert_channel_closed_connection_alive(&conn, &ch).await;

    let ch = channel(&conn).await;
    let c = refused(ch.queue_bind(
        "q".into(),
        "".into(),
        "q".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 403, "queue.bind to ''");
    assert_channel_closed_connection_alive(&conn, &ch).await;

    let ch = channel(&conn).await;
    let c =
        refused(ch.queue_unbind("q".into(), "".into(), "q".into(), FieldTable::default())).await;
    assert_eq!(c, 403, "queue.unbind from ''");
    assert_channel_closed_connection_alive(&conn, &ch).await;

    for (destination, source) in [("x", ""), ("", "x")] {
        let ch = channel(&conn).await;
        let c = refused(ch.exchange_bind(
            destination.into(),
            source.into(),
            "k".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ))
        .await;
        assert_eq!(c, 403, "exchange.bind {destination:?} <- {source:?}");
        assert_channel_closed_connection_alive(&conn, &ch).await;
    }

    // It still routes by queue name.
    let ch = channel(&conn).await;
    publish(&ch, "", "q", "still").await;
    assert_eq!(drain(&ch, "q").await, ["still"]);
}

#[tokio::test]
async fn the_amq_exchanges_exist() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    for (name, kind) in [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ] {
        within(ch.exchange_declare(name.into(), kind.clone(), passive(), FieldTable::default()))
            .await
            .unwrap_or_else(|e| panic!("passive declare {name}: {e}"));
        // Redeclaring one as it is (durable, of its type) is allowed: the reserved prefix only
        // bars creating new exchanges.
        within(ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions { durable: true, ..Default::default() },
            FieldTable::default(),
        ))
        .await
        .unwrap_or_else(|e| panic!("redeclare {name}: {e}"));
    }
    // They route.
    let ch = channel(&conn).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "amq.direct", "k").await;
    publish(&ch, "amq.direct", "k", "m").await;
    assert_eq!(drain(&ch, "q").await, ["m"]);
}

#[tokio::test]
async fn the_amq_exchanges_cannot_be_deleted() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let c =
        refused(ch.exchange_delete("amq.direct".into(), ExchangeDeleteOptions::default())).await;
    assert_eq!(c, 403);
    assert_channel_closed_connection_alive(&conn, &ch).await;
    assert!(exchange_exists(&conn, "amq.direct").await);
}

#[tokio::test]
async fn passive_declare_of_a_missing_exchange_is_404() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let c = refused(ch.exchange_declare(
        "nosuch".into(),
        ExchangeKind::Direct,
        passive(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 404);
    assert_channel_closed_connection_alive(&conn, &ch).await;
    // The passive declare did not create it.
    assert!(!exchange_exists(&conn, "nosuch").await);
}

#[tokio::test]
async fn declare_with_flags_and_arguments_then_redeclare_the_same() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let opts = ExchangeDeclareOptions {
        durable: true,
        auto_delete: true,
        internal: true,
        ..Default::default()
    };
    let args = table(&[("x-custom", text("v")), ("n", AMQPValue::LongInt(5))]);
    for _ in 0..2 {
        within(ch.exchange_declare("e".into(), ExchangeKind::Topic, opts, args.clone()))
            .await
            .expect("declare and redeclare");
    }
    assert!(exchange_exists(&conn, "e").await);
    // nowait works too, and the channel stays usable.
    within(ch.exchange_declare(
        "e2".into(),
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { nowait: true, ..Default::default() },
        FieldTable::default(),
    ))
    .await
    .expect("nowait declare");
    assert!(exchange_exists(&conn, "e2").await);
}

/// One redeclare that must fail with 406, on a fresh channel; the original stays as it was.
async fn assert_redeclare_406(
    conn: &Connection,
    name: &str,
    kind: ExchangeKind,
    opts: ExchangeDeclareOptions,
) {
    let ch = channel(conn).await;
    let c =
        refused(ch.exchange_declare(name.into(), kind.clone(), opts, FieldTable::default())).await;
    assert_eq!(c, 406, "redeclare {name} as {kind:?} {opts:?}");
    assert_channel_closed_connection_alive(conn, &ch).await;
    assert!(exchange_exists(conn, name).await);
}

#[tokio::test]
async fn redeclare_with_a_different_type_or_flag_is_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(&ch, "plain", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
    assert_redeclare_406(&conn, "plain", ExchangeKind::Fanout, ExchangeDeclareOptions::default())
        .await;
    assert_redeclare_406(
        &conn,
        "plain",
        ExchangeKind::Direct,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
    )
    .await;
    assert_redeclare_406(
        &conn,
        "plain",
        ExchangeKind::Direct,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
    )
    .await;
    assert_redeclare_406(
        &conn,
        "plain",
        ExchangeKind::Direct,
        ExchangeDeclareOptions { internal: true, ..Default::default() },
    )
    .await;
    // And the other way round: a durable exchange redeclared transient.
    declare(
        &ch,
        "durable",
        ExchangeKind::Topic,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
    )
    .await;
    assert_redeclare_406(&conn, "durable", ExchangeKind::Topic, ExchangeDeclareOptions::default())
        .await;
    // A built-in one with another type.
    assert_redeclare_406(
        &conn,
        "amq.direct",
        ExchangeKind::Topic,
        ExchangeDeclareOptions { durable: true, ..Default::default() },
    )
    .await;
}

#[tokio::test]
async fn redeclare_with_a_different_alternate_exchange_is_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    within(ch.exchange_declare(
        "withae".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("alternate-exchange", text("ae1"))]),
    ))
    .await
    .expect("declare");
    let ch = channel(&conn).await;
    let c = refused(ch.exchange_declare(
        "withae".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("alternate-exchange", text("ae2"))]),
    ))
    .await;
    assert_eq!(c, 406);
    assert_channel_closed_connection_alive(&conn, &ch).await;
}

/// RabbitMQ compares only `alternate-exchange` among exchange arguments
/// (`rabbit_exchange:assert_args_equivalence/2`); any other argument may differ on redeclare.
#[tokio::test]
async fn redeclare_with_other_arguments_is_accepted() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    within(ch.exchange_declare(
        "args".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("x-custom", text("one"))]),
    ))
    .await
    .expect("declare");
    within(ch.exchange_declare(
        "args".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        table(&[("x-custom", text("two"))]),
    ))
    .await
    .expect("redeclare with a different x-custom");
    within(ch.exchange_declare(
        "args".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("redeclare without arguments");
    assert!(exchange_exists(&conn, "args").await);
}

#[tokio::test]
async fn new_names_with_the_amq_prefix_are_refused_with_403() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    for name in ["amq.custom", "amq.direct.mine", "amq."] {
        let ch = channel(&conn).await;
        let c = refused(ch.exchange_declare(
            name.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ))
        .await;
        assert_eq!(c, 403, "{name}");
        assert_channel_closed_connection_alive(&conn, &ch).await;
        // Not created; a passive declare of such a name is an ordinary 404.
        assert!(!exchange_exists(&conn, name).await, "{name}");
    }
    // Names merely containing "amq." are fine.
    declare(&ch, "my.amq.x", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
}

#[tokio::test]
async fn unknown_exchange_type_is_a_503_connection_error() {
    let broker = TestBroker::start();
    let (bystander, bystander_ch) = broker.channel().await;
    let (conn, ch) = broker.channel().await;
    let c = refused(ch.exchange_declare(
        "weird".into(),
        ExchangeKind::Custom("x-no-such-type".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 503);
    // The whole connection is gone...
    let c = within(conn.create_channel()).await.map(|_| ());
    assert!(c.is_err(), "the connection was closed");
    // ...the others are not, and nothing was declared.
    assert!(bystander.status().connected());
    assert!(!exchange_exists(&bystander, "weird").await);
    declare_queue(&bystander_ch, "ok").await;
    let fresh = broker.connect().await;
    assert!(!exchange_exists(&fresh, "weird").await);
}

/// RabbitMQ checks the type before anything else (`rabbit_exchange:check_type/1` is the first
/// line of the exchange.declare handler), so an unknown type on the default exchange is 503.
#[tokio::test]
async fn unknown_type_is_checked_before_the_default_exchange() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    let c = refused(ch.exchange_declare(
        "".into(),
        ExchangeKind::Custom("x-no-such-type".into()),
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 503);
}

#[tokio::test]
async fn internal_exchange_refuses_publishes_but_routes_bound_traffic() {
    let broker = TestBroker::start();
    let (conn, setup) = broker.channel().await;
    declare(
        &setup,
        "inner",
        ExchangeKind::Fanout,
        ExchangeDeclareOptions { internal: true, ..Default::default() },
    )
    .await;
    declare(&setup, "front", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
    declare_queue(&setup, "q").await;
    bind_queue(&setup, "q", "inner", "").await;
    bind_exchange(&setup, "inner", "front", "k").await;

    let ch = channel(&conn).await;
    publish(&ch, "front", "k", "via front").await;
    assert_eq!(drain(&ch, "q").await, ["via front"]);

    let confirm = within(ch.basic_publish(
        "inner".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"direct",
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish is asynchronous");
    let err = within(confirm).await.expect_err("channel closed");
    assert_eq!(code(&err), Some(403), "{err}");
    assert_channel_closed_connection_alive(&conn, &ch).await;

    let ch = channel(&conn).await;
    assert!(drain(&ch, "q").await.is_empty(), "nothing got through");
    publish(&ch, "front", "k", "again").await;
    assert_eq!(drain(&ch, "q").await, ["again"]);
}

#[tokio::test]
async fn delete_if_unused_is_refused_while_bound() {
    let broker = TestBroker::start();
    let (conn, setup) = broker.channel().await;
    declare(&setup, "x", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
    declare_queue(&setup, "q").await;
    bind_queue(&setup, "q", "x", "k").await;

    let ch = channel(&conn).await;
    let c = refused(ch.exchange_delete(
        "x".into(),
        ExchangeDeleteOptions { if_unused: true, ..Default::default() },
    ))
    .await;
    assert_eq!(c, 406);
    assert_channel_closed_connection_alive(&conn, &ch).await;
    assert!(exchange_exists(&conn, "x").await);

    // Still routes.
    let ch = channel(&conn).await;
    publish(&ch, "x", "k", "m").await;
    assert_eq!(drain(&ch, "q").await, ["m"]);

    // An exchange bound to another exchange as its source is in use too.
    declare(&ch, "dst", ExchangeKind::Fanout, ExchangeDeclareOptions::default()).await;
    declare(&ch, "src", ExchangeKind::Fanout, ExchangeDeclareOptions::default()).await;
    bind_exchange(&ch, "dst", "src", "").await;
    let c = refused(ch.exchange_delete(
        "src".into(),
        ExchangeDeleteOptions { if_unused: true, ..Default::default() },
    ))
    .await;
    assert_eq!(c, 406);
    assert_channel_closed_connection_alive(&conn, &ch).await;

    // Once unbound it goes.
    let ch = channel(&conn).await;
    within(ch.queue_unbind("q".into(), "x".into(), "k".into(), FieldTable::default()))
        .await
        .expect("unbind");
    within(ch.exchange_delete(
        "x".into(),
        ExchangeDeleteOptions { if_unused: true, ..Default::default() },
    ))
    .await
    .expect("delete unused");
    assert!(!exchange_exists(&conn, "x").await);
    // Without if-unused a bound exchange is deleted along with its bindings.
    within(ch.exchange_delete("src".into(), ExchangeDeleteOptions::default()))
        .await
        .expect("delete");
    assert!(!exchange_exists(&conn, "src").await);
    assert!(exchange_exists(&conn, "dst").await);
}

/// RabbitMQ's if-unused looks only at bindings the exchange is the source of
/// (`rabbit_db_exchange` `conditional_delete`: `rabbit_db_binding:has_for_source`).
#[tokio::test]
async fn delete_if_unused_ignores_bindings_to_the_exchange() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    for name in ["src", "dst"] {
        declare(&ch, name, ExchangeKind::Fanout, ExchangeDeclareOptions::default()).await;
    }
    bind_exchange(&ch, "dst", "src", "").await;
    within(ch.exchange_delete(
        "dst".into(),
        ExchangeDeleteOptions { if_unused: true, ..Default::default() },
    ))
    .await
    .expect("dst has no bindings of its own");
    assert!(!exchange_exists(&conn, "dst").await);
}

#[tokio::test]
async fn deleting_a_missing_exchange_succeeds() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    within(ch.exchange_delete("nosuch".into(), ExchangeDeleteOptions::default()))
        .await
        .expect("delete-ok for a missing exchange");
    within(ch.exchange_delete(
        "nosuch".into(),
        ExchangeDeleteOptions { if_unused: true, ..Default::default() },
    ))
    .await
    .expect("delete-ok for a missing exchange, if-unused");
    assert!(ch.status().connected());
    assert!(!exchange_exists(&conn, "nosuch").await);
}

#[tokio::test]
async fn deleting_an_exchange_drops_its_bindings() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare(&ch, "x", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "x", "k").await;
    within(ch.exchange_delete("x".into(), ExchangeDeleteOptions::default())).await.expect("delete");
    declare(&ch, "x", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
    publish(&ch, "x", "k", "m").await;
    assert!(drain(&ch, "q").await.is_empty(), "the old binding is gone");
}

#[tokio::test]
async fn exchange_to_exchange_bind_and_unbind() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    declare(&ch, "src", ExchangeKind::Direct, ExchangeDeclareOptions::default()).await;
    declare(&ch, "dst", ExchangeKind::Fanout, ExchangeDeclareOptions::default()).await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "dst", "").await;
    bind_exchange(&ch, "dst", "src", "k").await;
    // Binding twice is a no-op.
    bind_exchange(&ch, "dst", "src", "k").await;

    publish(&ch, "src", "k", "matches").await;
    publish(&ch, "src", "other", "does not").await;
    assert_eq!(drain(&ch, "q").await, ["matches"]);

    within(ch.exchange_unbind(
        "dst".into(),
        "src".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.unbind");
    publish(&ch, "src", "k", "after unbind").await;
    assert!(drain(&ch, "q").await.is_empty());
    // The destination still works by itself.
    publish(&ch, "dst", "", "direct to dst").await;
    assert_eq!(drain(&ch, "q").await, ["direct to dst"]);
    // Unbinding again (no such binding) is fine.
    within(ch.exchange_unbind(
        "dst".into(),
        "src".into(),
        "k".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("unbind of a missing binding");
}

#[tokio::test]
async fn exchange_bind_with_a_missing_side_is_404() {
    let broker = TestBroker::start();
    let (conn, setup) = broker.channel().await;
    declare(&setup, "x", ExchangeKind::Fanout, ExchangeDeclareOptions::default()).await;
    for (destination, source) in [("nosuch", "x"), ("x", "nosuch")] {
        let ch = channel(&conn).await;
        let c = refused(ch.exchange_bind(
            destination.into(),
            source.into(),
            "".into(),
            ExchangeBindOptions::default(),
            FieldTable::default(),
        ))
        .await;
        assert_eq!(c, 404, "{destination} <- {source}");
        assert_channel_closed_connection_alive(&conn, &ch).await;
    }
    let ch = channel(&conn).await;
    let c = refused(ch.queue_bind(
        "nosuchqueue".into(),
        "x".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 404);
    assert_channel_closed_connection_alive(&conn, &ch).await;
    let ch = channel(&conn).await;
    declare_queue(&ch, "q").await;
    let c = refused(ch.queue_bind(
        "q".into(),
        "nosuch".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(c, 404);
    assert_channel_closed_connection_alive(&conn, &ch).await;
}

#[tokio::test]
async fn publishing_to_a_missing_exchange_is_404() {
    let broker = TestBroker::start();
    let (conn, _) = broker.channel().await;
    let ch = channel(&conn).await;
    let confirm = within(ch.basic_publish(
        "nosuch".into(),
        "k".into(),
        BasicPublishOptions::default(),
        b"m",
        BasicProperties::default(),
    ))
    .await
    .expect("basic.publish is asynchronous");
    let err = within(confirm).await.expect_err("channel closed");
    assert_eq!(code(&err), Some(404), "{err}");
    assert_channel_closed_connection_alive(&conn, &ch).await;
}

#[tokio::test]
async fn auto_delete_exchange_goes_with_its_last_binding() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    let auto = ExchangeDeclareOptions { auto_delete: true, ..Default::default() };
    declare(&ch, "ad", ExchangeKind::Fanout, auto).await;
    // Never bound yet: it stays.
    assert!(exchange_exists(&conn, "ad").await);
    declare_queue(&ch, "q1").await;
    declare_queue(&ch, "q2").await;
    bind_queue(&ch, "q1", "ad", "").await;
    bind_queue(&ch, "q2", "ad", "").await;
    within(ch.queue_unbind("q1".into(), "ad".into(), "".into(), FieldTable::default()))
        .await
        .expect("unbind q1");
    assert!(exchange_exists(&conn, "ad").await, "one binding left");
    within(ch.queue_unbind("q2".into(), "ad".into(), "".into(), FieldTable::default()))
        .await
        .expect("unbind q2");
    wait_exchange_gone(&conn, "ad").await;

    // Same through an exchange-to-exchange binding it is the source of.
    declare(&ch, "ad2", ExchangeKind::Fanout, auto).await;
    bind_exchange(&ch, "amq.fanout", "ad2", "").await;
    within(ch.exchange_unbind(
        "amq.fanout".into(),
        "ad2".into(),
        "".into(),
        ExchangeUnbindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.unbind");
    wait_exchange_gone(&conn, "ad2").await;
    assert!(exchange_exists(&conn, "amq.fanout").await);
}

#[tokio::test]
async fn auto_delete_exchange_goes_when_its_last_queue_is_deleted() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    declare(
        &ch,
        "ad",
        ExchangeKind::Direct,
        ExchangeDeclareOptions { auto_delete: true, ..Default::default() },
    )
    .await;
    declare_queue(&ch, "q").await;
    bind_queue(&ch, "q", "ad", "a").await;
    bind_queue(&ch, "q", "ad", "b").await;
    within(ch.queue_delete("q".into(), QueueDeleteOptions::default())).await.expect("queue.delete");
    wait_exchange_gone(&conn, "ad").await;
}

async fn declare_with_ae(ch: &Channel, name: &str, kind: ExchangeKind, ae: &str) {
    within(ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        table(&[("alternate-exchange", text(ae))]),
    ))
    .await
    .expect("exchange.declare");
}

/// Publishes with mandatory and confirms; returns whether the message came back.
async fn returned(ch: &Channel, exchange: &str, key: &str, body: &str) -> bool {
    let confirm = within(ch.basic_publish(
        exchange.into(),
        key.into(),
        lapin::options::BasicPublishOptions { mandatory: true, ..Default::default() },
        body.as_bytes(),
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    let confirm = within(confirm).await.expect("confirm");
    assert!(confirm.is_ack());
    confirm.take_message().is_some()
}

/// RabbitMQ's alternate exchanges: what an exchange's bindings route nowhere goes to its
/// `alternate-exchange` (with the same routing key), through a chain of them; mandatory
/// returns a message only when no alternate routes it either; a missing alternate routes
/// nowhere; a cycle of alternates ends.
#[tokio::test]
async fn unroutable_messages_go_to_the_alternate_exchange() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    for q in ["main-q", "ae-q", "ae2-q"] {
        declare_queue(&ch, q).await;
    }
    declare_with_ae(&ch, "main", ExchangeKind::Direct, "ae").await;
    declare_with_ae(&ch, "ae", ExchangeKind::Direct, "ae2").await;
    declare(&ch, "ae2", ExchangeKind::Fanout, ExchangeDeclareOptions::default()).await;
    bind_queue(&ch, "main-q", "main", "k").await;
    bind_queue(&ch, "ae-q", "ae", "to-ae").await;
    bind_queue(&ch, "ae2-q", "ae2", "").await;

    assert!(!returned(&ch, "main", "k", "routed").await);
    assert!(!returned(&ch, "main", "to-ae", "via ae").await, "the alternate routed it");
    assert!(!returned(&ch, "main", "else", "via ae2").await, "the alternate's alternate did");
    assert_eq!(drain(&ch, "main-q").await, ["routed"]);
    assert_eq!(drain(&ch, "ae-q").await, ["via ae"]);
    assert_eq!(drain(&ch, "ae2-q").await, ["via ae2"]);

    // A missing alternate: unroutable, so returned.
    declare_with_ae(&ch, "dangling", ExchangeKind::Direct, "no-such-exchange").await;
    assert!(returned(&ch, "dangling", "k", "lost").await);
    // A cycle of alternates with no bindings ends, unroutable.
    declare_with_ae(&ch, "cyc1", ExchangeKind::Direct, "cyc2").await;
    declare_with_ae(&ch, "cyc2", ExchangeKind::Topic, "cyc1").await;
    assert!(returned(&ch, "cyc1", "k", "circling").await);
}
