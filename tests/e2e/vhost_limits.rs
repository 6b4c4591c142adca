//! Vhost limits, as RabbitMQ's `set_vhost_limits` (with `warren ctl`): `max-connections`
//! refuses connection.open beyond it with 530, `max-queues` refuses new queues with 406, a
//! negative value lifts the limit, and limits survive a restart.

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::TestBroker;
use crate::support::{code, ctl, within};

#[tokio::test]
async fn connections_and_queues_beyond_the_vhost_limits_are_refused() {
    let mut broker = TestBroker::start();
    let (ok, out, err) =
        ctl(&broker, &["set_vhost_limits", r#"{"max-connections":2,"max-queues":3}"#]);
    assert!(ok, "{out} {err}");
    let a = broker.connect().await;
    let _b = broker.connect().await;
    let third = within(Connection::connect(&broker.uri(), ConnectionProperties::default())).await;
    let e = third.expect_err("a third connection is refused");
    assert_eq!(code(&e), Some(530), "{e}");
    let ch = within(a.create_channel()).await.expect("channel");
    for q in ["q1", "q2", "q3"] {
        within(ch.queue_declare(q.into(), QueueDeclareOptions::default(), FieldTable::default()))
            .await
            .expect("within the limit");
    }
    // Redeclaring an existing queue is fine; a fourth is refused.
    within(ch.queue_declare("q1".into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("redeclare");
    let fourth = within(ch.queue_declare(
        "q4".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code(&fourth.expect_err("refused")), Some(406));
    let (ok, listed, _) = ctl(&broker, &["list_vhost_limits"]);
    assert!(ok && listed.contains(r#"{"max-connections":2,"max-queues":3}"#), "{listed}");
    // A connection closing frees its place.
    within(a.close(200, "bye".into())).await.expect("close");
    let _c = broker.connect().await;
    // Durable: still in force after a restart.
    broker.restart();
    let _d = broker.connect().await;
    let _e = broker.connect().await;
    let third = within(Connection::connect(&broker.uri(), ConnectionProperties::default())).await;
    assert_eq!(code(&third.expect_err("still limited")), Some(530));
    assert!(ctl(&broker, &["set_vhost_limits", r#"{"max-connections":-1}"#]).0);
    let _f = broker.connect().await;
    let (ok, _, err) = ctl(&broker, &["set_vhost_limits", r#"{"max-channels":1}"#]);
    assert!(!ok && err.contains("406"), "{err}");
}
