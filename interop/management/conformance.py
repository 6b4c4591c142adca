"""The management API, request by request, against RabbitMQ's: the same requests (with the
same fixtures made through the API and one pika consumer) are sent to a broker, and the
status code and the JSON keys of each answer are recorded (--record, from RabbitMQ 3.10.8
with rabbitmq_management) or compared with a recording (--compare, against warren).

A key RabbitMQ has and warren does not fails the comparison unless it is listed in
RABBITMQ_ONLY (with why); a status code that differs always fails. Keys warren has and
RabbitMQ does not are printed, not failed.

Usage: conformance.py (--record FILE | --compare FILE) --api HOST:PORT --amqp HOST:PORT
"""

import argparse
import base64
import json
import sys
import time
import urllib.error
import urllib.request

import pika

# Keys of RabbitMQ's answers that warren leaves out, on purpose: Erlang VM internals, per-
# process figures, plugin and cluster details that have no meaning for warren.
RABBITMQ_ONLY = {
    # Erlang processes and their memory, garbage collection, reductions.
    "garbage_collection", "reductions", "reductions_details", "memory", "erlang_version",
    "erlang_full_version", "statistics_db_event_queue", "process_reductions",
    # Classic queue internals (backing queue, RAM/paged split, mirror slaves).
    "backing_queue_status", "messages_ram", "messages_ready_ram", "messages_unacknowledged_ram",
    "messages_persistent", "messages_paged_out", "message_bytes", "message_bytes_ram",
    "message_bytes_persistent", "message_bytes_paged_out", "message_bytes_unacknowledged",
    "recoverable_slaves", "slave_nodes", "synchronised_slave_nodes", "operator_policy",
    "effective_policy_definition", "head_message_timestamp", "idle_since",
    "consumer_utilisation", "consumer_capacity", "exclusive_consumer_tag",
    "single_active_consumer_tag", "deliveries", "incoming", "outgoing",
    # Per-connection and per-channel byte, packet and timing counters.
    "recv_oct", "recv_oct_details", "send_oct", "send_oct_details", "recv_cnt", "send_cnt",
    "send_pend", "auth_mechanism", "peer_cert_issuer", "peer_cert_subject", "peer_cert_validity",
    "ssl_cipher", "ssl_hash", "ssl_key_exchange", "ssl_protocol", "pending_raft_commands",
    # Overview: churn rates, sampling policies, per-plugin contexts, release support.
    "churn_rates", "sample_retention_policies", "release_series_support_status",
    # Audit field and vhost metadata warren does not keep.
    "user_who_performed_action",
    # Rate details of counters RabbitMQ samples and warren does not keep.
    "confirm", "confirm_details", "drop_unroutable", "drop_unroutable_details",
    "return_unroutable", "return_unroutable_details", "get", "get_details", "get_empty",
    "get_empty_details", "get_no_ack", "get_no_ack_details", "deliver_no_ack",
    "deliver_no_ack_details", "disk_reads", "disk_reads_details", "disk_writes",
    "disk_writes_details", "publish_in", "publish_in_details", "publish_out",
    "publish_out_details",
    # Node: Erlang, Mnesia, file handle and I/O statistics, cluster links, config paths.
    "applications", "channel_closed", "channel_closed_details", "channel_created",
    "channel_created_details", "cluster_links", "config_files", "connection_closed",
    "connection_closed_details", "connection_created", "connection_created_details",
    "context_switches", "context_switches_details", "contexts", "db_dir", "disk_free_details",
    "fd_total", "fd_used", "fd_used_details", "gc_bytes_reclaimed", "gc_bytes_reclaimed_details",
    "gc_num", "gc_num_details", "io_read_avg_time", "io_read_avg_time_details", "io_read_bytes",
    "io_read_bytes_details", "io_read_count", "io_read_count_details", "io_reopen_count",
    "io_reopen_count_details", "io_seek_avg_time", "io_seek_avg_time_details", "io_seek_count",
    "io_seek_count_details", "io_sync_avg_time", "io_sync_avg_time_details", "io_sync_count",
    "io_sync_count_details", "io_write_avg_time", "io_write_avg_time_details", "io_write_bytes",
    "io_write_bytes_details", "io_write_count", "io_write_count_details", "log_files",
    "mem_calculation_strategy", "mem_used_details", "metrics_gc_queue_length",
    "mnesia_disk_tx_count", "mnesia_disk_tx_count_details", "mnesia_ram_tx_count",
    "mnesia_ram_tx_count_details", "msg_store_read_count", "msg_store_read_count_details",
    "msg_store_write_count", "msg_store_write_count_details", "net_ticktime", "proc_total",
    "proc_used", "proc_used_details", "queue_created", "queue_created_details", "queue_declared",
    "queue_declared_details", "queue_deleted", "queue_deleted_details",
    "queue_index_read_count", "queue_index_read_count_details", "queue_index_write_count",
    "queue_index_write_count_details", "ra_open_file_metrics", "run_queue", "sockets_total",
    "sockets_used", "sockets_used_details", "uptime_details",
}

# Keys RabbitMQ has in some answers only and warren leaves out there.
RABBITMQ_ONLY_IN = {
    # Exchange and channel message rates are not kept by warren (queue rates are).
    "exchanges": {"message_stats"},
    "default exchange": {"message_stats"},
    "exchange": {"message_stats"},
    "channels": {"message_stats"},
}

P = "conf-"


def requests():
    """(label, user, method, path, body): in order; fixtures are made by the earlier ones."""
    g = "guest"
    q = f"/api/queues/%2F/{P}q"
    return [
        ("overview", g, "GET", "/api/overview", None),
        ("whoami", g, "GET", "/api/whoami", None),
        ("nodes", g, "GET", "/api/nodes", None),
        ("vhosts", g, "GET", "/api/vhosts", None),
        ("vhost", g, "GET", "/api/vhosts/%2F", None),
        ("users", g, "GET", "/api/users", None),
        ("user", g, "GET", "/api/users/guest", None),
        ("permissions", g, "GET", "/api/permissions", None),
        ("permission", g, "GET", "/api/permissions/%2F/guest", None),
        ("put queue", g, "PUT", q, {"durable": True, "arguments": {}}),
        ("put queue again", g, "PUT", q, {"durable": True, "arguments": {}}),
        ("put queue inequivalent", g, "PUT", q, {"durable": False, "arguments": {}}),
        ("put exchange", g, "PUT", f"/api/exchanges/%2F/{P}x", {"type": "fanout", "durable": True}),
        ("post binding", g, "POST", f"/api/bindings/%2F/e/{P}x/q/{P}q", {"routing_key": "k", "arguments": {}}),
        ("bindings between", g, "GET", f"/api/bindings/%2F/e/{P}x/q/{P}q", None),
        ("queue bindings", g, "GET", f"{q}/bindings", None),
        ("publish", g, "POST", "/api/exchanges/%2F/amq.default/publish",
         {"properties": {}, "routing_key": f"{P}q", "payload": "one", "payload_encoding": "string"}),
        ("publish again", g, "POST", "/api/exchanges/%2F/amq.default/publish",
         {"properties": {"delivery_mode": 2}, "routing_key": f"{P}q", "payload": "two", "payload_encoding": "string"}),
        ("publish unroutable", g, "POST", "/api/exchanges/%2F/amq.default/publish",
         {"properties": {}, "routing_key": f"{P}nowhere", "payload": "x", "payload_encoding": "string"}),
        ("CONSUME", None, None, None, None),
        ("queues", g, "GET", "/api/queues", None),
        ("queues in vhost", g, "GET", "/api/queues/%2F", None),
        ("queue", g, "GET", q, None),
        ("exchange", g, "GET", f"/api/exchanges/%2F/{P}x", None),
        ("exchanges", g, "GET", "/api/exchanges", None),
        ("default exchange", g, "GET", "/api/exchanges/%2F/amq.default", None),
        ("connections", g, "GET", "/api/connections", None),
        ("channels", g, "GET", "/api/channels", None),
        ("consumers", g, "GET", "/api/consumers", None),
        ("get", g, "POST", f"{q}/get", {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}),
        ("definitions", g, "GET", "/api/definitions", None),
        ("vhost definitions", g, "GET", "/api/definitions/%2F", None),
        ("policies", g, "GET", "/api/policies", None),
        ("feature flags", g, "GET", "/api/feature-flags", None),
        ("alarms check", g, "GET", "/api/health/checks/alarms", None),
        ("virtual hosts check", g, "GET", "/api/health/checks/virtual-hosts", None),
        ("aliveness", g, "GET", "/api/aliveness-test/%2F", None),
        ("page", g, "GET", "/api/queues?page=1&page_size=1", None),
        ("columns", g, "GET", "/api/queues?columns=name,messages", None),
        ("no credentials", None, "GET", "/api/overview", None),
        ("wrong password", "guest:nope", "GET", "/api/overview", None),
        ("missing queue", g, "GET", f"/api/queues/%2F/{P}nosuch", None),
        ("missing vhost", g, "GET", "/api/vhosts/nosuch", None),
        ("put vhost", g, "PUT", f"/api/vhosts/{P}v", None),
        ("put user", g, "PUT", f"/api/users/{P}u", {"password": "pw", "tags": "monitoring"}),
        ("user without tags refused", f"{P}plain:pw", "GET", "/api/overview", None),
        ("monitoring user on users", f"{P}u:pw", "GET", "/api/users", None),
        ("put permission", g, "PUT", f"/api/permissions/{P}v/{P}u", {"configure": ".*", "write": ".*", "read": ".*"}),
        ("put policy", g, "PUT", f"/api/policies/%2F/{P}p", {"pattern": f"^{P}", "definition": {"max-length": 10}, "apply-to": "queues"}),
        ("policy", g, "GET", f"/api/policies/%2F/{P}p", None),
        ("delete policy", g, "DELETE", f"/api/policies/%2F/{P}p", None),
        ("delete binding", g, "DELETE", f"/api/bindings/%2F/e/{P}x/q/{P}q/k", None),
        ("delete binding again", g, "DELETE", f"/api/bindings/%2F/e/{P}x/q/{P}q/k", None),
        ("delete queue", g, "DELETE", q, None),
        ("delete exchange", g, "DELETE", f"/api/exchanges/%2F/{P}x", None),
        ("delete user", g, "DELETE", f"/api/users/{P}u", None),
        ("delete vhost", g, "DELETE", f"/api/vhosts/{P}v", None),
        ("delete vhost again", g, "DELETE", f"/api/vhosts/{P}v", None),
    ]


def keys(body):
    """The keys of an answer: an object's, a list's first element's, a paged listing's items'."""
    if isinstance(body, dict):
        ks = set(body)
        if isinstance(body.get("items"), list) and body["items"]:
            ks |= {"items." + k for k in body["items"][0] if isinstance(body["items"][0], dict)}
        return sorted(ks)
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return sorted(set().union(*(set(b) for b in body if isinstance(b, dict))))
    return []


def call(api, user, method, path, body):
    req = urllib.request.Request(f"http://{api}{path}", method=method)
    if user:
        name, _, password = user.partition(":")
        password = password or "guest"
        token = base64.b64encode(f"{name}:{password}".encode()).decode()
        req.add_header("Authorization", "Basic " + token)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data=data, timeout=10) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = None
    return status, keys(parsed)


def run(api, amqp):
    out = {}
    consumer = None
    # A user without tags, for the refusal (made through the API before the walk).
    call(api, "guest", "PUT", f"/api/users/{P}plain", {"password": "pw", "tags": ""})
    try:
        for label, user, method, path, body in requests():
            if label == "CONSUME":
                host, port = amqp.rsplit(":", 1)
                params = pika.ConnectionParameters(host, int(port), client_properties={"connection_name": "conformance"})
                consumer = pika.BlockingConnection(params)
                ch = consumer.channel()
                ch.basic_qos(prefetch_count=1)
                ch.basic_consume(f"{P}q", lambda *a: None, auto_ack=False)
                for _ in range(10):
                    consumer.process_data_events(time_limit=0.1)
                time.sleep(6)  # RabbitMQ's statistics come every 5 s
                consumer.process_data_events(time_limit=0.1)
                continue
            status, ks = call(api, user, method, path, body)
            out[label] = {"status": status, "keys": ks}
    finally:
        if consumer:
            consumer.close()
        call(api, "guest", "DELETE", f"/api/users/{P}plain", None)
        call(api, "guest", "DELETE", f"/api/queues/%2F/{P}q", None)
        call(api, "guest", "DELETE", f"/api/queues/%2F/aliveness-test", None)
    return out


def main():
    a = argparse.ArgumentParser()
    mode = a.add_mutually_exclusive_group(required=True)
    mode.add_argument("--record")
    mode.add_argument("--compare")
    a.add_argument("--api", required=True)
    a.add_argument("--amqp", required=True)
    args = a.parse_args()
    got = run(args.api, args.amqp)
    if args.record:
        with open(args.record, "w") as f:
            json.dump(got, f, indent=1, sort_keys=True)
        print(f"recorded {len(got)} answers in {args.record}")
        return 0
    with open(args.compare) as f:
        want = json.load(f)
    failed = 0
    for label, w in want.items():
        g = got.get(label)
        if g is None:
            print(f"FAIL {label}: not sent")
            failed += 1
            continue
        allowed = RABBITMQ_ONLY | RABBITMQ_ONLY_IN.get(label, set())
        missing = sorted(set(w["keys"]) - set(g["keys"]) - allowed
                         - {"items." + k for k in allowed})
        extra = sorted(set(g["keys"]) - set(w["keys"]))
        if g["status"] != w["status"]:
            print(f"FAIL {label}: status {g['status']}, RabbitMQ {w['status']}")
            failed += 1
        elif missing:
            print(f"FAIL {label}: keys RabbitMQ has and warren does not: {', '.join(missing)}")
            failed += 1
        else:
            note = f" (warren also has: {', '.join(extra)})" if extra else ""
            print(f"PASS {label}: {g['status']}{note}")
    print(f"{len(want) - failed} of {len(want)} answers as RabbitMQ's")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
