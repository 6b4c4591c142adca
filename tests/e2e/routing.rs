//! Routing as RabbitMQ does it: direct, fanout, topic (`*` and `#`, the tutorial's examples),
//! headers (`x-match` all, any, all-with-x, any-with-x), one copy per queue however many
//! bindings match, and exchange-to-exchange chains, cycles included.

use lapin::options::{
    BasicGetOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::TestBroker;
use crate::support::*;

/// A broker and a channel in confirm mode on it, so that a publish is known to be routed and
/// enqueued once confirmed.
async fn setup() -> (TestBroker, lapin::Connection, Channel) {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    within(ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirm.select");
    (broker, conn, ch)
}

async fn publish(ch: &Channel, exchange: &str, key: &str, body: &str) {
    publish_props(ch, exchange, key, body, BasicProperties::default()).await
}

/// Every message ready in `queue`, taken with basic.get (no-ack).
async fn drain(ch: &Channel, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    while let Some(m) = within(ch.basic_get(queue.into(), BasicGetOptions { no_ack: true }))
        .await
        .expect("basic.get")
    {
        out.push(String::from_utf8_lossy(&m.delivery.data).into_owned());
    }
    out
}

async fn exchange(ch: &Channel, name: &str, kind: ExchangeKind) {
    within(ch.exchange_declare(
        name.into(),
        kind,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("exchange.declare");
}

async fn queue(ch: &Channel, name: &str) {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("queue.declare");
}

async fn bind_args(ch: &Channel, queue: &str, exchange: &str, key: &str, args: FieldTable) {
    within(ch.queue_bind(
        queue.into(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        args,
    ))
    .await
    .unwrap_or_else(|e| panic!("queue.bind {queue} to {exchange} with {key:?}: {e}"));
}

async fn bind(ch: &Channel, queue: &str, exchange: &str, key: &str) {
    bind_args(ch, queue, exchange, key, FieldTable::default()).await
}

/// Publishes each key (as body too) to `exchange`, then checks what each queue received, in
/// order. `expect` lists, per queue, the keys it must have got.
async fn check_routes(ch: &Channel, exchange: &str, keys: &[&str], expect: &[(&str, &[&str])]) {
    for key in keys {
        publish(ch, exchange, key, key).await;
    }
    for (q, want) in expect {
        assert_eq!(drain(ch, q).await, *want, "queue {q}");
    }
}

#[tokio::test]
async fn direct_routes_on_the_exact_key() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "d", ExchangeKind::Direct).await;
    for q in ["qa", "qb", "qa2", "qempty"] {
        queue(&ch, q).await;
    }
    bind(&ch, "qa", "d", "a").await;
    bind(&ch, "qa2", "d", "a").await;
    bind(&ch, "qb", "d", "b").await;
    bind(&ch, "qb", "d", "a.b").await;
    bind(&ch, "qempty", "d", "").await;
    check_routes(
        &ch,
        "d",
        &["a", "b", "A", "a.b", "a.*", "", "c", "a "],
        &[("qa", &["a"]), ("qa2", &["a"]), ("qb", &["b", "a.b"]), ("qempty", &[""])],
    )
    .await;
}

#[tokio::test]
async fn fanout_routes_to_every_bound_queue_whatever_the_key() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "f", ExchangeKind::Fanout).await;
    for q in ["f1", "f2", "f3", "unbound"] {
        queue(&ch, q).await;
    }
    bind(&ch, "f1", "f", "").await;
    bind(&ch, "f2", "f", "some.key").await;
    bind(&ch, "f3", "f", "#").await;
    let all: &[&str] = &["", "x", "some.key", "#"];
    check_routes(&ch, "f", all, &[("f1", all), ("f2", all), ("f3", all), ("unbound", &[])]).await;
}

/// The examples of RabbitMQ's topic tutorial (tutorial five).
#[tokio::test]
async fn topic_tutorial_examples() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "topic_logs", ExchangeKind::Topic).await;
    queue(&ch, "Q1").await;
    queue(&ch, "Q2").await;
    bind(&ch, "Q1", "topic_logs", "*.orange.*").await;
    bind(&ch, "Q2", "topic_logs", "*.*.rabbit").await;
    bind(&ch, "Q2", "topic_logs", "lazy.#").await;
    check_routes(
        &ch,
        "topic_logs",
        &[
            "quick.orange.rabbit",
            "lazy.orange.elephant",
            "quick.orange.fox",
            "lazy.brown.fox",
            "lazy.pink.rabbit",
            "quick.brown.fox",
            "orange",
            "quick.orange.male.rabbit",
            "lazy.orange.male.rabbit",
        ],
        &[
            ("Q1", &["quick.orange.rabbit", "lazy.orange.elephant", "quick.orange.fox"]),
            (
                "Q2",
                &[
                    "quick.orange.rabbit",
                    "lazy.orange.elephant",
                    "lazy.brown.fox",
                    // Matches both of Q2's bindings, delivered once.
                    "lazy.pink.rabbit",
                    "lazy.orange.male.rabbit",
                ],
            ),
        ],
    )
    .await;
}

#[tokio::test]
async fn topic_hash_alone_and_the_empty_key() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "t", ExchangeKind::Topic).await;
    for q in ["hash", "empty", "star", "star_star"] {
        queue(&ch, q).await;
    }
    bind(&ch, "hash", "t", "#").await;
    bind(&ch, "empty", "t", "").await;
    bind(&ch, "star", "t", "*").await;
    bind(&ch, "star_star", "t", "*.*").await;
    check_routes(
        &ch,
        "t",
        &["", "a", "a.b", "a.b.c", "#", "*"],
        &[
            // `#` matches every key, the empty one included.
            ("hash", &["", "a", "a.b", "a.b.c", "#", "*"]),
            // The empty binding key matches only the empty routing key.
            ("empty", &[""]),
            // `*` is exactly one word: the empty key has none.
            ("star", &["a", "#", "*"]),
            ("star_star", &["a.b"]),
        ],
    )
    .await;
}

#[tokio::test]
async fn topic_hash_matches_zero_or_more_words_anywhere() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "t", ExchangeKind::Topic).await;
    for q in ["prefix", "suffix", "middle", "star_hash", "literal"] {
        queue(&ch, q).await;
    }
    bind(&ch, "prefix", "t", "a.#").await;
    bind(&ch, "suffix", "t", "#.z").await;
    bind(&ch, "middle", "t", "a.#.z").await;
    bind(&ch, "star_hash", "t", "*.#").await;
    bind(&ch, "literal", "t", "a.b").await;
    check_routes(
        &ch,
        "t",
        &["a", "a.z", "a.b.z", "z", "b.a", "a.b", "ab", "a..z"],
        &[
            ("prefix", &["a", "a.z", "a.b.z", "a.b", "a..z"]),
            ("suffix", &["a.z", "a.b.z", "z", "a..z"]),
            ("middle", &["a.z", "a.b.z", "a..z"]),
            // One word at least.
            ("star_hash", &["a", "a.z", "a.b.z", "z", "b.a", "a.b", "ab", "a..z"]),
            ("literal", &["a.b"]),
        ],
    )
    .await;
}

/// Publishes `body` to `exchange` with these headers.
async fn publish_headers(ch: &Channel, exchange: &str, body: &str, headers: FieldTable) {
    publish_props(ch, exchange, "ignored", body, BasicProperties::default().with_headers(headers))
        .await
}

#[tokio::test]
async fn headers_exchange_x_match_modes() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "h", ExchangeKind::Headers).await;
    for q in ["all", "any", "default", "all_with_x", "any_with_x", "only_x"] {
        queue(&ch, q).await;
    }
    bind_args(
        &ch,
        "all",
        "h",
        "",
        table(&[("x-match", text("all")), ("format", text("pdf")), ("type", text("report"))]),
    )
    .await;
    bind_args(
        &ch,
        "any",
        "h",
        "",
        table(&[("x-match", text("any")), ("format", text("pdf")), ("type", text("log"))]),
    )
    .await;
    // No x-match: all.
    bind_args(&ch, "default", "h", "", table(&[("format", text("pdf")), ("type", text("report"))]))
        .await;
    bind_args(
        &ch,
        "all_with_x",
        "h",
        "",
        table(&[("x-match", text("all-with-x")), ("x-tenant", text("a")), ("format", text("pdf"))]),
    )
    .await;
    bind_args(
        &ch,
        "any_with_x",
        "h",
        "",
        table(&[("x-match", text("any-with-x")), ("x-tenant", text("a")), ("format", text("zip"))]),
    )
    .await;
    // With plain all, x- arguments are ignored: nothing left to test, everything matches.
    bind_args(&ch, "only_x", "h", "", table(&[("x-match", text("all")), ("x-tenant", text("a"))]))
        .await;

    publish_headers(
        &ch,
        "h",
        "pdf report",
        table(&[("format", text("pdf")), ("type", text("report"))]),
    )
    .await;
    publish_headers(&ch, "h", "pdf log", table(&[("format", text("pdf")), ("type", text("log"))]))
        .await;
    publish_headers(&ch, "h", "zip", table(&[("format", text("zip"))])).await;
    publish_headers(
        &ch,
        "h",
        "tenant a pdf",
        table(&[("x-tenant", text("a")), ("format", text("pdf"))]),
    )
    .await;
    publish_headers(
        &ch,
        "h",
        "tenant b pdf report",
        table(&[("x-tenant", text("b")), ("format", text("pdf")), ("type", text("report"))]),
    )
    .await;
    publish_headers(&ch, "h", "no headers", FieldTable::default()).await;
    publish(&ch, "h", "k", "no headers property").await;
    publish_headers(
        &ch,
        "h",
        "wrong value type",
        table(&[("format", AMQPValue::LongInt(1)), ("type", text("log"))]),
    )
    .await;

    assert_eq!(drain(&ch, "all").await, ["pdf report", "tenant b pdf report"]);
    assert_eq!(drain(&ch, "default").await, ["pdf report", "tenant b pdf report"]);
    assert_eq!(
        drain(&ch, "any").await,
        ["pdf report", "pdf log", "tenant a pdf", "tenant b pdf report", "wrong value type"]
    );
    assert_eq!(drain(&ch, "all_with_x").await, ["tenant a pdf"]);
    assert_eq!(drain(&ch, "any_with_x").await, ["zip", "tenant a pdf"]);
    assert_eq!(
        drain(&ch, "only_x").await,
        [
            "pdf report",
            "pdf log",
            "zip",
            "tenant a pdf",
            "tenant b pdf report",
            "no headers",
            "no headers property",
            "wrong value type"
        ]
    );
}

#[tokio::test]
async fn headers_void_argument_asks_for_presence_and_values_must_be_equal() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "h", ExchangeKind::Headers).await;
    queue(&ch, "present").await;
    queue(&ch, "number").await;
    bind_args(
        &ch,
        "present",
        "h",
        "",
        table(&[("x-match", text("all")), ("flag", AMQPValue::Void)]),
    )
    .await;
    bind_args(
        &ch,
        "number",
        "h",
        "",
        table(&[("x-match", text("all")), ("n", AMQPValue::LongInt(7))]),
    )
    .await;
    publish_headers(&ch, "h", "flag text", table(&[("flag", text("x"))])).await;
    publish_headers(&ch, "h", "flag bool", table(&[("flag", AMQPValue::Boolean(false))])).await;
    publish_headers(&ch, "h", "no flag", table(&[("other", text("x"))])).await;
    publish_headers(&ch, "h", "n 7", table(&[("n", AMQPValue::LongInt(7))])).await;
    publish_headers(&ch, "h", "n 8", table(&[("n", AMQPValue::LongInt(8))])).await;
    publish_headers(&ch, "h", "n text", table(&[("n", text("7"))])).await;
    assert_eq!(drain(&ch, "present").await, ["flag text", "flag bool"]);
    assert_eq!(drain(&ch, "number").await, ["n 7"]);
}

#[tokio::test]
async fn a_message_reaches_each_matching_queue_once() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "t", ExchangeKind::Topic).await;
    exchange(&ch, "up", ExchangeKind::Fanout).await;
    for q in ["q1", "q2", "q3"] {
        queue(&ch, q).await;
    }
    // q1: several bindings that all match.
    bind(&ch, "q1", "t", "a.*").await;
    bind(&ch, "q1", "t", "*.b").await;
    bind(&ch, "q1", "t", "a.b").await;
    bind(&ch, "q1", "t", "#").await;
    // q2: once directly, once through an exchange-to-exchange binding.
    bind(&ch, "q2", "t", "a.b").await;
    bind_exchange(&ch, "up", "t", "#").await;
    bind(&ch, "q2", "up", "").await;
    // q3: only through the other exchange.
    bind(&ch, "q3", "up", "").await;
    publish(&ch, "t", "a.b", "m").await;
    for q in ["q1", "q2", "q3"] {
        assert_eq!(drain(&ch, q).await, ["m"], "{q}");
    }
    // Same with the default exchange and a direct exchange bound twice with the same key.
    exchange(&ch, "d", ExchangeKind::Direct).await;
    bind(&ch, "q1", "d", "k").await;
    bind_args(&ch, "q1", "d", "k", table(&[("x-other", text("args"))])).await;
    publish(&ch, "d", "k", "once").await;
    assert_eq!(drain(&ch, "q1").await, ["once"]);
}

#[tokio::test]
async fn exchange_chains_route_and_cycles_terminate() {
    let (_broker, _conn, ch) = setup().await;
    // A chain: a (topic) -> b (direct) -> c (fanout) -> queue.
    exchange(&ch, "a", ExchangeKind::Topic).await;
    exchange(&ch, "b", ExchangeKind::Direct).await;
    exchange(&ch, "c", ExchangeKind::Fanout).await;
    queue(&ch, "end").await;
    bind_exchange(&ch, "b", "a", "log.*").await;
    bind_exchange(&ch, "c", "b", "log.error").await;
    bind(&ch, "end", "c", "").await;
    // Each hop matches the original routing key.
    check_routes(&ch, "a", &["log.error", "log.info", "other"], &[("end", &["log.error"])]).await;

    // A cycle: x -> y -> z -> x, with queues hanging off each.
    for e in ["x", "y", "z"] {
        exchange(&ch, e, ExchangeKind::Fanout).await;
        queue(&ch, &format!("q{e}")).await;
        bind(&ch, &format!("q{e}"), e, "").await;
    }
    bind_exchange(&ch, "y", "x", "").await;
    bind_exchange(&ch, "z", "y", "").await;
    bind_exchange(&ch, "x", "z", "").await;
    // Self-loop too.
    bind_exchange(&ch, "y", "y", "").await;
    for start in ["x", "y", "z"] {
        publish(&ch, start, "k", start).await;
    }
    for q in ["qx", "qy", "qz"] {
        assert_eq!(drain(&ch, q).await, ["x", "y", "z"], "{q}");
    }
}

#[tokio::test]
async fn routing_does_not_depend_on_binding_order_or_unrelated_bindings() {
    let (_broker, _conn, ch) = setup().await;
    exchange(&ch, "t", ExchangeKind::Topic).await;
    queue(&ch, "q").await;
    queue(&ch, "noise").await;
    for i in 0..50 {
        bind(&ch, "noise", "t", &format!("noise.{i}.#")).await;
    }
    bind(&ch, "q", "t", "*.*.target").await;
    check_routes(
        &ch,
        "t",
        &["noise.3.target", "x.y.target", "x.target", "noise.3"],
        &[("q", &["noise.3.target", "x.y.target"]), ("noise", &["noise.3.target", "noise.3"])],
    )
    .await;
}
