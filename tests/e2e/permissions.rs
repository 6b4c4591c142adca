//! Users and permissions as RabbitMQ's internal backend enforces them (set up with
//! `warren ctl add_user / set_permissions / set_user_tags`): every AMQP operation checks the
//! permission RabbitMQ checks (configure to declare and delete, write to publish and to be
//! bound to, read to consume, get, purge and to bind from), refusals are 403 channel errors with
//! RabbitMQ's texts (captured from RabbitMQ 3.10.8), vhost access is 530, and users,
//! passwords and permissions survive a restart.

use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicPublishOptions, ExchangeBindOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions, QueuePurgeOptions,
};

use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use crate::TestBroker;
use crate::support::{channel, code, ctl, within};

fn ok(broker: &TestBroker, args: &[&str]) {
    let (ok, out, err) = ctl(broker, args);
    assert!(ok, "warren ctl {args:?}: {out} {err}");
}

fn uri(broker: &TestBroker, user: &str, password: &str, vhost: &str) -> String {
    format!("amqp://{user}:{password}@{}/{}", broker.addr, vhost.replace('/', "%2f"))
}

async fn connect_as(broker: &TestBroker, user: &str, vhost: &str) -> lapin::Result<Connection> {
    within(Connection::connect(&uri(broker, user, "pw", vhost), ConnectionProperties::default()))
        .await
}

/// The reply code and text of a refusal.
fn refusal(e: &lapin::Error) -> (u16, String) {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => (p.get_id(), p.get_message().to_string()),
        _ => panic!("not a protocol error: {e}"),
    }
}

fn denied(kind: &str, name: &str, user: &str) -> (u16, String) {
    (
        403,
        format!(
            "ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user '{user}'"
        ),
    )
}

/// A broker with fixtures made by guest: queue `pq.a` (bound from `px.e`), exchanges `px.e`
/// and `px.f`, and a user for each permission set.
async fn fixtures() -> (TestBroker, Connection) {
    let broker = TestBroker::start();
    let admin = broker.connect().await;
    let ch = channel(&admin).await;
    within(ch.queue_declare("pq.a".into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    for x in ["px.e", "px.f", "ex.other"] {
        within(ch.exchange_declare(
            x.into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        ))
        .await
        .expect("exchange");
    }
    for (user, conf, write, read) in [
        ("pt_none", "", "", ""),
        ("pt_noconf", "", ".*", ".*"),
        ("pt_nowrite", ".*", "", ".*"),
        ("pt_noread", ".*", ".*", ""),
        ("pt_app", "^app\\.", "^app\\.", "^app\\."),
        ("pt_bindA", ".*", ".*", "^pq\\."),
        ("pt_bindB", ".*", "^px\\.", ".*"),
        ("pt_defx", ".*", "^amq\\.default$", ".*"),
    ] {
        ok(&broker, &["add_user", user, "pw"]);
        ok(&broker, &["set_permissions", user, conf, write, read]);
    }
    ok(&broker, &["add_user", "pt_novh", "pw"]);
    (broker, admin)
}

/// Publishes one message on a confirm-mode channel and waits for its outcome.
async fn publish_to(c: &Channel, exchange: &str, key: &str) -> lapin::Result<Confirmation> {
    let confirm = within(c.basic_publish(
        exchange.into(),
        key.into(),
        BasicPublishOptions::default(),
        b"x",
        BasicProperties::default(),
    ))
    .await
    .expect("sent");
    within(confirm).await
}

/// exchange.bind `destination` <- `source` with key `k`.
async fn bind_exchanges(c: &Channel, destination: &str, source: &str) -> lapin::Result<()> {
    within(c.exchange_bind(
        destination.into(),
        source.into(),
        "k".into(),
        ExchangeBindOptions::default(),
        FieldTable::default(),
    ))
    .await
}

async fn ch(conn: &Connection) -> Channel {
    within(conn.create_channel()).await.expect("channel.open")
}

#[tokio::test]
async fn each_operation_needs_the_permission_rabbitmq_checks() {
    let (broker, _admin) = fixtures().await;
    let declare = |c: Channel, q: &'static str, passive: bool| async move {
        let opts = QueueDeclareOptions { passive, ..Default::default() };
        within(c.queue_declare(q.into(), opts, FieldTable::default())).await.map(|_| ())
    };
    // (user, what, outcome: None = allowed)
    let none = connect_as(&broker, "pt_none", "/").await.expect("login");
    let e = declare(ch(&none).await, "pq.new", false).await.unwrap_err();
    assert_eq!(refusal(&e), denied("queue", "pq.new", "pt_none"));
    // A passive declare needs no permission.
    declare(ch(&none).await, "pq.a", true).await.expect("passive declare");
    let e = declare(ch(&none).await, "missing", true).await.unwrap_err();
    assert_eq!(code(&e), Some(404));
    // Reserved names are refused before permissions for queues...
    let e = declare(ch(&none).await, "amq.foo", false).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (403, "ACCESS_REFUSED - queue name 'amq.foo' contains reserved prefix 'amq.*'".into())
    );
    // ...and after them for exchanges.
    let c = ch(&none).await;
    let e = within(c.exchange_declare(
        "amq.foo".into(),
        ExchangeKind::Direct,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "amq.foo", "pt_none"));
    let c = ch(&none).await;
    let e =
        within(c.queue_delete("missing".into(), QueueDeleteOptions::default())).await.unwrap_err();
    assert_eq!(refusal(&e), denied("queue", "missing", "pt_none"), "permission before existence");

    // configure: declare and delete, not purge, bind, consume or get.
    let noconf = connect_as(&broker, "pt_noconf", "/").await.expect("login");
    let e = declare(ch(&noconf).await, "pq.a", false).await.unwrap_err();
    assert_eq!(refusal(&e), denied("queue", "pq.a", "pt_noconf"), "a redeclare needs it too");
    let c = ch(&noconf).await;
    let e = within(c.exchange_delete("px.e".into(), ExchangeDeleteOptions::default()))
        .await
        .unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "px.e", "pt_noconf"));
    let c = ch(&noconf).await;
    within(c.queue_bind(
        "pq.a".into(),
        "px.e".into(),
        "k".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    ))
    .await
    .expect("bind needs no configure");
    within(c.queue_purge("pq.a".into(), QueuePurgeOptions::default())).await.expect("purge");
    within(c.basic_get("pq.a".into(), BasicGetOptions::default())).await.expect("get");

    // write: publish (the default exchange is amq.default), and being bound to.
    let nowrite = connect_as(&broker, "pt_nowrite", "/").await.expect("login");
    let c = channel(&nowrite).await;
    let e = publish_to(&c, "", "pq.a").await.unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "amq.default", "pt_nowrite"));
    let c = channel(&nowrite).await;
    let e = publish_to(&c, "missingx", "k").await.unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "missingx", "pt_nowrite"), "before existence");
    let defx = connect_as(&broker, "pt_defx", "/").await.expect("login");
    let c = channel(&defx).await;
    assert!(publish_to(&c, "", "pq.a").await.expect("write on amq.default is enough").is_ack());
    let e = publish_to(&c, "px.e", "k").await.unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "px.e", "pt_defx"));

    // read: consume, get, purge; and binding from an exchange.
    let noread = connect_as(&broker, "pt_noread", "/").await.expect("login");
    let c = ch(&noread).await;
    let e = within(c.basic_consume(
        "pq.a".into(),
        "".into(),
        BasicConsumeOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(refusal(&e), denied("queue", "pq.a", "pt_noread"));
    let c = ch(&noread).await;
    let e = within(c.basic_get("pq.a".into(), BasicGetOptions::default())).await.unwrap_err();
    assert_eq!(refusal(&e), denied("queue", "pq.a", "pt_noread"));
    let c = ch(&noread).await;
    let e = within(c.queue_purge("pq.a".into(), QueuePurgeOptions::default())).await.unwrap_err();
    assert_eq!(refusal(&e), denied("queue", "pq.a", "pt_noread"));
    let c = ch(&noread).await;
    within(c.queue_delete("pq.a".into(), QueueDeleteOptions::default()))
        .await
        .expect("delete needs configure only");

    // Bindings: write on the destination first, then read on the source.
    let bind_a = connect_as(&broker, "pt_bindA", "/").await.expect("login");
    let c = ch(&bind_a).await;
    let e = bind_exchanges(&c, "px.f", "px.e").await.unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "px.e", "pt_bindA"));
    let bind_b = connect_as(&broker, "pt_bindB", "/").await.expect("login");
    let c = ch(&bind_b).await;
    let e = bind_exchanges(&c, "ex.other", "px.e").await.unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "ex.other", "pt_bindB"));
    let c = ch(&bind_b).await;
    bind_exchanges(&c, "px.f", "px.e").await.expect("write on px.f, read on px.e");

    // A server-named queue is checked by its generated name.
    let app = connect_as(&broker, "pt_app", "/").await.expect("login");
    let e = declare(ch(&app).await, "", false).await.unwrap_err();
    let (code, text) = refusal(&e);
    assert_eq!(code, 403);
    assert!(
        text.starts_with("ACCESS_REFUSED - access to queue 'amq.gen-")
            && text.ends_with("' in vhost '/' refused for user 'pt_app'"),
        "{text}"
    );
    declare(ch(&app).await, "app.x", false).await.expect("within ^app\\.");
}

#[tokio::test]
async fn vhost_access_logins_and_changes_apply_to_open_connections() {
    let (mut broker, _admin) = fixtures().await;
    let e = connect_as(&broker, "pt_novh", "/").await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (530, "NOT_ALLOWED - access to vhost '/' refused for user 'pt_novh'".into())
    );
    let e = connect_as(&broker, "pt_none", "nope").await.unwrap_err();
    assert_eq!(refusal(&e), (530, "NOT_ALLOWED - vhost nope not found".into()));
    let wrong = within(Connection::connect(
        &uri(&broker, "pt_none", "not-pw", "/"),
        ConnectionProperties::default(),
    ))
    .await;
    assert_eq!(code(&wrong.unwrap_err()), Some(403));
    // Revoked while connected: the next publish is refused (no cache outlives a change).
    ok(&broker, &["add_user", "pt_live", "pw"]);
    ok(&broker, &["set_permissions", "pt_live", ".*", ".*", ".*"]);
    let live = connect_as(&broker, "pt_live", "/").await.expect("login");
    let c = channel(&live).await;
    let publish = |c: Channel| async move {
        let confirm = within(c.basic_publish(
            "".into(),
            "pq.a".into(),
            BasicPublishOptions::default(),
            b"x",
            BasicProperties::default(),
        ))
        .await
        .expect("sent");
        within(confirm).await
    };
    assert!(publish(c.clone()).await.expect("allowed").is_ack());
    ok(&broker, &["set_permissions", "pt_live", ".*", "^$", ".*"]);
    let e = publish(c).await.unwrap_err();
    assert_eq!(refusal(&e), denied("exchange", "amq.default", "pt_live"));
    // user_id must be the user's own, unless it is tagged impersonator.
    let c = channel(&live).await;
    let as_other = BasicProperties::default().with_user_id("someone".into());
    ok(&broker, &["set_permissions", "pt_live", ".*", ".*", ".*"]);
    let send = |c: Channel, props: BasicProperties| async move {
        let confirm = within(c.basic_publish(
            "".into(),
            "pq.a".into(),
            BasicPublishOptions::default(),
            b"x",
            props,
        ))
        .await
        .expect("sent");
        within(confirm).await
    };
    let e = send(c, as_other.clone()).await.unwrap_err();
    assert_eq!(
        refusal(&e),
        (
            406,
            "PRECONDITION_FAILED - user_id property set to 'someone' but authenticated user was 'pt_live'"
                .into()
        )
    );
    ok(&broker, &["set_user_tags", "pt_live", "impersonator"]);
    let c = channel(&live).await;
    assert!(send(c, as_other).await.expect("an impersonator may").is_ack());
    // Users, passwords (hashed), tags and permissions survive a restart.
    drop(live);
    broker.restart();
    let (ok_, users, _) = ctl(&broker, &["list_users"]);
    assert!(ok_ && users.contains("pt_live\t[impersonator]"), "{users}");
    let (ok_, perms, _) = ctl(&broker, &["list_permissions"]);
    assert!(ok_ && perms.contains("pt_app\t^app\\.\t^app\\.\t^app\\.\n"), "{perms}");
    assert!(perms.contains("pt_none\t\t\t\n"), "{perms}");
    let app = connect_as(&broker, "pt_app", "/").await.expect("the password survives");
    let e = within(ch(&app).await.queue_declare(
        "pq.b".into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    ))
    .await
    .unwrap_err();
    assert_eq!(refusal(&e), denied("queue", "pq.b", "pt_app"));
    let data = std::fs::read(broker.data_dir.join("definitions")).expect("definitions");
    assert!(!data.windows(7).any(|w| w == b"\x00\x00\x00\x02pw"), "no plain password on disk");
    // Deleting a user removes its permissions; its logins are refused.
    ok(&broker, &["delete_user", "pt_app"]);
    assert_eq!(code(&connect_as(&broker, "pt_app", "/").await.unwrap_err()), Some(403));
    let (_, perms, _) = ctl(&broker, &["list_permissions"]);
    assert!(!perms.contains("pt_app"), "{perms}");
}
