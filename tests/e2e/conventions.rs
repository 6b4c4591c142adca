//! RabbitMQ's conventions that tooling relies on: the `Server startup complete` log line
//! (testcontainers' RabbitMQ modules wait for it) after `listening on`, and the listener taken
//! from `RABBITMQ_NODE_PORT` / `RABBITMQ_NODE_IP_ADDRESS` when no `--listen` is given.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::support::within;

#[tokio::test]
async fn rabbitmq_node_port_and_the_startup_line() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = std::env::temp_dir().join(format!("warren-e2e-conv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("WARREN_LISTEN")
        .env("RABBITMQ_NODE_PORT", port.to_string())
        .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn warren");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while !lines.iter().any(|l: &String| l.contains("Server startup complete")) {
        let line = rx.recv_timeout(Duration::from_secs(30)).expect("warren logs its start-up");
        lines.push(line);
    }
    let listening =
        lines.iter().position(|l| l.contains(&format!("listening on 127.0.0.1:{port}")));
    let complete = lines.iter().position(|l| l.contains("Server startup complete"));
    assert!(listening.is_some() && listening < complete, "{lines:#?}");
    let uri = format!("amqp://guest:guest@127.0.0.1:{port}/%2f");
    let conn = within(Connection::connect(&uri, ConnectionProperties::default())).await;
    conn.expect("connects on RABBITMQ_NODE_PORT");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
