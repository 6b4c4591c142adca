"""warren interop scenarios for pika (Python).

Usage: interop.py MODE      MODE = scenarios | cross-publish | cross-consume
Environment:
  AMQP_URL           amqp://user:pass@host:port (no vhost: the default vhost "/" is used)
  INTEROP_CLIENTS    clients taking part in the cross-client check (space separated)
  INTEROP_EXPECTED   path of cross/expected.json (default: ../cross/expected.json)
Prints one line per scenario: "PASS name", "FAIL name: reason" or "NA name: reason".
"""

import calendar
import datetime
import decimal
import hashlib
import json
import math
import os
import signal
import sys
import time
import traceback
import urllib.parse

import pika
import pika.exceptions as pe

ME = "python"
URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672")
LOGIN = urllib.parse.unquote(urllib.parse.urlparse(URL).username or "guest")
HERE = os.path.dirname(os.path.abspath(__file__))
EXPECTED = os.environ.get("INTEROP_EXPECTED", os.path.join(HERE, "..", "cross", "expected.json"))
CLIENTS = os.environ.get("INTEROP_CLIENTS", "python node c ruby php").split()


def params(url=URL, **kw):
    p = pika.URLParameters(url.rstrip("/") + "/%2F")
    p.connection_attempts = 1
    p.socket_timeout = 10
    p.blocked_connection_timeout = 30
    for k, v in kw.items():
        setattr(p, k, v)
    return p


def connect(**kw):
    return pika.BlockingConnection(params(**kw))


def q(name):
    return f"it.{ME}.{name}"


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def clean(ch, queues=(), exchanges=()):
    for name in queues:
        ch.queue_delete(name)
    for name in exchanges:
        ch.exchange_delete(name)


def count(ch, name):
    return ch.queue_declare(name, passive=True).method.message_count


def wait_count(ch, name, n, seconds=5.0):
    """Polls the ready count until it is n: RabbitMQ may answer a passive declare before the
    channel's earlier publishes have reached the queue."""
    deadline = time.time() + seconds
    while count(ch, name) != n and time.time() < deadline:
        time.sleep(0.02)
    return count(ch, name) == n


def drain(ch, name, limit=100):
    """basic.get with auto-ack until get-empty; returns the bodies."""
    out = []
    for _ in range(limit):
        m, p, b = ch.basic_get(name, auto_ack=True)
        if m is None:
            break
        out.append(b)
    return out


def pump(c, seconds, until=lambda: False):
    """Process I/O for `seconds` (or until `until()` holds): process_data_events returns early."""
    deadline = time.time() + seconds
    while not until() and time.time() < deadline:
        c.process_data_events(time_limit=min(0.1, max(0.0, deadline - time.time())))


def expect_channel_error(fn, code, text_prefix):
    try:
        fn()
    except pe.ChannelClosedByBroker as e:
        check(e.reply_code == code and e.reply_text.startswith(text_prefix),
              f"expected {code} {text_prefix}, got {e.reply_code} {e.reply_text!r}")
        return e
    raise Fail(f"expected channel error {code} {text_prefix}, got none")


SCENARIOS = []


def scenario(name, timeout=60):
    def deco(fn):
        SCENARIOS.append((name, fn, timeout))
        return fn
    return deco


class NA(Exception):
    pass


def _alarm(signum, frame):
    raise TimeoutError("scenario timed out")


def run_one(name, fn, timeout):
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(timeout)
    start = time.time()
    try:
        fn()
        print(f"PASS {name}", flush=True)
    except NA as e:
        print(f"NA {name}: {e}", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure as a line
        reason = f"{type(e).__name__}: {e}".replace("\n", " ")
        print(f"FAIL {name}: {reason}", flush=True)
        traceback.print_exc(file=sys.stderr)
    finally:
        signal.alarm(0)
        print(f"[{ME}] {name}: {time.time() - start:.2f}s", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Scenarios


@scenario("connect-ok")
def connect_ok():
    c = connect()
    props = c._impl.server_properties  # what the broker said in connection.start
    caps = props.get("capabilities", {})
    check(caps.get("consumer_cancel_notify") is True, f"capabilities: {caps}")
    ch = c.channel()
    check(ch.is_open, "channel not open")
    c.close()


@scenario("connect-bad-credentials")
def connect_bad():
    u = urllib.parse.urlparse(URL)
    bad = u._replace(netloc=f"{u.username}:wrong-password@{u.hostname}:{u.port}").geturl()
    try:
        pika.BlockingConnection(params(bad))
    except pe.ProbableAuthenticationError as e:
        # broker closed the connection with 403 ACCESS_REFUSED (authentication_failure_close)
        check("403" in str(e) and "ACCESS_REFUSED" in str(e), f"error: {e!r}")
        return
    except pe.AMQPConnectionError as e:
        raise Fail(f"wrong error: {e!r}")
    raise Fail("connection succeeded with a wrong password")


def _declare_exchange(kind):
    def fn():
        c = connect()
        ch = c.channel()
        name = q(f"ex.{kind}")
        ch.exchange_delete(name)
        ch.exchange_declare(name, kind, durable=False, auto_delete=False)
        ch.exchange_declare(name, kind, durable=False, auto_delete=False)  # same again: ok
        ch.exchange_declare(name, kind, passive=True)
        other = "fanout" if kind != "fanout" else "direct"
        expect_channel_error(lambda: ch.exchange_declare(name, other), 406, "PRECONDITION_FAILED")
        ch = c.channel()
        ch.exchange_delete(name)
        expect_channel_error(lambda: ch.exchange_declare(name, kind, passive=True), 404, "NOT_FOUND")
        c.close()
    return fn


for _kind in ("direct", "fanout", "topic", "headers"):
    scenario(f"declare-exchange-{_kind}")(_declare_exchange(_kind))


@scenario("declare-queue")
def declare_queue():
    c = connect()
    ch = c.channel()
    name = q("declare")
    ch.queue_delete(name)
    ok = ch.queue_declare(name).method
    check(ok.queue == name and ok.message_count == 0 and ok.consumer_count == 0, f"declare-ok {ok}")
    ch.queue_declare(name, passive=True)
    ch.queue_delete(name)
    expect_channel_error(lambda: ch.queue_declare(name, passive=True), 404, "NOT_FOUND")
    c.close()


@scenario("bind")
def bind():
    c = connect()
    ch = c.channel()
    ex, name = q("bind.ex"), q("bind")
    clean(ch, [name], [ex])
    ch.exchange_declare(ex, "direct")
    ch.queue_declare(name)
    ch.queue_bind(name, ex, "k1")
    ch.basic_publish(ex, "k1", b"one")
    ch.basic_publish(ex, "k2", b"two")
    ch.queue_unbind(name, ex, "k1")
    ch.basic_publish(ex, "k1", b"three")
    got = drain(ch, name)
    check(got == [b"one"], f"got {got}")
    clean(ch, [name], [ex])
    c.close()


@scenario("publish-consume-ack")
def publish_consume_ack():
    c = connect()
    ch = c.channel()
    name = q("pca")
    clean(ch, [name])
    ch.queue_declare(name)
    for i in range(3):
        ch.basic_publish("", name, f"m{i}".encode())
    got = []
    for m, p, b in ch.consume(name, inactivity_timeout=5):
        check(m is not None, f"timed out after {got}")
        check(not m.redelivered, "redelivered set on first delivery")
        got.append(b)
        ch.basic_ack(m.delivery_tag)
        if len(got) == 3:
            break
    ch.cancel()
    check(got == [b"m0", b"m1", b"m2"], f"got {got}")
    check(count(ch, name) == 0, "queue not empty after acks")
    ch.queue_delete(name)
    c.close()


@scenario("nack-requeue")
def nack_requeue():
    c = connect()
    ch = c.channel()
    name = q("nack")
    clean(ch, [name])
    ch.queue_declare(name)
    ch.basic_publish("", name, b"again")
    it = ch.consume(name, inactivity_timeout=5)
    m, _, b = next(it)
    check(m is not None and b == b"again" and not m.redelivered, f"first delivery {m} {b}")
    ch.basic_nack(m.delivery_tag, requeue=True)
    m2, _, b2 = next(it)
    check(m2 is not None and b2 == b"again", f"no redelivery: {m2} {b2}")
    check(m2.redelivered, "redelivered flag not set")
    ch.basic_ack(m2.delivery_tag)
    ch.cancel()
    check(count(ch, name) == 0, "queue not empty")
    # requeued messages go back to their original place, ahead of later ones
    for b in (b"a", b"b", b"c"):
        ch.basic_publish("", name, b)
    ma, _, _ = ch.basic_get(name)
    mb, _, _ = ch.basic_get(name)
    ch.basic_nack(mb.delivery_tag, requeue=True)
    ch.basic_nack(ma.delivery_tag, requeue=True)
    got = [(m.redelivered, b) for m, _, b in (ch.basic_get(name, auto_ack=True) for _ in range(3))]
    check(got == [(True, b"a"), (True, b"b"), (False, b"c")], f"after two nacks got {got}")
    ch.queue_delete(name)
    c.close()


@scenario("reject-discard")
def reject_discard():
    c = connect()
    ch = c.channel()
    name = q("reject")
    clean(ch, [name])
    ch.queue_declare(name)
    ch.basic_publish("", name, b"gone")
    m, _, b = ch.basic_get(name)
    check(m is not None and b == b"gone", "no message")
    ch.basic_reject(m.delivery_tag, requeue=False)
    check(ch.basic_get(name) == (None, None, None), "message came back")
    check(count(ch, name) == 0, "queue not empty")
    ch.queue_delete(name)
    c.close()


@scenario("get-full")
def get_full():
    c = connect()
    ch = c.channel()
    name = q("getfull")
    clean(ch, [name])
    ch.queue_declare(name)
    for i in range(3):
        ch.basic_publish("", name, f"g{i}".encode())
    m, _, b = ch.basic_get(name)
    check(m is not None and b == b"g0", f"got {b}")
    check(m.message_count == 2, f"message_count {m.message_count}, expected 2")
    check(not m.redelivered and m.exchange == "" and m.routing_key == name, f"get-ok {m}")
    ch.basic_ack(m.delivery_tag)
    check(count(ch, name) == 2, "count after ack")
    ch.queue_delete(name)
    c.close()


@scenario("get-empty")
def get_empty():
    c = connect()
    ch = c.channel()
    name = q("getempty")
    clean(ch, [name])
    ch.queue_declare(name)
    check(ch.basic_get(name) == (None, None, None), "get on an empty queue returned a message")
    ch.queue_delete(name)
    c.close()


@scenario("prefetch")
def prefetch():
    c = connect()
    ch = c.channel()
    name = q("prefetch")
    clean(ch, [name])
    ch.queue_declare(name)
    for i in range(10):
        ch.basic_publish("", name, f"p{i}".encode())
    ch.basic_qos(prefetch_count=3)
    got = []
    ch.basic_consume(name, lambda _c, m, _p, b: got.append((m, b)))
    pump(c, 1.0)
    check(len(got) == 3, f"{len(got)} deliveries in flight with prefetch 3")
    ch.basic_ack(got[0][0].delivery_tag)
    pump(c, 1.0)
    check(len(got) == 4, f"{len(got)} deliveries after one ack, expected 4")
    other = c.channel()
    check(count(other, name) == 6, f"ready count {count(other, name)}, expected 6")
    ch.basic_ack(got[-1][0].delivery_tag, multiple=True)
    pump(c, 1.0)
    check(len(got) == 7, f"{len(got)} deliveries after multiple ack, expected 7")
    other.queue_delete(name)
    c.close()


@scenario("confirms-10k", timeout=180)
def confirms():
    c = connect()
    ch = c.channel()
    name = q("confirms")
    clean(ch, [name])
    ch.queue_declare(name)
    ch.confirm_delivery()
    # BlockingChannel waits for each confirm; a nack raises NackError.
    for i in range(10000):
        ch.basic_publish("", name, b"c%d" % i)
    check(count(ch, name) == 10000, f"count {count(ch, name)}")
    ch.queue_delete(name)
    c.close()


@scenario("mandatory-return")
def mandatory_return():
    c = connect()
    ch = c.channel()
    returned = []
    ch.add_on_return_callback(lambda _c, m, p, b: returned.append((m, b)))
    key = q("nowhere")
    ch.basic_publish("", key, b"lost", mandatory=True)
    pump(c, 5, lambda: returned)
    check(returned, "no basic.return")
    m, b = returned[0]
    check(m.reply_code == 312 and m.reply_text == "NO_ROUTE", f"return {m.reply_code} {m.reply_text}")
    check(m.exchange == "" and m.routing_key == key and b == b"lost", f"return {m} {b}")
    # and with confirms on: the return comes before the ack, pika raises UnroutableError
    ch.confirm_delivery()
    try:
        ch.basic_publish("", key, b"lost", mandatory=True)
        raise Fail("no UnroutableError with confirms")
    except pe.UnroutableError:
        pass
    c.close()


@scenario("exclusive-locked")
def exclusive_locked():
    c1 = connect()
    ch1 = c1.channel()
    name = q("exclusive")
    ch1.queue_declare(name, exclusive=True)
    c2 = connect()
    ch2 = c2.channel()
    expect_channel_error(lambda: ch2.queue_declare(name), 405, "RESOURCE_LOCKED")
    ch2 = c2.channel()
    expect_channel_error(lambda: ch2.basic_consume(name, lambda *a: None), 405, "RESOURCE_LOCKED")
    c1.close()
    # the owner is gone: the queue went with it
    ch2 = c2.channel()
    expect_channel_error(lambda: ch2.queue_declare(name, passive=True), 404, "NOT_FOUND")
    c2.close()


@scenario("server-named-queue")
def server_named():
    c = connect()
    ch = c.channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    check(name.startswith("amq.gen-"), f"name {name!r}")
    ch.basic_publish("", name, b"to a generated name")
    m, _, b = ch.basic_get(name, auto_ack=True)
    check(b == b"to a generated name", f"got {b}")
    c.close()


@scenario("purge-count")
def purge_count():
    c = connect()
    ch = c.channel()
    name = q("purge")
    clean(ch, [name])
    ch.queue_declare(name)
    for i in range(5):
        ch.basic_publish("", name, b"x")
    check(wait_count(ch, name, 5), "count before purge")
    holder = c.channel()
    holder.basic_get(name)  # one unacked message: purge leaves it alone
    n = ch.queue_purge(name).method.message_count
    check(n == 4, f"purge-ok message_count {n}, expected 4 (5 ready, 1 of them then unacked)")
    check(count(ch, name) == 0, "not empty after purge")
    holder.close()  # the unacked one comes back
    check(count(ch, name) == 1, f"count after closing the holder {count(ch, name)}, expected 1")
    ch.queue_delete(name)
    c.close()


@scenario("delete-count")
def delete_count():
    c = connect()
    ch = c.channel()
    name = q("delete")
    clean(ch, [name])
    ch.queue_declare(name)
    for i in range(5):
        ch.basic_publish("", name, b"x")
    check(wait_count(ch, name, 5), "count before delete")
    holder = c.channel()
    holder.basic_get(name)  # unacked messages are not counted
    n = ch.queue_delete(name).method.message_count
    check(n == 4, f"delete-ok message_count {n}, expected 4 (5 published, 1 unacked)")
    expect_channel_error(lambda: ch.queue_declare(name, passive=True), 404, "NOT_FOUND")
    c.close()


@scenario("tx-commit")
def tx_commit():
    c = connect()
    ch, other = c.channel(), c.channel()
    name = q("txc")
    clean(other, [name])
    other.queue_declare(name)
    ch.tx_select()
    for i in range(3):
        ch.basic_publish("", name, f"t{i}".encode())
    check(count(other, name) == 0, "published messages visible before commit")
    ch.tx_commit()
    check(count(other, name) == 3, f"count after commit {count(other, name)}")
    # an ack inside a transaction takes effect at commit
    m, _, b = ch.basic_get(name)
    ch.basic_ack(m.delivery_tag)
    ch.tx_commit()
    check(count(other, name) == 2, f"count after committed ack {count(other, name)}")
    other.queue_delete(name)
    c.close()


@scenario("tx-rollback")
def tx_rollback():
    c = connect()
    ch, other = c.channel(), c.channel()
    name = q("txr")
    clean(other, [name])
    other.queue_declare(name)
    ch.tx_select()
    for i in range(3):
        ch.basic_publish("", name, f"t{i}".encode())
    ch.tx_rollback()
    check(count(other, name) == 0, f"count after rollback {count(other, name)}")
    ch.basic_publish("", name, b"after")
    ch.tx_commit()
    got = drain(other, name)
    check(got == [b"after"], f"after rollback+commit got {got}")
    # an ack rolled back leaves the message unacked: closing the channel requeues it
    other.basic_publish("", name, b"kept")
    check(wait_count(other, name, 1), "kept not there")
    m, _, _ = ch.basic_get(name)
    ch.basic_ack(m.delivery_tag)
    ch.tx_rollback()
    check(count(other, name) == 0, "message ready again right after rollback")
    ch.close()
    m, _, b = other.basic_get(name, auto_ack=True)
    check(m is not None and b == b"kept" and m.redelivered, f"after rollback+close got {m} {b}")
    other.queue_delete(name)
    c.close()


@scenario("large-message-10mib", timeout=120)
def large_message():
    c = connect()
    ch = c.channel()
    name = q("large")
    clean(ch, [name])
    ch.queue_declare(name)
    size = 10 * 1024 * 1024
    body = (bytes(range(251)) * (size // 251 + 1))[:size]
    ch.basic_publish("", name, body)
    m, _, got = ch.basic_get(name, auto_ack=True)
    check(m is not None, "no message")
    check(len(got) == size and hashlib.sha256(got).digest() == hashlib.sha256(body).digest(),
          f"body differs: {len(got)} bytes")
    ch.queue_delete(name)
    c.close()


# RabbitMQ's topic semantics: "*" one word, "#" zero or more, words may be empty ("a..c"),
# the empty key has no words (so "#" and "" match it, "*" does not).
TOPIC_BINDINGS = {"q1": "a.*.c", "q2": "a.#", "q3": "*.b", "q4": "#.c", "q5": "#", "q6": "a.#.c",
                  "q7": "*", "q8": ""}
TOPIC_KEYS = ["a.b.c", "a", "a.b", "x.b", "a.b.c.d", "c", "x.y", "a.x.y.c", "", "a..c", "a.c"]
TOPIC_EXPECT = {
    "q1": ["a.b.c", "a..c"],
    "q2": ["a.b.c", "a", "a.b", "a.b.c.d", "a.x.y.c", "a..c", "a.c"],
    "q3": ["a.b", "x.b"],
    "q4": ["a.b.c", "c", "a.x.y.c", "a..c", "a.c"],
    "q5": ["a.b.c", "a", "a.b", "x.b", "a.b.c.d", "c", "x.y", "a.x.y.c", "", "a..c", "a.c"],
    "q6": ["a.b.c", "a.x.y.c", "a..c", "a.c"],
    "q7": ["a", "c"],
    "q8": [""],
}


@scenario("topic-routing")
def topic_routing():
    c = connect()
    ch = c.channel()
    ex = q("topic.ex")
    queues = {k: q(f"topic.{k}") for k in TOPIC_BINDINGS}
    clean(ch, queues.values(), [ex])
    ch.exchange_declare(ex, "topic")
    for k, pattern in TOPIC_BINDINGS.items():
        ch.queue_declare(queues[k])
        ch.queue_bind(queues[k], ex, pattern)
    for key in TOPIC_KEYS:
        ch.basic_publish(ex, key, key.encode())
    for k, want in TOPIC_EXPECT.items():
        got = [b.decode() for b in drain(ch, queues[k])]
        check(got == want, f"{TOPIC_BINDINGS[k]!r} got {got}, expected {want}")
    clean(ch, queues.values(), [ex])
    c.close()


def _headers(match, want):
    def fn():
        c = connect()
        ch = c.channel()
        ex, name = q(f"headers.{match}.ex"), q(f"headers.{match}")
        clean(ch, [name], [ex])
        ch.exchange_declare(ex, "headers")
        ch.queue_declare(name)
        ch.queue_bind(name, ex, "", arguments={"x-match": match, "a": 1, "b": "two"})
        msgs = {
            "both": {"a": 1, "b": "two"},
            "both+extra": {"a": 1, "b": "two", "c": 3},
            "only-a": {"a": 1},
            "only-b": {"b": "two", "c": 3},
            "a-differs": {"a": 2, "b": "three"},
            "a-string": {"a": "1"},  # a string never equals an integer
            "none": None,
        }
        for body, headers in msgs.items():
            ch.basic_publish(ex, "ignored", body.encode(), pika.BasicProperties(headers=headers))
        got = [b.decode() for b in drain(ch, name)]
        check(got == want, f"x-match={match} got {got}, expected {want}")
        clean(ch, [name], [ex])
        c.close()
    return fn


scenario("headers-all")(_headers("all", ["both", "both+extra"]))
scenario("headers-any")(_headers("any", ["both", "both+extra", "only-a", "only-b"]))


@scenario("stream-queue")
def stream_queue():
    """A stream queue: declared durable with x-queue-type stream, published with confirms,
    read by two consumers at their own offsets (basic.qos first, manual acks), each delivery
    carrying its x-stream-offset."""
    c = connect()
    ch = c.channel()
    name = q("stream")
    clean(ch, [name])
    ch.queue_declare(name, durable=True, arguments={"x-queue-type": "stream"})
    ch.confirm_delivery()
    for i in range(5):
        ch.basic_publish("", name, f"s{i}".encode())
    ch.basic_qos(prefetch_count=10)
    for start, want in (("first", range(5)), (3, range(3, 5))):
        got = []
        for m, p, b in ch.consume(name, inactivity_timeout=5, arguments={"x-stream-offset": start}):
            check(m is not None, f"{start}: timed out after {got}")
            got.append((b.decode(), (p.headers or {}).get("x-stream-offset")))
            ch.basic_ack(m.delivery_tag)
            if len(got) == len(want):
                break
        ch.cancel()
        check(got == [(f"s{i}", i) for i in want], f"{start}: got {got}")
    # What streams refuse: basic.get is a connection error (540).
    try:
        ch.basic_get(name)
        raise Fail("basic.get on a stream was not refused")
    except pe.ConnectionClosedByBroker as e:
        check(e.reply_code == 540, f"basic.get: {e.reply_code} {e.reply_text}")
    c = connect()
    c.channel().queue_delete(name)
    c.close()


@scenario("heartbeat")
def heartbeat():
    c = connect(heartbeat=1)
    check(c._impl.params.heartbeat == 1, f"negotiated heartbeat {c._impl.params.heartbeat}")
    t0 = time.time()
    c.sleep(5)  # idle: only heartbeats on the wire (pika sends ours while sleeping)
    check(time.time() - t0 >= 4.9, "slept less than 5 s")
    check(c.is_open, "connection closed while idle")
    hb = c._impl._heartbeat_checker
    received = getattr(hb, "_heartbeat_frames_received", None)
    check(received is not None and received >= 2, f"only {received} heartbeats from the broker in 5 s")
    ch = c.channel()
    name = ch.queue_declare("", exclusive=True).method.queue
    ch.basic_publish("", name, b"alive")
    check(ch.basic_get(name, auto_ack=True)[2] == b"alive", "connection not usable after idling")
    c.close()


@scenario("consumer-cancel-notify")
def consumer_cancel():
    c = connect()
    ch, other = c.channel(), c.channel()
    name = q("cancel")
    clean(other, [name])
    other.queue_declare(name)
    cancelled = []
    ch.add_on_cancel_callback(lambda frame: cancelled.append(frame))
    tag = ch.basic_consume(name, lambda *a: None)
    other.queue_delete(name)
    pump(c, 5, lambda: cancelled)
    check(cancelled, "no basic.cancel from the broker")
    check(cancelled[0].method.consumer_tag == tag, f"cancel for {cancelled[0].method.consumer_tag}")
    check(ch.is_open and tag not in ch.consumer_tags, "channel closed or consumer still registered")
    c.close()


def tls_params(external):
    """Parameters for AMQPS_URL (set by interop/run when the broker it starts has TLS)."""
    import ssl

    url = os.environ.get("AMQPS_URL")
    if not url:
        raise NA("no TLS listener (AMQPS_URL unset)")
    ctx = ssl.create_default_context(cafile=os.environ["AMQPS_CA"])
    if external:
        ctx.load_cert_chain(os.environ["AMQPS_CERT"], os.environ["AMQPS_KEY"])
    p = params(url)
    p.ssl_options = pika.SSLOptions(ctx, "localhost")
    if external:
        p.credentials = pika.credentials.ExternalCredentials()
    return p


def tls_round_trip(p, name):
    c = pika.BlockingConnection(p)
    ch = c.channel()
    ch.confirm_delivery()
    clean(ch, [name])
    ch.queue_declare(name)
    ch.basic_publish("", name, b"over tls")
    method, _, body = ch.basic_get(name, auto_ack=True)
    check(method is not None and body == b"over tls", f"got {body!r}")
    ch.queue_delete(name)
    c.close()


@scenario("tls-plain")
def tls_plain():
    tls_round_trip(tls_params(external=False), q("tls-plain"))


@scenario("tls-external")
def tls_external():
    # EXTERNAL with a client certificate whose common name is the user (the broker runs with
    # --ssl-cert-login-from common_name).
    tls_round_trip(tls_params(external=True), q("tls-external"))


# ---------------------------------------------------------------------------------------------
# Cross-client


def load_expected():
    with open(EXPECTED, encoding="utf-8") as f:
        return json.load(f)


def subst(v):
    return LOGIN if v == "${login}" else v


def strip_tags(typed, banned):
    """Drop entries whose tag the consumer cannot decode (recursively)."""
    tag, v = typed
    if tag == "F":
        return ["F", {k: strip_tags(x, banned) for k, x in v.items() if x[0] not in banned}]
    if tag == "A":
        return ["A", [strip_tags(x, banned) for x in v if x[0] not in banned]]
    return typed


def native(typed):
    """expected.json typed value -> what pika encodes with that tag."""
    tag, v = typed
    if tag == "S":
        return v
    if tag == "x":
        return bytes.fromhex(v)
    if tag in ("I", "l"):
        return int(v)
    if tag == "t":
        return bool(v)
    if tag == "D":
        return decimal.Decimal(v[1]).scaleb(-v[0])
    if tag == "T":
        return datetime.datetime.fromtimestamp(v, datetime.timezone.utc)
    if tag == "F":
        return {k: native(x) for k, x in v.items()}
    if tag == "A":
        return [native(x) for x in v]
    if tag == "V":
        return None
    raise ValueError(f"pika cannot encode tag {tag}")


PROPS = ["content_type", "content_encoding", "delivery_mode", "priority", "correlation_id", "reply_to",
         "expiration", "message_id", "timestamp", "type", "user_id", "app_id", "cluster_id"]


def cross_publish():
    exp = load_expected()
    me = exp["publishers"][ME]
    c = connect()
    ch = c.channel()
    ch.confirm_delivery()
    for consumer in CLIENTS:
        banned = set(exp["consumers"].get(consumer, {}).get("cannot_decode", []))
        headers = strip_tags(["F", me["headers"]], banned)[1]
        props = pika.BasicProperties(headers=native(["F", headers]),
                                     **{k: subst(v) for k, v in me["properties"].items()})
        name = f"xc.{ME}.{consumer}"
        ch.queue_delete(name)
        ch.queue_declare(name)
        ch.basic_publish("", name, me["body"].encode(), props, mandatory=True)
    c.close()


def compare(typed, got, path, errs):
    tag, v = typed

    def bad(what):
        errs.append(f"{path}: {what} (expected {tag} {v!r}, got {type(got).__name__} {got!r})")

    if tag == "S":
        if not (isinstance(got, str) and got == v):
            bad("string")
    elif tag == "x":
        if not (isinstance(got, bytes) and got == bytes.fromhex(v)):
            bad("bytes")
    elif tag in "bBsuIil":
        # pika decodes l as pika.compat.long, an int subclass
        if not (isinstance(got, int) and not isinstance(got, bool) and got == v):
            bad("integer")
    elif tag in "fd":  # pika quirk: floats are decoded as int(value)
        if not (isinstance(got, int) and not isinstance(got, bool) and got == math.trunc(v)):
            bad("float (pika truncates to int)")
    elif tag == "t":
        if not (type(got) is bool and got == v):
            bad("bool")
    elif tag == "D":
        if not (isinstance(got, decimal.Decimal) and got == decimal.Decimal(v[1]).scaleb(-v[0])):
            bad("decimal")
    elif tag == "T":
        want = datetime.datetime.fromtimestamp(v, datetime.timezone.utc)
        if isinstance(got, datetime.datetime) and got.tzinfo is None:
            got = got.replace(tzinfo=datetime.timezone.utc)
        if not (isinstance(got, datetime.datetime) and got == want):
            bad("timestamp")
    elif tag == "V":
        if got is not None:
            bad("void")
    elif tag == "F":
        if not isinstance(got, dict):
            bad("table")
            return
        if set(got) != set(v):
            errs.append(f"{path}: keys {sorted(got)} != expected {sorted(v)}")
        for k, x in v.items():
            if k in got:
                compare(x, got[k], f"{path}.{k}", errs)
    elif tag == "A":
        if not isinstance(got, list) or len(got) != len(v):
            bad("array")
            return
        for i, x in enumerate(v):
            compare(x, got[i], f"{path}[{i}]", errs)
    else:
        bad("unknown tag")


def cross_consume():
    exp = load_expected()
    banned = set(exp["consumers"][ME]["cannot_decode"])
    c = connect()
    for pub in CLIENTS:
        name = f"cross-from-{pub}"
        try:
            ch = c.channel()
            want = exp["publishers"][pub]
            qn = f"xc.{pub}.{ME}"
            m, p, body = ch.basic_get(qn, auto_ack=True)
            check(m is not None, f"no message in {qn}")
            errs = []
            if body != want["body"].encode():
                errs.append(f"body {body!r}")
            for k in PROPS:
                w = subst(want["properties"].get(k))
                if getattr(p, k) != w:
                    errs.append(f"property {k}: {getattr(p, k)!r} != {w!r}")
            compare(strip_tags(["F", want["headers"]], banned), p.headers, "headers", errs)
            rest = ch.basic_get(qn, auto_ack=True)
            if rest[0] is not None:
                errs.append("more than one message")
            ch.queue_delete(qn)
            ch.close()
            check(not errs, "; ".join(errs))
            print(f"PASS {name}", flush=True)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL {name}: {type(e).__name__}: {e}".replace("\n", " "), flush=True)
            if c.is_closed:
                c = connect()
    c.close()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "scenarios"
    only = set(os.environ.get("INTEROP_ONLY", "").split())
    if mode == "scenarios":
        for name, fn, timeout in SCENARIOS:
            if not only or name in only:
                run_one(name, fn, timeout)
    elif mode == "cross-publish":
        run_one("cross-publish", cross_publish, 60)
    elif mode == "cross-consume":
        signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(60)
        cross_consume()
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
