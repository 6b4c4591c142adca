//! Policies, as RabbitMQ's, set with `warren ctl` (as `rabbitmqctl`): they apply to queues and
//! exchanges whose names match, at once (existing ones too), the highest priority winning;
//! limits and TTLs take the lower of policy and argument, arguments win the rest; policies are
//! durable and validated.

use std::time::Duration;

use lapin::options::{
    BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

use crate::TestBroker;
use crate::support::{channel, ctl, message_count, publish_props, table, text, within};

fn set_policy(broker: &TestBroker, args: &[&str]) {
    let (ok, out, err) = ctl(broker, &[&["set_policy"], args].concat());
    assert!(ok, "set_policy {args:?}: {out} {err}");
}

async fn declare(ch: &Channel, name: &str, args: FieldTable) {
    within(ch.queue_declare(name.into(), QueueDeclareOptions::default(), args))
        .await
        .expect("queue.declare");
}

async fn fill(ch: &Channel, queue: &str, n: usize) {
    for i in 0..n {
        publish_props(ch, "", queue, &format!("m{i}"), BasicProperties::default()).await;
    }
}

#[tokio::test]
async fn a_policy_applies_to_matching_queues_at_once_and_goes_when_cleared() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    declare(&ch, "pol.old", FieldTable::default()).await;
    declare(&ch, "other", FieldTable::default()).await;
    fill(&ch, "pol.old", 5).await;
    set_policy(&broker, &["--apply-to", "queues", "limit", "^pol\\.", r#"{"max-length":2}"#]);
    assert_eq!(message_count(&ch, "pol.old").await, 2, "an existing queue is cut to the new limit");
    declare(&ch, "pol.new", FieldTable::default()).await;
    fill(&ch, "pol.new", 5).await;
    fill(&ch, "other", 5).await;
    assert_eq!((message_count(&ch, "pol.new").await, message_count(&ch, "other").await), (2, 5));
    let (ok, listed, _) = ctl(&broker, &["list_policies"]);
    assert!(ok && listed.contains("limit\t^pol\\.\tqueues\t{\"max-length\":2}\t0"), "{listed}");
    // A higher priority one wins.
    set_policy(&broker, &["--priority", "5", "bigger", "^pol\\.new$", r#"{"max-length":4}"#]);
    fill(&ch, "pol.new", 5).await;
    assert_eq!(message_count(&ch, "pol.new").await, 4);
    assert!(ctl(&broker, &["clear_policy", "bigger"]).0);
    assert_eq!(message_count(&ch, "pol.new").await, 2, "the lower-priority policy applies again");
    assert!(ctl(&broker, &["clear_policy", "limit"]).0);
    // Back to the lower policy when the higher goes (cut to 2), then no limit at all.
    fill(&ch, "pol.new", 3).await;
    assert_eq!(message_count(&ch, "pol.new").await, 5, "no limit any more");
    let (ok, _, err) = ctl(&broker, &["clear_policy", "limit"]);
    assert!(!ok && err.contains("404"), "{err}");
}

#[tokio::test]
async fn limits_take_the_lower_value_and_arguments_win_the_rest() {
    let broker = TestBroker::start();
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    for q in ["dead-arg", "dead-policy"] {
        declare(&ch, q, FieldTable::default()).await;
    }
    set_policy(
        &broker,
        &[
            "p",
            "^prec",
            r#"{"max-length":10,"dead-letter-exchange":"","dead-letter-routing-key":"dead-policy"}"#,
        ],
    );
    let args = table(&[
        ("x-max-length", AMQPValue::LongInt(3)),
        ("x-dead-letter-exchange", text("")),
        ("x-dead-letter-routing-key", text("dead-arg")),
    ]);
    declare(&ch, "prec.arg", args).await;
    fill(&ch, "prec.arg", 6).await;
    assert_eq!(message_count(&ch, "prec.arg").await, 3, "the argument's lower limit");
    // The argument's dead-letter target wins: the three pushed out went there.
    assert_eq!(message_count(&ch, "dead-arg").await, 3);
    declare(&ch, "prec.none", FieldTable::default()).await;
    fill(&ch, "prec.none", 1).await;
    let m = within(ch.basic_get("prec.none".into(), BasicGetOptions::default()))
        .await
        .expect("get")
        .expect("message");
    within(ch.basic_reject(m.delivery.delivery_tag, BasicRejectOptions { requeue: false }))
        .await
        .expect("reject");
    let mut dead = 0;
    for _ in 0..100 {
        dead = message_count(&ch, "dead-policy").await;
        if dead == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dead, 1, "dead-lettered through the policy's exchange");
}

#[tokio::test]
async fn ttl_and_alternate_exchange_by_policy_and_policies_survive_a_restart() {
    let mut broker = TestBroker::start();
    set_policy(&broker, &["--apply-to", "queues", "ttl", "^short", r#"{"message-ttl":100}"#]);
    set_policy(
        &broker,
        &["--apply-to", "exchanges", "ae", "^routed$", r#"{"alternate-exchange":"catch"}"#],
    );
    {
        let conn = broker.connect().await;
        let ch = channel(&conn).await;
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        within(ch.queue_declare("short".into(), durable, FieldTable::default()))
            .await
            .expect("declare");
        fill(&ch, "short", 2).await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(message_count(&ch, "short").await, 0, "expired by the policy's TTL");
    }
    broker.restart();
    let (ok, listed, _) = ctl(&broker, &["list_policies"]);
    assert!(ok && listed.contains("ttl") && listed.contains("ae"), "{listed}");
    let conn = broker.connect().await;
    let ch = channel(&conn).await;
    fill(&ch, "short", 1).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(message_count(&ch, "short").await, 0, "the policy still applies after the restart");
    for (name, kind) in [("routed", ExchangeKind::Direct), ("catch", ExchangeKind::Fanout)] {
        within(ch.exchange_declare(
            name.into(),
            kind,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("exchange.declare");
    }
    declare(&ch, "caught", FieldTable::default()).await;
    let bind = ch.queue_bind(
        "caught".into(),
        "catch".into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    );
    within(bind).await.expect("bind");
    let confirm = within(ch.basic_publish(
        "routed".into(),
        "nowhere".into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    ))
    .await
    .expect("publish");
    assert!(within(confirm).await.expect("confirm").is_ack());
    assert_eq!(message_count(&ch, "caught").await, 1, "unroutable went to the policy's alternate");
}

#[tokio::test]
async fn bad_policies_are_refused_with_rabbitmqs_validation_errors() {
    let broker = TestBroker::start();
    for (args, expect) in [
        (vec!["p", ".*", r#"{"nonsense":1}"#], "not recognised"),
        (vec!["p", ".*", r#"{"max-length":"ten"}"#], "max-length"),
        (vec!["p", ".*", "not json"], "JSON"),
        (vec!["p", "(", r#"{"max-length":1}"#], "regular expression"),
        (vec!["--apply-to", "streamz", "p", ".*", r#"{"max-length":1}"#], "apply-to"),
    ] {
        let (ok, _, err) = ctl(&broker, &[&["set_policy"], &args[..]].concat());
        assert!(!ok && err.contains("406") && err.contains(expect), "{args:?}: {err}");
    }
    let (ok, _, err) = ctl(&broker, &["-p", "nope", "list_policies"]);
    assert!(!ok && err.contains("404"), "{err}");
}
