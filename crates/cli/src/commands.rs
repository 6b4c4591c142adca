//! The commands, each as rabbitmqctl or rabbitmq-diagnostics words its output.

use serde_json::{Value, json};

use crate::http::seg;
use crate::listing::{self, Key};
use crate::{Error, Options};

/// Every command known (for the usage text).
pub(crate) const NAMES: &[&str] = &[
    "ping",
    "status",
    "await_startup",
    "check_running",
    "check_local_alarms",
    "check_alarms",
    "alarms",
    "check_port_connectivity",
    "check_port_listener",
    "check_protocol_listener",
    "check_virtual_hosts",
    "listeners",
    "server_version",
    "list_queues",
    "list_exchanges",
    "list_bindings",
    "list_connections",
    "list_consumers",
    "list_users",
    "list_vhosts",
    "list_permissions",
    "list_user_permissions",
    "list_policies",
    "add_user",
    "delete_user",
    "change_password",
    "set_user_tags",
    "set_permissions",
    "clear_permissions",
    "add_vhost",
    "delete_vhost",
    "purge_queue",
    "delete_queue",
    "set_policy",
    "clear_policy",
    "export_definitions",
    "import_definitions",
    "close_connection",
];

fn args_n<'a>(args: &'a [String], n: usize, usage: &str) -> Result<&'a [String], Error> {
    if args.len() < n {
        return Err(Error::Usage(format!("usage: {usage}")));
    }
    Ok(args)
}

fn health(opts: &Options, path: &str) -> Result<Value, Error> {
    let a = opts.api.request("GET", path, None)?;
    match a.status {
        200 => a.json(),
        _ => Err(Error::Failed(a.body)),
    }
}

fn list(
    opts: &Options,
    path: &str,
    keys: &[Key],
    args: &[String],
    default: &[&str],
    banner: &str,
) -> Result<(), Error> {
    let columns = listing::columns(keys, args, default)?;
    let items = opts.api.get(path)?;
    let items: Vec<Value> = items.as_array().cloned().unwrap_or_default();
    opts.banner("Timeout: 60.0 seconds ...");
    opts.banner(banner);
    listing::print(opts, &columns, &items);
    Ok(())
}

/// Runs one command.
pub(crate) fn run(opts: &Options, command: &str, args: &[String]) -> Result<(), Error> {
    let v = opts.vhost.as_str();
    let vs = seg(v);
    match command {
        "ping" | "node_health_check" | "is_running" => {
            let node = opts.node();
            opts.banner(&format!(
                "Will ping {node}. This only checks if the OS process is running and registered with epmd. Timeout: 60000 ms."
            ));
            opts.api.get("/api/overview")?;
            if !opts.silent {
                out!("Ping succeeded");
            }
            Ok(())
        }
        "await_startup" => {
            let deadline = std::time::Instant::now() + opts.api.timeout;
            loop {
                match opts.api.get("/api/overview") {
                    Ok(_) => return Ok(()),
                    Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
                }
            }
        }
        "check_running" => {
            let node = opts.node();
            opts.banner(&format!("Checking if RabbitMQ is running on node {node} ..."));
            opts.api.get("/api/overview")?;
            out!("RabbitMQ on node {node} is fully booted and running");
            Ok(())
        }
        "check_local_alarms" | "check_alarms" | "alarms" => {
            let node = opts.node();
            if command == "alarms" {
                opts.banner(&format!("Asking node {node} to report any known resource alarms ..."));
            }
            let a = opts.api.request("GET", "/api/health/checks/alarms", None)?;
            if a.status == 200 {
                out!(
                    "{}",
                    match command {
                        "check_local_alarms" => format!("Node {node} reported no local alarms"),
                        _ => format!("Node {node} reported no alarms, local or clusterwide"),
                    }
                );
                return Ok(());
            }
            let body = a.json()?;
            let alarms: Vec<String> = body["alarms"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    format!(
                        "{} resource limit alarm on node {node}",
                        x["resource"].as_str().unwrap_or("")
                    )
                })
                .collect();
            if command == "alarms" {
                out!("{}", alarms.join("\n"));
                return Ok(());
            }
            Err(Error::Failed(alarms.join("\n")))
        }
        "check_port_connectivity" | "listeners" => {
            let node = opts.node();
            let overview = opts.api.get("/api/overview")?;
            let listeners: Vec<Value> =
                overview["listeners"].as_array().cloned().unwrap_or_default();
            if command == "listeners" {
                opts.banner(&format!("Asking node {node} to report its protocol listeners ..."));
                for l in &listeners {
                    out!(
                        "Interface: {}, port: {}, protocol: {}",
                        l["ip_address"].as_str().unwrap_or(""),
                        l["port"],
                        l["protocol"].as_str().unwrap_or("")
                    );
                }
                return Ok(());
            }
            opts.banner(&format!(
                "Testing TCP connections to all active listeners on node {node} ..."
            ));
            let mut ports = Vec::new();
            for l in &listeners {
                let port = l["port"].as_u64().unwrap_or(0) as u16;
                let host = opts.api.authority.rsplit_once(':').map_or("localhost", |h| h.0);
                let reachable = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))
                    .ok()
                    .and_then(|mut a| a.next())
                    .is_some_and(|a| {
                        std::net::TcpStream::connect_timeout(&a, opts.api.timeout).is_ok()
                    });
                if !reachable {
                    return Err(Error::Failed(format!(
                        "Connection to port {port} on node {node} failed"
                    )));
                }
                ports.push(port.to_string());
            }
            out!("Successfully connected to ports {} on node {node}.", ports.join(", "));
            Ok(())
        }
        "check_port_listener" => {
            let port = &args_n(args, 1, "check_port_listener PORT")?[0];
            let node = opts.node();
            health(opts, &format!("/api/health/checks/port-listener/{}", seg(port)))?;
            out!("A listener for port {port} is running on node {node}.");
            Ok(())
        }
        "check_protocol_listener" => {
            let proto = &args_n(args, 1, "check_protocol_listener PROTOCOL")?[0];
            let node = opts.node();
            health(opts, &format!("/api/health/checks/protocol-listener/{}", seg(proto)))?;
            out!("A listener for protocol {proto} is running on node {node}.");
            Ok(())
        }
        "check_virtual_hosts" => {
            health(opts, "/api/health/checks/virtual-hosts")?;
            out!("Node {} reported all vhosts as running", opts.node());
            Ok(())
        }
        "server_version" => {
            let o = opts.api.get("/api/overview")?;
            out!("{}", o["rabbitmq_version"].as_str().unwrap_or(""));
            Ok(())
        }
        "status" => {
            let o = opts.api.get("/api/overview")?;
            let node = o["node"].as_str().unwrap_or("warren").to_string();
            let nodes = opts.api.get("/api/nodes").unwrap_or(json!([]));
            let n = &nodes[0];
            opts.banner(&format!("Status of node {node} ..."));
            out!("Runtime\n");
            out!("OS PID: {}", n["os_pid"].as_str().unwrap_or(""));
            out!("OS: Linux");
            out!("Uptime (seconds): {}", n["uptime"].as_u64().unwrap_or(0) / 1000);
            out!("RabbitMQ version: {}", o["rabbitmq_version"].as_str().unwrap_or(""));
            out!(
                "Product: {} {}",
                o["product_name"].as_str().unwrap_or(""),
                o["product_version"].as_str().unwrap_or("")
            );
            out!("Node name: {node}");
            out!("\nAlarms\n");
            let alarm = |k: &str| n[k].as_bool().unwrap_or(false);
            if alarm("mem_alarm") || alarm("disk_free_alarm") {
                if alarm("mem_alarm") {
                    out!("Memory alarm on node {node}");
                }
                if alarm("disk_free_alarm") {
                    out!("Free disk space alarm on node {node}");
                }
            } else {
                out!("(none)");
            }
            out!("\nMemory\n");
            out!("Total memory used: {} bytes", n["mem_used"]);
            out!("Memory high watermark: {} bytes", n["mem_limit"]);
            out!("\nFree Disk Space\n");
            out!("Low free disk space watermark: {} bytes", n["disk_free_limit"]);
            out!("Free disk space: {} bytes", n["disk_free"]);
            out!("\nListeners\n");
            for l in o["listeners"].as_array().into_iter().flatten() {
                out!(
                    "Interface: {}, port: {}, protocol: {}",
                    l["ip_address"].as_str().unwrap_or(""),
                    l["port"],
                    l["protocol"].as_str().unwrap_or("")
                );
            }
            out!("\nTotals\n");
            let t = &o["object_totals"];
            out!("Connection count: {}", t["connections"]);
            out!("Queue count: {}", t["queues"]);
            out!(
                "Virtual host count: {}",
                opts.api.get("/api/vhosts")?.as_array().map_or(0, Vec::len)
            );
            Ok(())
        }
        "list_queues" => list(
            opts,
            &format!("/api/queues/{vs}"),
            listing::QUEUE_KEYS,
            args,
            &["name", "messages"],
            &format!("Listing queues for vhost {v} ..."),
        ),
        "list_exchanges" => list(
            opts,
            &format!("/api/exchanges/{vs}"),
            listing::EXCHANGE_KEYS,
            args,
            &["name", "type"],
            &format!("Listing exchanges for vhost {v} ..."),
        ),
        "list_bindings" => {
            let columns = listing::columns(
                listing::BINDING_KEYS,
                args,
                &[
                    "source_name",
                    "source_kind",
                    "destination_name",
                    "destination_kind",
                    "routing_key",
                    "arguments",
                ],
            )?;
            let mut items: Vec<Value> = opts
                .api
                .get(&format!("/api/bindings/{vs}"))?
                .as_array()
                .cloned()
                .unwrap_or_default();
            for b in &mut items {
                b["source_kind"] = json!("exchange");
            }
            opts.banner("Timeout: 60.0 seconds ...");
            opts.banner(&format!("Listing bindings for vhost {v}..."));
            listing::print(opts, &columns, &items);
            Ok(())
        }
        "list_connections" => list(
            opts,
            "/api/connections",
            listing::CONNECTION_KEYS,
            args,
            &["user", "peer_host", "peer_port", "state"],
            "Listing connections ...",
        ),
        "list_consumers" => list(
            opts,
            &format!("/api/consumers/{vs}"),
            listing::CONSUMER_KEYS,
            args,
            &[
                "queue_name",
                "channel_pid",
                "consumer_tag",
                "ack_required",
                "prefetch_count",
                "active",
                "arguments",
            ],
            &format!("Listing consumers in vhost {v} ..."),
        ),
        "list_users" => {
            let users = opts.api.get("/api/users")?;
            opts.banner("Listing users ...");
            if opts.json {
                let rows: Vec<Value> = users
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|u| json!({"user": u["name"], "tags": u["tags"]}))
                    .collect();
                out!("{}", Value::Array(rows));
                return Ok(());
            }
            if opts.headers {
                out!("user\ttags");
            }
            for u in users.as_array().into_iter().flatten() {
                let tags: Vec<&str> =
                    u["tags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                out!("{}\t[{}]", u["name"].as_str().unwrap_or(""), tags.join(", "));
            }
            Ok(())
        }
        "list_vhosts" => {
            let keys: &[Key] =
                &[("name", "name"), ("tracing", "tracing"), ("description", "description")];
            list(opts, "/api/vhosts", keys, args, &["name"], "Listing vhosts ...")
        }
        "list_permissions" => {
            let keys: &[Key] = &[
                ("user", "user"),
                ("configure", "configure"),
                ("write", "write"),
                ("read", "read"),
            ];
            list(
                opts,
                &format!("/api/vhosts/{vs}/permissions"),
                keys,
                &[],
                &["user", "configure", "write", "read"],
                &format!("Listing permissions for vhost \"{v}\" ..."),
            )
        }
        "list_user_permissions" => {
            let user = &args_n(args, 1, "list_user_permissions USER")?[0];
            let keys: &[Key] = &[
                ("vhost", "vhost"),
                ("configure", "configure"),
                ("write", "write"),
                ("read", "read"),
            ];
            list(
                opts,
                &format!("/api/users/{}/permissions", seg(user)),
                keys,
                &[],
                &["vhost", "configure", "write", "read"],
                &format!("Listing permissions for user \"{user}\" ..."),
            )
        }
        "list_policies" => {
            let keys: &[Key] = &[
                ("vhost", "vhost"),
                ("name", "name"),
                ("pattern", "pattern"),
                ("apply-to", "apply-to"),
                ("definition", "definition"),
                ("priority", "priority"),
            ];
            list(
                opts,
                &format!("/api/policies/{vs}"),
                keys,
                &[],
                &["vhost", "name", "pattern", "apply-to", "definition", "priority"],
                &format!("Listing policies for vhost \"{v}\" ..."),
            )
        }
        "add_user" => {
            let a = args_n(args, 2, "add_user USER PASSWORD")?;
            opts.banner(&format!("Adding user \"{}\" ...", a[0]));
            if opts.api.request("GET", &format!("/api/users/{}", seg(&a[0])), None)?.status == 200 {
                return Err(Error::Failed(format!("User \"{}\" already exists", a[0])));
            }
            let body = json!({"password": a[1], "tags": ""}).to_string();
            opts.api.change("PUT", &format!("/api/users/{}", seg(&a[0])), Some(&body))?;
            Ok(())
        }
        "delete_user" => {
            let a = args_n(args, 1, "delete_user USER")?;
            opts.banner(&format!("Deleting user \"{}\" ...", a[0]));
            opts.api
                .change("DELETE", &format!("/api/users/{}", seg(&a[0])), None)
                .map_err(|_| Error::NotFound(format!("User \"{}\"", a[0])))?;
            Ok(())
        }
        "change_password" => {
            let a = args_n(args, 2, "change_password USER PASSWORD")?;
            opts.banner(&format!("Changing password for user \"{}\" ...", a[0]));
            let u = opts.api.get(&format!("/api/users/{}", seg(&a[0])))?;
            let body = json!({"password": a[1], "tags": u["tags"]}).to_string();
            opts.api.change("PUT", &format!("/api/users/{}", seg(&a[0])), Some(&body))?;
            Ok(())
        }
        "set_user_tags" => {
            let a = args_n(args, 1, "set_user_tags USER [TAG ...]")?;
            let tags: Vec<&str> = a[1..].iter().map(String::as_str).collect();
            opts.banner(&format!(
                "Setting tags for user \"{}\" to [{}] ...",
                a[0],
                tags.join(", ")
            ));
            let u = opts.api.get(&format!("/api/users/{}", seg(&a[0])))?;
            let body = json!({"password_hash": u["password_hash"],
                "hashing_algorithm": u["hashing_algorithm"], "tags": tags.join(",")})
            .to_string();
            opts.api.change("PUT", &format!("/api/users/{}", seg(&a[0])), Some(&body))?;
            Ok(())
        }
        "set_permissions" => {
            let a = args_n(args, 4, "set_permissions [-p VHOST] USER CONF WRITE READ")?;
            opts.banner(&format!("Setting permissions for user \"{}\" in vhost \"{v}\" ...", a[0]));
            let body = json!({"configure": a[1], "write": a[2], "read": a[3]}).to_string();
            opts.api.change(
                "PUT",
                &format!("/api/permissions/{vs}/{}", seg(&a[0])),
                Some(&body),
            )?;
            Ok(())
        }
        "clear_permissions" => {
            let a = args_n(args, 1, "clear_permissions [-p VHOST] USER")?;
            opts.banner(&format!(
                "Clearing permissions for user \"{}\" in vhost \"{v}\" ...",
                a[0]
            ));
            match opts.api.change("DELETE", &format!("/api/permissions/{vs}/{}", seg(&a[0])), None)
            {
                Ok(_) | Err(Error::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            }
        }
        "add_vhost" => {
            let a = args_n(args, 1, "add_vhost VHOST")?;
            opts.banner(&format!("Adding vhost \"{}\" ...", a[0]));
            opts.api.change("PUT", &format!("/api/vhosts/{}", seg(&a[0])), None)?;
            Ok(())
        }
        "delete_vhost" => {
            let a = args_n(args, 1, "delete_vhost VHOST")?;
            opts.banner(&format!("Deleting vhost \"{}\" ...", a[0]));
            opts.api
                .change("DELETE", &format!("/api/vhosts/{}", seg(&a[0])), None)
                .map_err(|_| Error::NotFound(format!("Virtual host '{}'", a[0])))?;
            Ok(())
        }
        "purge_queue" => {
            let a = args_n(args, 1, "purge_queue [-p VHOST] QUEUE")?;
            opts.banner(&format!("Purging queue '{}' in vhost '{v}' ...", a[0]));
            opts.api.change(
                "DELETE",
                &format!("/api/queues/{vs}/{}/contents", seg(&a[0])),
                None,
            )?;
            Ok(())
        }
        "delete_queue" => {
            let a = args_n(args, 1, "delete_queue [-p VHOST] QUEUE")?;
            opts.banner(&format!("Deleting queue '{}' on vhost '{v}' ...", a[0]));
            opts.api.change("DELETE", &format!("/api/queues/{vs}/{}", seg(&a[0])), None)?;
            Ok(())
        }
        "set_policy" => {
            let a = args_n(
                args,
                3,
                "set_policy [-p VHOST] [--priority N] [--apply-to X] NAME PATTERN DEFINITION",
            )?;
            let definition: Value = serde_json::from_str(&a[2])
                .map_err(|e| Error::Usage(format!("the definition is not JSON: {e}")))?;
            let priority: i64 = opts.flag("priority").unwrap_or("0").parse().unwrap_or(0);
            let apply_to = opts.flag("apply-to").unwrap_or("all");
            opts.banner(&format!(
                "Setting policy \"{}\" for pattern \"{}\" to \"{}\" with priority \"{priority}\" for vhost \"{v}\" ...",
                a[0], a[1], a[2]
            ));
            let body = json!({"pattern": a[1], "definition": definition, "priority": priority,
                "apply-to": apply_to})
            .to_string();
            opts.api.change("PUT", &format!("/api/policies/{vs}/{}", seg(&a[0])), Some(&body))?;
            Ok(())
        }
        "clear_policy" => {
            let a = args_n(args, 1, "clear_policy [-p VHOST] NAME")?;
            opts.banner(&format!("Clearing policy \"{}\" on vhost \"{v}\" ...", a[0]));
            opts.api.change("DELETE", &format!("/api/policies/{vs}/{}", seg(&a[0])), None)?;
            Ok(())
        }
        "export_definitions" => {
            let a = args_n(args, 1, "export_definitions PATH|-")?;
            let defs = opts.api.get("/api/definitions")?;
            let text = serde_json::to_string_pretty(&defs).unwrap_or_default();
            if a[0] == "-" {
                out!("{text}");
            } else {
                opts.banner(&format!(
                    "Exporting definitions in JSON to a file at \"{}\" ...",
                    a[0]
                ));
                std::fs::write(&a[0], text).map_err(|e| Error::Failed(format!("{}: {e}", a[0])))?;
            }
            Ok(())
        }
        "import_definitions" => {
            let a = args_n(args, 1, "import_definitions PATH")?;
            let text = std::fs::read_to_string(&a[0])
                .map_err(|e| Error::Failed(format!("{}: {e}", a[0])))?;
            opts.banner(&format!("Importing definitions in JSON from a file at \"{}\" ...", a[0]));
            opts.api.change("POST", "/api/definitions", Some(&text))?;
            opts.banner("Successfully started definition import. This process is asynchronous and can take some time.");
            Ok(())
        }
        "close_connection" => {
            let a = args_n(args, 2, "close_connection NAME REASON")?;
            opts.banner(&format!("Closing connection {}, reason: {}...", a[0], a[1]));
            let path = format!("/api/connections/{}", seg(&a[0]));
            let req = opts.api.request("DELETE", &path, None)?;
            if req.status != 204 {
                return Err(Error::NotFound(format!("Connection {}", a[0])));
            }
            Ok(())
        }
        other => Err(Error::Usage(format!(
            "{other} is not a known command. Known commands: {}",
            NAMES.join(", ")
        ))),
    }
}
