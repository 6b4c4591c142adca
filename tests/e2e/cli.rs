//! `rabbitmqctl` and `rabbitmq-diagnostics` as warren builds them (over the management API,
//! `--url` / `WARREN_MANAGEMENT_URL`): the health checks compose files run
//! (`rabbitmq-diagnostics -q ping`, `check_running`, `check_port_connectivity`), listings with
//! column arguments, and user, permission, vhost, queue, policy and definitions commands, with
//! RabbitMQ's output lines and exit codes (captured from RabbitMQ 3.10.8).

use std::process::Command;

use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};

use crate::TestBroker;
use crate::support::within;

/// Runs a command against `broker`: (exit code, stdout, stderr).
fn run(bin: &str, broker: &TestBroker, args: &[&str]) -> (i32, String, String) {
    let url = format!("http://guest:guest@{}", broker.http.expect("the API listens"));
    let out = Command::new(bin)
        .env("WARREN_MANAGEMENT_URL", url)
        .args(args)
        .output()
        .expect("run the command");
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    (out.status.code().unwrap_or(-1), text(out.stdout), text(out.stderr))
}

fn ctl(broker: &TestBroker, args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_rabbitmqctl"), broker, args)
}

fn diag(broker: &TestBroker, args: &[&str]) -> (i32, String, String) {
    run(env!("CARGO_BIN_EXE_rabbitmq-diagnostics"), broker, args)
}

#[tokio::test]
async fn health_checks_answer_as_rabbitmq_diagnostics_does() {
    let broker = TestBroker::start();
    assert_eq!(diag(&broker, &["-q", "ping"]), (0, "Ping succeeded\n".into(), String::new()));
    let (code, out, _) = diag(&broker, &["check_running"]);
    assert_eq!(code, 0);
    assert!(out.ends_with("is fully booted and running\n"), "{out}");
    let (code, out, _) = diag(&broker, &["-q", "check_local_alarms"]);
    assert_eq!(code, 0);
    assert!(out.contains("reported no local alarms"), "{out}");
    let (code, out, _) = diag(&broker, &["check_port_connectivity"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&broker.addr.port().to_string()), "{out}");
    let port = broker.addr.port().to_string();
    assert_eq!(diag(&broker, &["-q", "check_port_listener", &port]).0, 0);
    assert_ne!(diag(&broker, &["-q", "check_port_listener", "1"]).0, 0);
    // Nothing listening: a failing exit code, as a health check needs.
    let down = Command::new(env!("CARGO_BIN_EXE_rabbitmq-diagnostics"))
        .args(["--url", "http://127.0.0.1:1", "-q", "ping"])
        .output()
        .expect("run");
    assert_eq!(down.status.code(), Some(69));
}

#[tokio::test]
async fn rabbitmqctl_manages_users_vhosts_queues_and_policies() {
    let broker = TestBroker::start();
    let (code, out, _) = ctl(&broker, &["add_user", "app", "s3cret"]);
    assert_eq!((code, out.as_str()), (0, "Adding user \"app\" ...\n"));
    let (code, _, err) = ctl(&broker, &["add_user", "app", "again"]);
    assert_eq!(code, 70);
    assert!(err.contains("User \"app\" already exists"), "{err}");
    assert_eq!(ctl(&broker, &["add_vhost", "dev"]).0, 0);
    assert_eq!(ctl(&broker, &["set_permissions", "-p", "dev", "app", ".*", ".*", ".*"]).0, 0);
    assert_eq!(ctl(&broker, &["set_user_tags", "app", "monitoring"]).0, 0);
    let (_, users, _) = ctl(&broker, &["-q", "list_users"]);
    assert!(
        users.contains("app\t[monitoring]\n") && users.contains("guest\t[administrator]\n"),
        "{users}"
    );
    // The user logs in with the password the command set.
    let uri = format!("amqp://app:s3cret@{}/dev", broker.addr);
    let conn =
        within(Connection::connect(&uri, ConnectionProperties::default())).await.expect("login");
    let ch = within(conn.create_channel()).await.expect("channel");
    within(ch.queue_declare("jobs".into(), QueueDeclareOptions::default(), FieldTable::default()))
        .await
        .expect("declare");
    let (code, out, _) = ctl(&broker, &["-p", "dev", "list_queues", "name", "messages", "durable"]);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "Timeout: 60.0 seconds ...\nListing queues for vhost dev ...\nname\tmessages\tdurable\njobs\t0\tfalse\n"
    );
    let (_, json, _) = ctl(&broker, &["-q", "-p", "dev", "--formatter", "json", "list_queues"]);
    assert_eq!(json.trim(), r#"[{"messages":0,"name":"jobs"}]"#);
    let (code, _, err) = ctl(&broker, &["list_queues", "bogus"]);
    assert_eq!(code, 64);
    assert!(err.contains("Info key(s) bogus are not supported"), "{err}");
    let (_, conns, _) = ctl(&broker, &["-q", "list_connections", "user", "vhost"]);
    assert!(conns.contains("app\tdev\n"), "{conns}");
    let (code, _, _) = ctl(
        &broker,
        &[
            "set_policy",
            "-p",
            "dev",
            "--apply-to",
            "queues",
            "lim",
            "^jobs$",
            r#"{"max-length":5}"#,
        ],
    );
    assert_eq!(code, 0);
    let (_, policies, _) = ctl(&broker, &["-q", "-p", "dev", "list_policies"]);
    assert!(policies.contains("dev\tlim\t^jobs$\tqueues\t{\"max-length\":5}\t0"), "{policies}");
    // Definitions out and back in.
    let file = broker.data_dir.join("exported.json");
    assert_eq!(ctl(&broker, &["export_definitions", file.to_str().unwrap()]).0, 0);
    let other = TestBroker::start();
    assert_eq!(ctl(&other, &["import_definitions", file.to_str().unwrap()]).0, 0);
    let (_, vhosts, _) = ctl(&other, &["-q", "list_vhosts"]);
    assert!(vhosts.contains("dev\n"), "{vhosts}");
    assert_eq!(ctl(&broker, &["-p", "dev", "delete_queue", "jobs"]).0, 0);
    assert_eq!(ctl(&broker, &["delete_user", "app"]).0, 0);
    assert_eq!(ctl(&broker, &["delete_user", "app"]).0, 69);
}
