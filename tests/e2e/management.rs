//! The management HTTP API (`--management-listen`, RabbitMQ's port 15672): RabbitMQ's paths,
//! status codes, JSON fields and basic-auth rules (expectations captured from RabbitMQ 3.10.8
//! with `rabbitmq_management`), live figures, changes that AMQP clients see, closing a
//! connection, definitions export and import (a RabbitMQ 3.10.8 export included).

use std::net::SocketAddr;

use lapin::options::{BasicConsumeOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use serde_json::{Value, json};

use crate::TestBroker;
use crate::http::{guest, request};
use crate::support::{ctl, within};

fn api(broker: &TestBroker) -> SocketAddr {
    broker.http.expect("the management API listens")
}

#[tokio::test]
async fn logins_and_tags_are_checked_as_rabbitmq_checks_them() {
    let broker = TestBroker::start();
    let http = api(&broker);
    let none = request(http, "GET", "/api/overview", None, None).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Basic realm=\"RabbitMQ Management\""));
    assert!(none.body.is_empty());
    let wrong = request(http, "GET", "/api/overview", Some(("guest", "nope")), None).await;
    assert_eq!(
        (wrong.status, wrong.json()),
        (401, json!({"error": "not_authorized", "reason": "Login failed"}))
    );
    assert!(wrong.header("www-authenticate").is_some());
    for (user, tags) in [("plain", ""), ("mon", "monitoring"), ("mgmt", "management")] {
        assert!(ctl(&broker, &["add_user", user, "pw"]).0);
        if !tags.is_empty() {
            assert!(ctl(&broker, &["set_user_tags", user, tags]).0);
        }
    }
    assert!(ctl(&broker, &["set_permissions", "mgmt", ".*", ".*", ".*"]).0);
    let plain = request(http, "GET", "/api/whoami", Some(("plain", "pw")), None).await;
    assert_eq!(
        (plain.status, plain.json()),
        (401, json!({"error": "not_authorised", "reason": "Not management user"}))
    );
    assert!(plain.header("www-authenticate").is_none());
    let mon = request(http, "GET", "/api/users", Some(("mon", "pw")), None).await;
    assert_eq!((mon.status, mon.json()["reason"].clone()), (401, json!("Not administrator user")));
    let mon = request(http, "GET", "/api/overview", Some(("mon", "pw")), None).await;
    assert_eq!(mon.status, 200);
    assert!(mon.json()["listeners"].is_array(), "monitoring users see the node");
    let mon = request(http, "GET", "/api/queues", Some(("mon", "pw")), None).await;
    assert_eq!(mon.json(), json!([]), "nor the queues of vhosts it has no permissions in");
    let mgmt = request(http, "GET", "/api/nodes", Some(("mgmt", "pw")), None).await;
    assert_eq!((mgmt.status, mgmt.json()["reason"].clone()), (401, json!("Not monitor user")));
    let mgmt = request(http, "GET", "/api/overview", Some(("mgmt", "pw")), None).await;
    assert!(mgmt.json().get("listeners").is_none(), "management users do not");
    let who = guest(http, "GET", "/api/whoami", None).await;
    assert_eq!(who.json(), json!({"name": "guest", "tags": ["administrator"]}));
    let missing = guest(http, "GET", "/api/nosuch", None).await;
    assert_eq!(
        (missing.status, missing.json()),
        (404, json!({"error": "Object Not Found", "reason": "Not Found"}))
    );
    let auth = request(http, "GET", "/api/auth", None, None).await;
    assert_eq!(auth.status, 200, "asked before logging in");
}

#[tokio::test]
async fn queues_are_declared_filled_read_purged_and_deleted_through_the_api() {
    let broker = TestBroker::start();
    let http = api(&broker);
    let overview = guest(http, "GET", "/api/overview", None).await.json();
    assert_eq!(overview["rabbitmq_version"], "3.10.8");
    assert_eq!(overview["product_name"], "warren");
    let put = |body: &'static str| guest(http, "PUT", "/api/queues/%2F/jobs", Some(body));
    assert_eq!(put(r#"{"durable":true,"arguments":{"x-max-length":10}}"#).await.status, 201);
    assert_eq!(put(r#"{"durable":true,"arguments":{"x-max-length":10}}"#).await.status, 204);
    let e = put(r#"{"durable":false,"arguments":{"x-max-length":10}}"#).await;
    assert_eq!(
        (e.status, e.json()),
        (
            400,
            json!({"error": "bad_request", "reason": "inequivalent arg 'durable' for queue 'jobs' in vhost '/': received 'false' but current is 'true'"})
        )
    );
    // An AMQP client sees the queue.
    let conn = broker.connect().await;
    let ch = within(conn.create_channel()).await.expect("channel");
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    within(ch.queue_declare("jobs".into(), passive, FieldTable::default())).await.expect("exists");
    for (props, payload, encoding) in [
        (json!({}), "hi", "string"),
        (
            json!({"delivery_mode": 2, "headers": {"a": 1}, "message_id": "m-1"}),
            "aGVsbG8=",
            "base64",
        ),
    ] {
        let body = json!({"properties": props, "routing_key": "jobs", "payload": payload,
            "payload_encoding": encoding})
        .to_string();
        let p = guest(http, "POST", "/api/exchanges/%2F/amq.default/publish", Some(&body)).await;
        assert_eq!((p.status, p.json()), (200, json!({"routed": true})));
    }
    let body = json!({"properties": {}, "routing_key": "nowhere", "payload": "x",
        "payload_encoding": "string"})
    .to_string();
    let p = guest(http, "POST", "/api/exchanges/%2F/amq.default/publish", Some(&body)).await;
    assert_eq!(p.json(), json!({"routed": false}));
    let q = guest(http, "GET", "/api/queues/%2F/jobs", None).await.json();
    assert_eq!((q["messages_ready"].clone(), q["durable"].clone()), (json!(2), json!(true)));
    assert_eq!(q["arguments"], json!({"x-max-length": 10}));
    assert_eq!(q["message_stats"]["publish"], 2);
    // Read without taking: requeued (redelivered afterwards), then taken.
    let get = |mode: &'static str| {
        let body = json!({"count": 5, "ackmode": mode, "encoding": "auto", "truncate": 50000});
        async move { guest(http, "POST", "/api/queues/%2F/jobs/get", Some(&body.to_string())).await }
    };
    let got = get("ack_requeue_true").await.json();
    assert_eq!(got.as_array().map(Vec::len), Some(2));
    assert_eq!(got[0]["payload"], "hi");
    assert_eq!(got[0]["properties"], json!([]));
    assert_eq!(got[1]["payload"], "hello");
    assert_eq!(got[1]["properties"]["headers"], json!({"a": 1}));
    assert_eq!(got[1]["properties"]["message_id"], "m-1");
    let got = get("ack_requeue_false").await.json();
    assert_eq!(got[0]["redelivered"], true);
    assert_eq!(guest(http, "GET", "/api/queues/%2F/jobs", None).await.json()["messages"], 0);
    assert_eq!(get("bogus").await.status, 500);
    // Purge and delete; a consumer shows in the queue's details meanwhile.
    within(ch.basic_qos(7, BasicQosOptions::default())).await.expect("qos");
    let _consumer = within(ch.basic_consume(
        "jobs".into(),
        "c1".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("consume");
    let q = guest(http, "GET", "/api/queues/%2F/jobs", None).await.json();
    assert_eq!(q["consumers"], 1);
    assert_eq!(q["consumer_details"][0]["consumer_tag"], "c1");
    assert_eq!(q["consumer_details"][0]["prefetch_count"], 7);
    let consumers = guest(http, "GET", "/api/consumers", None).await.json();
    assert_eq!(consumers[0]["queue"], json!({"name": "jobs", "vhost": "/"}));
    assert_eq!(guest(http, "DELETE", "/api/queues/%2F/jobs/contents", None).await.status, 204);
    assert_eq!(guest(http, "DELETE", "/api/queues/%2F/jobs", None).await.status, 204);
    assert_eq!(guest(http, "GET", "/api/queues/%2F/jobs", None).await.status, 404);
    assert_eq!(guest(http, "DELETE", "/api/queues/%2F/jobs", None).await.status, 404);
}

#[tokio::test]
async fn exchanges_bindings_listings_and_health_checks() {
    let broker = TestBroker::start();
    let http = api(&broker);
    let x =
        guest(http, "PUT", "/api/exchanges/%2F/ex2", Some(r#"{"type":"direct","durable":true}"#))
            .await;
    assert_eq!(x.status, 201);
    let x =
        guest(http, "PUT", "/api/exchanges/%2F/ex2", Some(r#"{"type":"fanout","durable":true}"#))
            .await;
    assert_eq!(x.status, 400);
    let x = guest(http, "PUT", "/api/exchanges/%2F/amq.foo", Some(r#"{"type":"direct"}"#)).await;
    assert_eq!((x.status, x.json()["reason"].clone()), (401, json!("Access refused.")));
    for q in ["q1", "q2", "q3"] {
        assert_eq!(guest(http, "PUT", &format!("/api/queues/%2F/{q}"), None).await.status, 201);
    }
    let b = guest(
        http,
        "POST",
        "/api/bindings/%2F/e/ex2/q/q1",
        Some(r#"{"routing_key":"r","arguments":{}}"#),
    )
    .await;
    assert_eq!((b.status, b.header("location")), (201, Some("q1/r")));
    let with_args = r#"{"routing_key":"k","arguments":{"x-a":1}}"#;
    let b = guest(http, "POST", "/api/bindings/%2F/e/ex2/q/q1", Some(with_args)).await;
    assert_eq!(b.status, 201);
    let listed = guest(http, "GET", "/api/bindings/%2F/e/ex2/q/q1", None).await.json();
    let keys: Vec<&str> =
        listed.as_array().unwrap().iter().filter_map(|b| b["properties_key"].as_str()).collect();
    assert_eq!(keys.len(), 2);
    assert!(keys.contains(&"r"));
    let with = keys.iter().find(|k| k.starts_with("k~")).expect("a key with arguments");
    let one = guest(http, "GET", &format!("/api/bindings/%2F/e/ex2/q/q1/{with}"), None).await;
    assert_eq!(one.json()["arguments"], json!({"x-a": 1}));
    let source = guest(http, "GET", "/api/exchanges/%2F/ex2/bindings/source", None).await.json();
    assert_eq!(source.as_array().map(Vec::len), Some(2));
    let to_q1 = guest(http, "GET", "/api/queues/%2F/q1/bindings", None).await.json();
    assert_eq!(to_q1[0]["source"], "", "the default exchange's binding comes first");
    assert_eq!(guest(http, "DELETE", "/api/bindings/%2F/e/ex2/q/q1/r", None).await.status, 204);
    assert_eq!(guest(http, "DELETE", "/api/bindings/%2F/e/ex2/q/q1/r", None).await.status, 404);
    let default = guest(http, "GET", "/api/exchanges/%2F/amq.default", None).await.json();
    assert_eq!((default["name"].clone(), default["type"].clone()), (json!(""), json!("direct")));
    // Listings: columns, sorting, pages.
    let cols =
        guest(http, "GET", "/api/queues?columns=name,durable&sort=name&sort_reverse=true", None)
            .await;
    assert_eq!(cols.json()[0], json!({"name": "q3", "durable": false}));
    let page = guest(http, "GET", "/api/queues?page=2&page_size=2", None).await.json();
    assert_eq!(
        (page["total_count"].clone(), page["page_count"].clone(), page["item_count"].clone()),
        (json!(3), json!(2), json!(1))
    );
    let out = guest(http, "GET", "/api/queues?page=99&page_size=2", None).await;
    assert_eq!((out.status, out.json()["error"].clone()), (400, json!("page_out_of_range")));
    // Health checks.
    let ok = guest(http, "GET", "/api/health/checks/alarms", None).await;
    assert_eq!((ok.status, ok.json()), (200, json!({"status": "ok"})));
    let amqp_port = broker.addr.port();
    let port =
        guest(http, "GET", &format!("/api/health/checks/port-listener/{amqp_port}"), None).await;
    assert_eq!(port.status, 200);
    let nothing = guest(http, "GET", "/api/health/checks/port-listener/1", None).await;
    assert_eq!(
        (nothing.status, nothing.json()["reason"].clone()),
        (503, json!("No active listener"))
    );
    let alive = guest(http, "GET", "/api/aliveness-test/%2F", None).await;
    assert_eq!(alive.json(), json!({"status": "ok"}));
    let flags = guest(http, "GET", "/api/feature-flags", None).await.json();
    assert!(flags.as_array().unwrap().iter().any(|f| f["name"] == "quorum_queue"));
    // What the AMQP wire could not carry is refused, not stored (the core relies on it).
    let long = "k".repeat(256);
    let q = guest(http, "PUT", &format!("/api/queues/%2F/{long}"), None).await;
    assert_eq!(q.status, 400);
    let body = json!({"routing_key": long, "arguments": {}}).to_string();
    let b = guest(http, "POST", "/api/bindings/%2F/e/ex2/q/q1", Some(&body)).await;
    assert_eq!(b.status, 400);
    let body = json!({"routing_key": "q1", "arguments": {long.clone(): 1}}).to_string();
    let b = guest(http, "POST", "/api/bindings/%2F/e/ex2/q/q1", Some(&body)).await;
    assert_eq!(b.status, 400);
    let body = json!({"properties": {"message_id": long}, "routing_key": "q1", "payload": "x",
        "payload_encoding": "string"})
    .to_string();
    let p = guest(http, "POST", "/api/exchanges/%2F/amq.default/publish", Some(&body)).await;
    assert_eq!(p.status, 400);
    assert_eq!(guest(http, "DELETE", "/api/exchanges/%2F/ex2", None).await.status, 204);
}

#[tokio::test]
async fn connections_are_listed_and_closed_with_320() {
    let broker = TestBroker::start();
    let http = api(&broker);
    let props = ConnectionProperties::default().with_connection_name("billing".into());
    let conn = within(Connection::connect(&broker.uri(), props)).await.expect("connect");
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.confirm_select(lapin::options::ConfirmSelectOptions::default()))
        .await
        .expect("confirm");
    within(ch.basic_qos(5, BasicQosOptions::default())).await.expect("qos");
    let list = guest(http, "GET", "/api/connections", None).await.json();
    let c = list.as_array().and_then(|a| a.first()).cloned().expect("one connection");
    assert_eq!(c["user_provided_name"], "billing");
    assert_eq!(
        (c["user"].clone(), c["vhost"].clone(), c["channels"].clone()),
        (json!("guest"), json!("/"), json!(1))
    );
    assert_eq!(c["protocol"], "AMQP 0-9-1");
    let name = c["name"].as_str().unwrap().to_string();
    let encoded = name.replace(':', "%3A").replace(' ', "%20").replace('>', "%3E");
    let one = guest(http, "GET", &format!("/api/connections/{encoded}"), None).await;
    assert_eq!(one.json()["name"], json!(name));
    // Its channels, as the connection describes them.
    let channels = guest(http, "GET", "/api/channels", None).await.json();
    let c1 = &channels[0];
    assert_eq!(c1["name"], json!(format!("{name} (1)")));
    assert_eq!((c1["number"].clone(), c1["confirm"].clone()), (json!(1), json!(true)));
    assert_eq!(
        (c1["prefetch_count"].clone(), c1["transactional"].clone()),
        (json!(5), json!(false))
    );
    let mine = guest(http, "GET", &format!("/api/connections/{encoded}/channels"), None).await;
    assert_eq!(mine.json().as_array().map(Vec::len), Some(1));
    let one = guest(http, "GET", &format!("/api/channels/{encoded}%20(1)"), None).await;
    assert_eq!(one.json()["connection_details"]["name"], json!(name));
    let closed = guest(http, "DELETE", &format!("/api/connections/{encoded}"), None).await;
    assert_eq!(closed.status, 204);
    // The client hears 320 CONNECTION_FORCED.
    let mut gone = false;
    for _ in 0..100 {
        if !conn.status().connected() {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(gone, "the connection was closed");
    assert_eq!(guest(http, "GET", "/api/connections", None).await.json(), json!([]));
}

#[tokio::test]
async fn users_permissions_and_definitions_round_trip_with_rabbitmq() {
    let broker = TestBroker::start();
    let http = api(&broker);
    assert_eq!(guest(http, "PUT", "/api/vhosts/dev", None).await.status, 201);
    assert_eq!(guest(http, "PUT", "/api/vhosts/dev", None).await.status, 204);
    let u =
        guest(http, "PUT", "/api/users/app", Some(r#"{"password":"s3cret","tags":"management"}"#))
            .await;
    assert_eq!(u.status, 201);
    let p = guest(
        http,
        "PUT",
        "/api/permissions/dev/app",
        Some(r#"{"configure":"^app\\.","write":".*","read":".*"}"#),
    )
    .await;
    assert_eq!(p.status, 201);
    let user = guest(http, "GET", "/api/users/app", None).await.json();
    assert_eq!(user["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert_eq!(user["tags"], json!(["management"]));
    assert!(!user.to_string().contains("s3cret"));
    // The user logs in over AMQP with the permissions the API gave it.
    let uri = format!("amqp://app:s3cret@{}/dev", broker.addr);
    let conn =
        within(Connection::connect(&uri, ConnectionProperties::default())).await.expect("login");
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.queue_declare("app.q".into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("within ^app\\.");
    // Export, then import into a fresh broker: the user logs in there too.
    let export = guest(http, "GET", "/api/definitions", None).await.json();
    assert!(export["users"].as_array().unwrap().iter().any(|u| u["name"] == "app"));
    assert!(
        export["permissions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["user"] == "app" && p["vhost"] == "dev")
    );
    let other = TestBroker::start();
    let imported = guest(api(&other), "POST", "/api/definitions", Some(&export.to_string())).await;
    assert_eq!(imported.status, 204, "{}", imported.body);
    let uri = format!("amqp://app:s3cret@{}/dev", other.addr);
    within(Connection::connect(&uri, ConnectionProperties::default()))
        .await
        .expect("login after import");
    // A RabbitMQ 3.10.8 export: its hashes verify, its queues, exchange, binding and policy
    // arrive.
    let rabbit = include_str!("fixtures/rabbitmq-3.10.8-definitions.json");
    let third = TestBroker::start();
    let h = api(&third);
    let imported = guest(h, "POST", "/api/definitions", Some(rabbit)).await;
    assert_eq!(imported.status, 204, "{}", imported.body);
    let uri = format!("amqp://hasher:hunter2@{}/imported", third.addr);
    within(Connection::connect(&uri, ConnectionProperties::default()))
        .await
        .expect("RabbitMQ's password hash verifies");
    let q = guest(h, "GET", "/api/queues/imported/app.jobs", None).await.json();
    assert_eq!((q["durable"].clone(), q["policy"].clone()), (json!(true), json!("ttl")));
    let q = guest(h, "GET", "/api/queues/imported/app.quorum", None).await.json();
    assert_eq!(q["type"], "quorum");
    let b = guest(h, "GET", "/api/bindings/imported/e/app.events/q/app.jobs", None).await.json();
    assert_eq!(b[0]["routing_key"], "jobs.#");
    // A body that does not say it is JSON is refused (a cross-site form post would be).
    let form = crate::http::request_typed(
        h,
        "POST",
        "/api/definitions",
        Some(("guest", "guest")),
        Some(
            &json!({"users": [{"name": "evil", "password": "x", "tags": "administrator"}]})
                .to_string(),
        ),
        "text/plain",
    )
    .await;
    assert_eq!(form.status, 415);
    assert_eq!(guest(h, "GET", "/api/users/evil", None).await.status, 404);
    // What warren cannot import is reported.
    let shovel =
        json!({"parameters": [{"vhost": "/", "component": "shovel", "name": "s1", "value": {}}]});
    let refused = guest(h, "POST", "/api/definitions", Some(&shovel.to_string())).await;
    assert_eq!(refused.status, 400);
    assert!(refused.json()["reason"].as_str().unwrap().contains("shovel"), "{}", refused.body);
    // Deleting the vhost deletes what is in it and closes its connections.
    assert_eq!(guest(http, "DELETE", "/api/vhosts/dev", None).await.status, 204);
    let mut closed = false;
    for _ in 0..100 {
        if !conn.status().connected() {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(closed, "the vhost's connection was closed");
    assert_eq!(guest(http, "GET", "/api/vhosts/dev", None).await.status, 404);
    assert_eq!(guest(http, "DELETE", "/api/vhosts/dev", None).await.status, 404);
    let _: Value = guest(http, "GET", "/api/vhosts", None).await.json();
}

#[tokio::test]
async fn definitions_load_at_start_and_the_api_can_be_turned_off() {
    let dir = std::env::temp_dir().join(format!("warren-defs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("definitions.json");
    std::fs::write(&file, include_str!("fixtures/rabbitmq-3.10.8-definitions.json"))
        .expect("write");
    let broker = TestBroker::start_with(&["--definitions", file.to_str().unwrap()], &[]);
    let uri = format!("amqp://hasher:hunter2@{}/imported", broker.addr);
    let conn =
        within(Connection::connect(&uri, ConnectionProperties::default())).await.expect("login");
    let ch = within(conn.create_channel()).await.expect("channel");
    let passive = QueueDeclareOptions { passive: true, ..Default::default() };
    within(ch.queue_declare("app.jobs".into(), passive, FieldTable::default()))
        .await
        .expect("loaded");
    let off = TestBroker::start_with(&["--management-listen", "off"], &[]);
    assert!(off.http.is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
