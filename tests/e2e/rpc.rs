//! Direct reply-to (`amq.rabbitmq.reply-to`): RPC replies without a reply queue, as RabbitMQ.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::BasicProperties;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use crate::TestBroker;

#[tokio::test]
async fn direct_reply_to_round_trip() {
    let broker = TestBroker::start();
    let (_server_conn, server) = broker.channel().await;
    server
        .queue_declare("rpc".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("declare");
    let mut requests = server
        .basic_consume(
            "rpc".into(),
            "srv".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");

    let (_client_conn, client) = broker.channel().await;
    let no_ack = BasicConsumeOptions { no_ack: true, ..Default::default() };
    let mut replies = client
        .basic_consume("amq.rabbitmq.reply-to".into(), "".into(), no_ack, FieldTable::default())
        .await
        .expect("consume reply-to");
    let props = BasicProperties::default()
        .with_reply_to("amq.rabbitmq.reply-to".into())
        .with_correlation_id("42".into());
    client
        .basic_publish("".into(), "rpc".into(), BasicPublishOptions::default(), b"ping", props)
        .await
        .expect("publish request");

    let request = tokio::time::timeout(Duration::from_secs(5), requests.next())
        .await
        .expect("request in time")
        .expect("stream open")
        .expect("delivery");
    let reply_to = request.properties.reply_to().clone().expect("reply_to set").to_string();
    assert!(reply_to.starts_with("amq.rabbitmq.reply-to."), "{reply_to}");
    request.ack(Default::default()).await.expect("ack");
    server
        .basic_publish(
            "".into(),
            reply_to.as_str().into(),
            BasicPublishOptions::default(),
            b"pong",
            BasicProperties::default().with_correlation_id("42".into()),
        )
        .await
        .expect("publish reply");

    let reply = tokio::time::timeout(Duration::from_secs(5), replies.next())
        .await
        .expect("reply in time")
        .expect("stream open")
        .expect("delivery");
    assert_eq!(reply.data, b"pong");
    assert_eq!(reply.properties.correlation_id().as_ref().map(|s| s.as_str()), Some("42"));
}

#[tokio::test]
async fn reply_to_without_a_reply_consumer_is_refused_with_406() {
    let broker = TestBroker::start();
    let (conn, ch) = broker.channel().await;
    ch.confirm_select(Default::default()).await.expect("confirm");
    let props = BasicProperties::default().with_reply_to("amq.rabbitmq.reply-to".into());
    let result = ch
        .basic_publish("".into(), "anything".into(), BasicPublishOptions::default(), b"x", props)
        .await
        .expect("sent")
        .await;
    assert!(result.is_err(), "the channel is closed with 406");
    assert!(!ch.status().connected());
    let other = conn.create_channel().await.expect("the connection lives on");
    other
        .queue_declare("".into(), QueueDeclareOptions::default(), FieldTable::default())
        .await
        .expect("usable");
}

#[tokio::test]
async fn reply_consumer_must_be_no_ack() {
    let broker = TestBroker::start();
    let (_conn, ch) = broker.channel().await;
    let err = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect_err("refused");
    assert!(
        err.to_string().contains("406") || format!("{err:?}").contains("PRECONDITION"),
        "{err:?}"
    );
}
