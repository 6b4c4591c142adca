//! Prometheus metrics (`--prometheus-listen`, RabbitMQ's port 15692): `/metrics` with
//! `rabbitmq_prometheus`'s names, aggregated over queues and channels, and
//! `/metrics/per-object` with a series per queue; values follow what AMQP clients did.

use lapin::BasicProperties;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;

use crate::TestBroker;
use crate::http::request;
use crate::support::within;

/// The value of the sample `series` (name with its labels, as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l[series.len()..].trim().parse().ok())
}

#[tokio::test]
async fn a_scrape_shows_queues_connections_and_channel_counters() {
    let broker = TestBroker::start();
    let metrics = broker.metrics.expect("metrics are served");
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.confirm_select(ConfirmSelectOptions::default())).await.expect("confirms");
    within(ch.queue_declare("jobs".into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    for (key, mandatory) in [("jobs", false), ("jobs", false), ("jobs", false), ("nowhere", false)]
    {
        let opts = BasicPublishOptions { mandatory, ..Default::default() };
        let confirm =
            within(ch.basic_publish("".into(), key.into(), opts, b"m", BasicProperties::default()))
                .await
                .expect("publish");
        within(confirm).await.expect("confirm");
    }
    let got = within(ch.basic_get("jobs".into(), BasicGetOptions::default()))
        .await
        .expect("get")
        .expect("a message");
    within(got.delivery.ack(BasicAckOptions::default())).await.expect("ack");
    within(ch.basic_get("jobs".into(), BasicGetOptions { no_ack: true })).await.expect("get");
    // The ack reaches the broker before this declare's answer does.
    within(ch.queue_declare("jobs".into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("redeclare");
    let scrape = request(metrics, "GET", "/metrics", None, None).await;
    assert_eq!(scrape.status, 200);
    assert_eq!(scrape.header("content-type"), Some("text/plain; version=0.0.4"));
    let text = &scrape.body;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = line.rsplit_once(' ').expect("name and value");
        assert!(series.starts_with("rabbitmq_"), "{line}");
        assert!(v.parse::<f64>().is_ok(), "{line}");
    }
    assert!(text.contains("rabbitmq_identity_info{rabbitmq_node=\"warren@"), "{text}");
    assert!(text.contains("# TYPE rabbitmq_queue_messages_ready gauge"));
    assert_eq!(value(text, "rabbitmq_queue_messages_ready"), Some(1.0));
    assert_eq!(value(text, "rabbitmq_queue_messages_unacked"), Some(0.0));
    assert_eq!(value(text, "rabbitmq_queues"), Some(1.0));
    assert_eq!(value(text, "rabbitmq_connections"), Some(1.0));
    assert_eq!(value(text, "rabbitmq_channels"), Some(1.0));
    assert_eq!(value(text, "rabbitmq_channel_messages_published_total"), Some(4.0));
    assert_eq!(value(text, "rabbitmq_channel_messages_unroutable_dropped_total"), Some(1.0));
    assert_eq!(value(text, "rabbitmq_channel_get_ack_total"), Some(1.0));
    assert_eq!(value(text, "rabbitmq_channel_get_total"), Some(1.0));
    assert_eq!(value(text, "rabbitmq_channel_messages_acked_total"), Some(1.0));
    assert_eq!(
        value(text, "rabbitmq_global_messages_received_total{protocol=\"amqp091\"}"),
        Some(4.0)
    );
    assert_eq!(value(text, "rabbitmq_queue_messages_published_total"), Some(3.0));
    assert!(value(text, "rabbitmq_process_resident_memory_bytes").is_some_and(|b| b > 0.0));
    let per = request(metrics, "GET", "/metrics/per-object", None, None).await.body;
    assert_eq!(value(&per, "rabbitmq_queue_messages_ready{vhost=\"/\",queue=\"jobs\"}"), Some(1.0));
    // A closed connection's counts stay in the totals.
    within(conn.close(200, "bye".into())).await.expect("close");
    let mut closed = None;
    for _ in 0..100 {
        let text = request(metrics, "GET", "/metrics", None, None).await.body;
        if value(&text, "rabbitmq_connections") == Some(0.0) {
            closed = Some(text);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let text = closed.expect("the connection is gone from the figures");
    assert_eq!(value(&text, "rabbitmq_channel_messages_published_total"), Some(4.0));
    assert_eq!(value(&text, "rabbitmq_connections_closed_total"), Some(1.0));
}
