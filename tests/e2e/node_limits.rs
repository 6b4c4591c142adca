//! Limits on connections, channels and consumers, as RabbitMQ's: the node's `connection_max`,
//! `channel_max_per_node` and `consumer_max_per_channel` (flags), and each user's
//! `max-connections` / `max-channels` (`warren ctl set_user_limits`, durable). Each refusal is
//! 530 NOT_ALLOWED and disturbs no other connection.

use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::TestBroker;
use crate::support::{code, ctl, within};

async fn refused_connection(broker: &TestBroker) -> u16 {
    let c = within(Connection::connect(&broker.uri(), ConnectionProperties::default())).await;
    code(&c.expect_err("refused")).unwrap_or(0)
}

#[tokio::test]
async fn the_node_limits_connections_channels_and_consumers_per_channel() {
    let broker = TestBroker::start_with(
        &[
            "--connection-max",
            "2",
            "--channel-max-per-node",
            "3",
            "--consumer-max-per-channel",
            "2",
        ],
        &[],
    );
    let a = broker.connect().await;
    let b = broker.connect().await;
    assert_eq!(refused_connection(&broker).await, 530);
    let ch = within(a.create_channel()).await.expect("channel 1");
    let _ch2 = within(a.create_channel()).await.expect("channel 2");
    let _ch3 = within(b.create_channel()).await.expect("channel 3, on another connection");
    let e = within(b.create_channel()).await.expect_err("a fourth channel on the node");
    assert_eq!(code(&e), Some(530), "{e}");
    // The refusal closed b only: a is untouched and counts as before.
    assert!(a.status().connected());
    ch.queue_declare("q".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    // Held: lapin cancels a consumer it drops.
    let mut held = Vec::new();
    for tag in ["c1", "c2"] {
        let c = within(ch.basic_consume(
            "q".into(),
            tag.into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("within the consumer limit");
        held.push(c);
    }
    let third = within(ch.basic_consume(
        "q".into(),
        "c3".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await;
    assert_eq!(code(&third.expect_err("a third consumer")), Some(530));
    // b's place is free again: a new connection is let in.
    let _c = broker.connect().await;
}

#[tokio::test]
async fn user_limits_refuse_connections_and_channels_and_survive_a_restart() {
    let mut broker = TestBroker::start();
    let (ok, out, err) =
        ctl(&broker, &["set_user_limits", "guest", r#"{"max-connections":1,"max-channels":2}"#]);
    assert!(ok, "{out} {err}");
    let a = broker.connect().await;
    assert_eq!(refused_connection(&broker).await, 530);
    let _one = within(a.create_channel()).await.expect("channel 1");
    let _two = within(a.create_channel()).await.expect("channel 2");
    let e = within(a.create_channel()).await.expect_err("a third channel of the user");
    assert_eq!(code(&e), Some(530), "{e}");
    let (ok, listed, _) = ctl(&broker, &["list_user_limits", "--user", "guest"]);
    assert!(ok && listed.contains(r#""max-channels":2"#), "{listed}");
    broker.restart();
    let _a = broker.connect().await;
    assert_eq!(refused_connection(&broker).await, 530, "durable");
    // Clearing one limit keeps the other; unknown users and limits are refused.
    assert!(ctl(&broker, &["clear_user_limits", "guest", "max-connections"]).0);
    let _b = broker.connect().await;
    let (_, listed, _) = ctl(&broker, &["list_user_limits", "--user", "guest"]);
    assert!(listed.contains(r#"{"max-channels":2}"#), "{listed}");
    assert!(!ctl(&broker, &["set_user_limits", "nobody", r#"{"max-channels":1}"#]).0);
    let (ok, _, err) = ctl(&broker, &["set_user_limits", "guest", r#"{"max-queues":1}"#]);
    assert!(!ok && err.contains("406"), "{err}");
}
