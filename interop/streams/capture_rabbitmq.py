#!/usr/bin/env python3
"""Capture how a RabbitMQ node treats stream queues (x-queue-type=stream) over AMQP 0-9-1.

Every case runs on a fresh connection and channel. Each outcome is recorded as
one of:

  ok                 the operation succeeded (details in "detail")
  channel.close      the broker closed the channel (reply code + text)
  connection.close   the broker closed the connection (reply code + text)
  client-error       pika raised something else (e.g. a nack or return)

Queue names are prefixed ``sref-`` and every queue the script creates is
deleted at the end.

Usage:
    capture_rabbitmq.py --amqp 127.0.0.1:5681 [--mgmt http://127.0.0.1:15681]
                        [--user guest --password guest] [--vhost /]
                        [--json out.json] [--markdown out.md]

Requires pika 1.3.2 (the field-table hooks below patch pika.data).
"""

import argparse
import base64
import datetime
import decimal
import json
import struct
import sys
import time
import urllib.parse
import urllib.request
import uuid

import pika
import pika.data
import pika.exceptions as pex

# ---------------------------------------------------------------------------
# Field-table hooks: send values with an explicit AMQP type, and remember the
# type tag of every decoded table entry.
# ---------------------------------------------------------------------------


class Typed:
    """A field-table value with an explicit AMQP 0-9-1 type tag.

    Tags: I (int32), l (int64 signed), L (pika's tag for negative ints), T (timestamp,
    seconds), S (long string), s (int16), b (int8), d (double), f (float), t (bool),
    x (byte array).
    """

    def __init__(self, kind, value):
        self.kind = kind
        self.value = value

    def __repr__(self):
        return "%s:%r" % (self.kind, self.value)


_ORIG_ENCODE_VALUE = pika.data.encode_value


def _encode_value(pieces, value):
    if not isinstance(value, Typed):
        return _ORIG_ENCODE_VALUE(pieces, value)
    k, v = value.kind, value.value
    fmt = {"I": ">ci", "l": ">cq", "L": ">cq", "T": ">cQ", "s": ">ch", "b": ">cb",
           "d": ">cd", "f": ">cf", "t": ">cB"}
    if k in fmt:
        pieces.append(struct.pack(fmt[k], k.encode(), v))
        return len(struct.pack(fmt[k], k.encode(), v))
    if k in ("S", "x"):
        raw = v.encode() if isinstance(v, str) else v
        pieces.append(struct.pack(">cI", k.encode(), len(raw)) + raw)
        return 5 + len(raw)
    raise ValueError("unsupported Typed kind %r" % k)


class KDict(dict):
    """A decoded field table that also remembers each entry's type tag."""
    kinds = None


_EXACT = {"b": ">b", "l": ">q", "L": ">q", "f": ">f", "d": ">d"}


def _decode_table(encoded, offset):
    result = KDict()
    result.kinds = {}
    size = struct.unpack_from(">I", encoded, offset)[0]
    offset += 4
    limit = offset + size
    while offset < limit:
        key, offset = pika.data.decode_short_string(encoded, offset)
        kind = encoded[offset:offset + 1].decode()
        result.kinds[key] = kind
        if kind in _EXACT:
            # pika 1.3.2 decodes b/l as unsigned and truncates f/d to int.
            fmt = _EXACT[kind]
            value = struct.unpack_from(fmt, encoded, offset + 1)[0]
            offset += 1 + struct.calcsize(fmt)
        else:
            value, offset = pika.data.decode_value(encoded, offset)
        result[key] = value
    return result, offset


pika.data.encode_value = _encode_value
pika.data.decode_table = _decode_table


def typed_table(table):
    """{key: 'kind:value'} rendering of a decoded table, for the report."""
    if table is None:
        return None
    kinds = getattr(table, "kinds", None) or {}
    out = {}
    for key, val in table.items():
        if isinstance(val, bytes):
            val = val.decode(errors="replace")
        elif isinstance(val, datetime.datetime):
            val = val.isoformat()
        out[key] = "%s:%s" % (kinds.get(key, "?"), val)
    return out


# ---------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------


class Capture:
    def __init__(self, args):
        host, _, port = args.amqp.rpartition(":")
        self.params = pika.ConnectionParameters(
            host=host or "127.0.0.1", port=int(port), virtual_host=args.vhost,
            credentials=pika.PlainCredentials(args.user, args.password),
            heartbeat=0, blocked_connection_timeout=30)
        self.mgmt = args.mgmt.rstrip("/")
        self.auth = base64.b64encode(("%s:%s" % (args.user, args.password)).encode()).decode()
        self.vhost = args.vhost
        self.run_id = uuid.uuid4().hex[:6]
        self.created = set()
        self.results = []
        self.topic = None

    # -- naming / bookkeeping -------------------------------------------------
    def qname(self, label):
        name = "sref-%s-%s" % (self.run_id, label)
        self.created.add(name)
        return name

    def record(self, case, outcome, code=None, text=None, detail=None):
        row = {"topic": self.topic, "case": case, "outcome": outcome,
               "code": code, "text": text, "detail": detail}
        self.results.append(row)
        print(json.dumps(row, default=str), flush=True)
        return row

    def connect(self):
        conn = pika.BlockingConnection(self.params)
        return conn, conn.channel()

    def case(self, name, fn):
        """Run fn(conn, ch) on a fresh connection; record ok/close outcome."""
        conn = ch = None
        try:
            conn, ch = self.connect()
            detail = fn(conn, ch)
            return self.record(name, "ok", detail=detail)
        except pex.ChannelWrongStateError as e:
            # The broker closed the channel asynchronously (e.g. after a
            # basic.ack); pika reports it on the next call. Recover the reason.
            reason = getattr(ch, "_closing_reason", None)
            if isinstance(reason, pex.ChannelClosedByBroker):
                return self.record(name, "channel.close", reason.reply_code,
                                   reason.reply_text, "reported asynchronously")
            return self.record(name, "client-error", None, "%s: %r" % (type(e).__name__, e))
        except pex.ChannelClosedByBroker as e:
            return self.record(name, "channel.close", e.reply_code, e.reply_text,
                               getattr(e, "_sref_detail", None))
        except pex.ConnectionClosedByBroker as e:
            return self.record(name, "connection.close", e.reply_code, e.reply_text)
        except (pex.UnroutableError, pex.NackError) as e:
            return self.record(name, "client-error", None, type(e).__name__, [
                {"method": type(m.method).__name__,
                 "reply_code": getattr(m.method, "reply_code", None),
                 "reply_text": getattr(m.method, "reply_text", None),
                 "body": m.body} for m in e.messages])
        except pex.AMQPError as e:
            return self.record(name, "client-error", None, "%s: %r" % (type(e).__name__, e))
        finally:
            if conn is not None and conn.is_open:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - best effort
                    pass

    # -- helpers ---------------------------------------------------------------
    def admin(self, fn):
        """Run fn(ch) on a throwaway connection (setup / teardown)."""
        conn, ch = self.connect()
        try:
            return fn(ch)
        finally:
            if conn.is_open:
                conn.close()

    def make_stream(self, label, n=0, burst=False, args=None):
        name = self.qname(label)
        qargs = {"x-queue-type": "stream"}
        qargs.update(args or {})

        def setup(ch):
            ch.queue_declare(name, durable=True, arguments=qargs)
            if n:
                publish_bodies(ch, name, ["m%d" % i for i in range(n)], burst=burst)
        self.admin(setup)
        return name

    def exists(self, name):
        try:
            self.admin(lambda ch: ch.queue_declare(name, passive=True))
            return True
        except pex.ChannelClosedByBroker:
            return False

    def delete(self, name):
        try:
            self.admin(lambda ch: ch.queue_delete(name))
        except pex.AMQPError:
            pass

    def mgmt_get(self, path):
        req = urllib.request.Request(self.mgmt + path,
                                     headers={"Authorization": "Basic " + self.auth})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read().decode())

    def mgmt_queue(self, name):
        return self.mgmt_get("/api/queues/%s/%s" % (
            urllib.parse.quote(self.vhost, safe=""), urllib.parse.quote(name, safe="")))

    def mgmt_messages(self, name, settle=6.0):
        """messages/messages_ready/unacked after a stats interval has passed."""
        time.sleep(settle)
        q = self.mgmt_queue(name)
        return {k: q.get(k) for k in ("messages", "messages_ready",
                                      "messages_unacknowledged")}


def pump(seconds, *conns):
    """Service the connections for the full duration.

    BlockingConnection.process_data_events(time_limit=T) returns as soon as it
    has dispatched anything, so a single call is not a wait.
    """
    deadline = time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        for conn in conns:
            conn.process_data_events(time_limit=min(remaining, 0.05))


def publish_bodies(ch, queue, bodies, burst=False, headers=None):
    """Publish bodies to queue via the default exchange.

    burst=False: publisher confirms, one message at a time (each waits for its
    ack, so each normally lands in its own stream chunk).
    burst=True: no confirms, all written back to back (the broker normally
    batches them into fewer chunks); we then sleep 1 s to let them commit.
    """
    if not burst:
        ch.confirm_delivery()
    for b in bodies:
        props = pika.BasicProperties(headers=(headers or {}).get(b))
        ch.basic_publish("", queue, b.encode(), props)
    if burst:
        time.sleep(1.0)


def consume_collect(conn, ch, queue, args=None, prefetch=100, wait=2.0, ack=True,
                    during=None, tag=None):
    """Consume for `wait` seconds; returns list of delivery dicts."""
    got = []

    def on_msg(c, method, props, body):
        got.append({"body": body.decode(errors="replace"),
                    "tag": method.delivery_tag,
                    "redelivered": method.redelivered,
                    "headers": typed_table(props.headers)})
        if ack:
            c.basic_ack(method.delivery_tag)

    if prefetch is not None:
        ch.basic_qos(prefetch_count=prefetch)
    ch.basic_consume(queue, on_msg, arguments=args, consumer_tag=tag)
    if during is None:
        pump(wait, conn)
    else:
        pump(wait / 2, conn)
        during()
        pump(wait / 2, conn)
    return got


def bodies(deliveries):
    return [d["body"] for d in deliveries]


def offsets(deliveries):
    return [d["headers"].get("x-stream-offset") if d["headers"] else None
            for d in deliveries]


def sync_probe(conn, ch, queue):
    """Flush async errors (acks etc.): wait a little, then do a sync method."""
    pump(0.5, conn)
    ch.queue_declare(queue, passive=True)


# ---------------------------------------------------------------------------
# Topics
# ---------------------------------------------------------------------------


def t1_declare(c):
    c.topic = "1 queue.declare"

    def declare(label, durable=True, exclusive=False, auto_delete=False, args=None,
                keep=False):
        name = c.qname(label)
        qargs = {"x-queue-type": "stream"}
        qargs.update(args or {})

        def fn(conn, ch):
            ok = ch.queue_declare(name, durable=durable, exclusive=exclusive,
                                  auto_delete=auto_delete, arguments=qargs)
            m = ok.method
            detail = {"queue": m.queue == name, "message_count": m.message_count,
                      "consumer_count": m.consumer_count}
            try:
                detail["stored_arguments"] = c.mgmt_queue(name).get("arguments")
            except Exception as e:  # noqa: BLE001
                detail["stored_arguments"] = "mgmt error %s" % e
            return detail
        r = c.case(label + " " + json.dumps({k: repr(v) if isinstance(v, (Typed, bytes)) else v
                                             for k, v in (args or {}).items()})
                   + ("" if durable else " durable=false")
                   + (" exclusive=true" if exclusive else "")
                   + (" auto_delete=true" if auto_delete else ""), fn)
        if r["outcome"] != "ok":
            r["detail"] = "queue exists afterwards: %s" % c.exists(name)
        if not keep:
            c.delete(name)
        return name, r

    declare("durable")
    declare("nondurable", durable=False)
    declare("exclusive", exclusive=True)
    declare("autodelete", auto_delete=True)
    declare("nondurable-exclusive-autodelete", durable=False, exclusive=True,
            auto_delete=True)

    # Redeclaration against an existing stream.
    base = c.make_stream("redecl", args={"x-max-length-bytes": Typed("l", 1000000)})

    def redecl(label, fn):
        c.case("redeclare: " + label, fn)

    redecl("passive", lambda conn, ch: vars(ch.queue_declare(base, passive=True).method))
    redecl("same args", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-queue-type": "stream",
                                       "x-max-length-bytes": Typed("l", 1000000)}).method))
    redecl("same args, x-max-length-bytes as int32 'I'", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-queue-type": "stream",
                                       "x-max-length-bytes": Typed("I", 1000000)}).method))
    redecl("different x-max-length-bytes", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-queue-type": "stream",
                                       "x-max-length-bytes": Typed("l", 2000000)}).method))
    redecl("x-max-length-bytes omitted", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-queue-type": "stream"}).method))
    redecl("added x-max-age", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-queue-type": "stream",
                                       "x-max-length-bytes": Typed("l", 1000000),
                                       "x-max-age": "1D"}).method))
    redecl("no x-queue-type (same other args)", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-max-length-bytes": Typed("l", 1000000)}).method))
    redecl("x-queue-type=classic", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-queue-type": "classic",
                                       "x-max-length-bytes": Typed("l", 1000000)}).method))
    redecl("x-queue-type=quorum", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, arguments={"x-queue-type": "quorum",
                                       "x-max-length-bytes": Typed("l", 1000000)}).method))
    redecl("durable=false", lambda conn, ch: vars(ch.queue_declare(
        base, durable=False, arguments={"x-queue-type": "stream",
                                        "x-max-length-bytes": Typed("l", 1000000)}).method))
    redecl("exclusive=true", lambda conn, ch: vars(ch.queue_declare(
        base, durable=True, exclusive=True,
        arguments={"x-queue-type": "stream", "x-max-length-bytes": Typed("l", 1000000)}).method))
    redecl("passive on missing queue", lambda conn, ch: vars(ch.queue_declare(
        c.qname("missing"), passive=True).method))
    c.delete(base)

    # Server-named stream.
    def server_named(conn, ch):
        ok = ch.queue_declare("", durable=True, arguments={"x-queue-type": "stream"})
        ch.queue_delete(ok.method.queue)
        return {"queue": ok.method.queue}
    c.case("server-named (queue='')", server_named)

    # Arguments.
    arg_cases = [
        ("mlb-long", {"x-max-length-bytes": Typed("l", 1000000)}),
        ("mlb-int32", {"x-max-length-bytes": Typed("I", 1000000)}),
        ("mlb-string", {"x-max-length-bytes": "1000000"}),
        ("mlb-zero", {"x-max-length-bytes": Typed("l", 0)}),
        ("mlb-neg-signed-l", {"x-max-length-bytes": Typed("l", -1)}),
        ("mlb-neg-L", {"x-max-length-bytes": Typed("L", -1)}),
        ("mlb-L", {"x-max-length-bytes": Typed("L", 1000000)}),
        ("mlb-neg-int32", {"x-max-length-bytes": Typed("I", -1)}),
        ("age-7D", {"x-max-age": "7D"}),
        ("age-12h", {"x-max-age": "12h"}),
        ("age-30m", {"x-max-age": "30m"}),
        ("age-10s", {"x-max-age": "10s"}),
        ("age-1Y", {"x-max-age": "1Y"}),
        ("age-1M", {"x-max-age": "1M"}),
        ("age-bogus", {"x-max-age": "bogus"}),
        ("age-10-nounit", {"x-max-age": "10"}),
        ("age-0s", {"x-max-age": "0s"}),
        ("age-empty", {"x-max-age": ""}),
        ("age-D-nodigits", {"x-max-age": "D"}),
        ("age-neg-1h", {"x-max-age": "-1h"}),
        ("age-1.5h", {"x-max-age": "1.5h"}),
        ("age-1W", {"x-max-age": "1W"}),
        ("age-7D-trailing-space", {"x-max-age": "7D "}),
        ("age-007D", {"x-max-age": "007D"}),
        ("age-bytes-7D", {"x-max-age": b"7D"}),
        ("age-lower-7d", {"x-max-age": "7d"}),
        ("age-int", {"x-max-age": Typed("l", 3600)}),
        ("seg-long", {"x-stream-max-segment-size-bytes": Typed("l", 1000000)}),
        ("seg-string", {"x-stream-max-segment-size-bytes": "1000000"}),
        ("seg-neg", {"x-stream-max-segment-size-bytes": Typed("l", -1)}),
        ("seg-huge", {"x-stream-max-segment-size-bytes": Typed("l", 10 ** 10)}),
        ("ics-1", {"x-initial-cluster-size": Typed("l", 1)}),
        ("ics-3", {"x-initial-cluster-size": Typed("l", 3)}),
        ("ics-0", {"x-initial-cluster-size": Typed("l", 0)}),
        ("ics-string", {"x-initial-cluster-size": "2"}),
        ("max-length", {"x-max-length": Typed("l", 10)}),
        ("message-ttl", {"x-message-ttl": Typed("l", 1000)}),
        ("dlx", {"x-dead-letter-exchange": "dlx"}),
        ("dlrk", {"x-dead-letter-routing-key": "rk"}),
        ("overflow-reject-publish", {"x-overflow": "reject-publish"}),
        ("overflow-drop-head", {"x-overflow": "drop-head"}),
        ("max-priority", {"x-max-priority": Typed("l", 10)}),
        ("sac-true", {"x-single-active-consumer": True}),
        ("sac-false", {"x-single-active-consumer": False}),
        ("expires", {"x-expires": Typed("l", 10000)}),
        ("leader-client-local", {"x-queue-leader-locator": "client-local"}),
        ("leader-balanced", {"x-queue-leader-locator": "balanced"}),
        ("leader-random", {"x-queue-leader-locator": "random"}),
        ("leader-least-leaders", {"x-queue-leader-locator": "least-leaders"}),
        ("leader-bogus", {"x-queue-leader-locator": "bogus"}),
        ("queue-mode-lazy", {"x-queue-mode": "lazy"}),
        ("queue-version", {"x-queue-version": Typed("l", 2)}),
        ("delivery-limit", {"x-delivery-limit": Typed("l", 5)}),
        ("max-in-memory-length", {"x-max-in-memory-length": Typed("l", 5)}),
        ("quorum-initial-group-size", {"x-quorum-initial-group-size": Typed("l", 1)}),
        ("unknown-x-arg", {"x-foo-bar": "baz"}),
        ("non-x-arg", {"foo": "bar"}),
    ]
    for label, args in arg_cases:
        declare("arg-" + label, args=args)


def t2_publish(c):
    c.topic = "2 basic.publish"
    q = c.make_stream("pub")

    def confirmed(conn, ch):
        ch.confirm_delivery()
        ch.basic_publish("", q, b"confirmed")  # raises NackError on nack
        ch.basic_publish("", q, b"confirmed-mandatory", mandatory=True)
        return "basic.ack received for plain and mandatory publish"
    c.case("confirm mode publish (plain + mandatory, routable)", confirmed)

    def unroutable(conn, ch):
        ch.confirm_delivery()
        ch.basic_publish("", c.qname("nowhere"), b"x", mandatory=True)
        return "no basic.return"
    c.case("confirm mode, mandatory, unroutable (default exchange, no such queue)", unroutable)

    def via_exchange(conn, ch):
        ex = "sref-%s-fanout" % c.run_id
        ch.exchange_declare(ex, "fanout", auto_delete=True)
        ch.queue_bind(q, ex)
        ch.confirm_delivery()
        ch.basic_publish(ex, "", b"via-fanout")
        ch.queue_unbind(q, ex)
        ch.exchange_delete(ex)
        return "queue.bind ok, publish via fanout acked"
    c.case("queue.bind stream to fanout exchange + publish", via_exchange)

    def tx_commit(conn, ch):
        ch.tx_select()
        ch.basic_publish("", q, b"tx-commit")
        ch.tx_commit()
        return "tx.select-ok, tx.commit-ok"
    c.case("tx.select + publish + tx.commit", tx_commit)

    def tx_rollback(conn, ch):
        ch.tx_select()
        ch.basic_publish("", q, b"tx-rollback")
        ch.tx_rollback()
        return "tx.rollback-ok"
    c.case("tx.select + publish + tx.rollback", tx_rollback)

    def props(conn, ch):
        ch.confirm_delivery()
        ch.basic_publish("", q, b"with-props", pika.BasicProperties(
            content_type="text/plain", delivery_mode=2, priority=5,
            correlation_id="cid", reply_to="rt", expiration="60000",
            message_id="mid", timestamp=1700000000, type="t", user_id="guest",
            app_id="app", headers={"h-str": "v", "h-int": 7}))
        return "acked"
    c.case("publish with all basic properties (expiration=60000 etc.)", props)

    time.sleep(0.5)

    def readback(conn, ch):
        got = []

        def on_msg(cc, method, p, body):
            got.append({"body": body.decode(), "props": {
                k: (typed_table(v) if k == "headers" else v)
                for k, v in vars(p).items() if v is not None}})
            cc.basic_ack(method.delivery_tag)
        ch.basic_qos(prefetch_count=100)
        ch.basic_consume(q, on_msg, arguments={"x-stream-offset": "first"})
        pump(2, conn)
        return got
    c.case("read back everything published in topic 2 (offset=first)", readback)
    c.delete(q)


HEADER_TYPES = [
    ("b int8 -5", Typed("b", -5)),
    ("s int16 -300", Typed("s", -300)),
    ("I int32 7", Typed("I", 7)),
    ("l int64 7", Typed("l", 7)),
    ("l int64 2^40", Typed("l", 2 ** 40)),
    ("l int64 -7", Typed("l", -7)),
    ("L -7", Typed("L", -7)),
    ("T timestamp 1700000000", Typed("T", 1700000000)),
    ("d double 1.5", Typed("d", 1.5)),
    ("f float 2.5", Typed("f", 2.5)),
    ("t bool true", True),
    ("S longstr", "str"),
    ("x bytes 00 01", b"\x00\x01"),
    ("V void", None),
    ("F nested table", {"inner": Typed("I", 1)}),
    ("F empty table", {}),
    ("A array", [Typed("I", 1), "two"]),
    ("A empty array", []),
    ("D decimal 1.25", decimal.Decimal("1.25")),
    ("user-supplied x-stream-offset \"fake\"", "fake"),
]


def t2b_header_types(c):
    c.topic = "2b header types through a stream"
    q = c.make_stream("hdr")
    for label, value in HEADER_TYPES:
        key = "x-stream-offset" if label.startswith("user-supplied") else "h"

        def fn(conn, ch, key=key, value=value, label=label):
            ch.confirm_delivery()
            ch.basic_publish("", q, label.encode(),
                             pika.BasicProperties(headers={key: value}))
            got = []
            ch.basic_qos(prefetch_count=1000)
            ch.basic_consume(q, lambda cc, m, p, body: got.append((body.decode(), p.headers)),
                             arguments={"x-stream-offset": "last"})
            pump(1.0, conn)
            mine = [h for b, h in got if b == label]
            if not mine:
                return "published; not read back"
            h = mine[0] or {}
            kinds = getattr(h, "kinds", {}) or {}
            v = h.get(key, "<absent>")
            if isinstance(v, bytes):
                v = v.hex()
            return {"sent": repr(value), "received": "%s:%r" % (kinds.get(key, "-"), v),
                    "all header keys": sorted(h)}
        c.case(label, fn)
    c.delete(q)


def t3_consume(c):
    c.topic = "3 basic.consume"
    q = c.make_stream("cons", n=3)
    noop = lambda *a: None  # noqa: E731

    c.case("no basic.qos (prefetch 0), manual ack",
           lambda conn, ch: ch.basic_consume(q, noop))
    c.case("no basic.qos, auto_ack=true",
           lambda conn, ch: ch.basic_consume(q, noop, auto_ack=True))

    def qos_noack(conn, ch):
        ch.basic_qos(prefetch_count=10)
        return ch.basic_consume(q, noop, auto_ack=True)
    c.case("basic.qos 10 then auto_ack=true", qos_noack)

    def ok_consume(conn, ch):
        got = consume_collect(conn, ch, q, args={"x-stream-offset": "first"}, prefetch=10)
        return {"bodies": bodies(got)}
    c.case("basic.qos 10 global=false, manual ack, offset=first", ok_consume)

    def global_only(conn, ch):
        ch.basic_qos(prefetch_count=10, global_qos=True)
        return ch.basic_consume(q, noop, arguments={"x-stream-offset": "first"})
    c.case("basic.qos 10 global=true only, then consume", global_only)

    def global_and_consumer(conn, ch):
        ch.basic_qos(prefetch_count=10, global_qos=False)
        ch.basic_qos(prefetch_count=20, global_qos=True)
        return ch.basic_consume(q, noop, arguments={"x-stream-offset": "first"})
    c.case("basic.qos 10 global=false + 20 global=true, then consume", global_and_consumer)

    def global_zero(conn, ch):
        ch.basic_qos(prefetch_count=10, global_qos=False)
        ch.basic_qos(prefetch_count=0, global_qos=True)
        return ch.basic_consume(q, noop, arguments={"x-stream-offset": "first"})
    c.case("basic.qos 10 global=false + 0 global=true, then consume", global_zero)

    def qos_after(conn, ch):
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, noop, arguments={"x-stream-offset": "first"})
        ch.basic_qos(prefetch_count=5, global_qos=True)
        sync_probe(conn, ch, q)
        return "basic.qos global=true after consume accepted, channel still open"
    c.case("consume (prefetch 1) then basic.qos global=true", qos_after)

    def prefetch_size(conn, ch):
        ch.basic_qos(prefetch_count=10, prefetch_size=1000)
        return ch.basic_consume(q, noop)
    c.case("basic.qos prefetch_size=1000", prefetch_size)

    def exclusive(conn, ch):
        ch.basic_qos(prefetch_count=10)
        tag = ch.basic_consume(q, noop, exclusive=True)
        return {"consumer_tag": tag}
    c.case("exclusive consume", exclusive)

    def exclusive_then_other(queue):
        def fn(conn, ch):
            a, b = [], []
            ch.basic_qos(prefetch_count=10)
            ch.basic_consume(queue, lambda cc, m, p, body: a.append(body.decode()),
                             exclusive=True, arguments=offset_first(queue))
            ch2 = conn.channel()
            ch2.basic_qos(prefetch_count=10)
            try:
                ch2.basic_consume(queue, lambda cc, m, p, body: b.append(body.decode()),
                                  arguments=offset_first(queue))
            except pex.ChannelClosedByBroker as e:
                e._sref_detail = "first (exclusive) consume succeeded; second consume refused"
                raise
            pump(1.5, conn)
            return {"exclusive consumer got": a, "second consumer got": b}
        return fn

    def offset_first(queue):
        return {"x-stream-offset": "first"} if queue == q else None
    c.case("exclusive consume, then second consumer on another channel",
           exclusive_then_other(q))
    cq = c.qname("classic-excl")
    c.admin(lambda ch: ch.queue_declare(cq, auto_delete=False))
    c.case("(baseline: classic queue) exclusive consume, then second consumer",
           exclusive_then_other(cq))
    c.delete(cq)

    def other_then_exclusive(conn, ch):
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(q, noop)
        ch2 = conn.channel()
        ch2.basic_qos(prefetch_count=10)
        return ch2.basic_consume(q, noop, exclusive=True)
    c.case("consumer, then exclusive consume on another channel", other_then_exclusive)

    def cancel(conn, ch):
        ch.basic_qos(prefetch_count=10)
        tag = ch.basic_consume(q, noop)
        ch.basic_cancel(tag)
        return "basic.cancel-ok"
    c.case("basic.cancel", cancel)

    def priority(conn, ch):
        ch.basic_qos(prefetch_count=10)
        return ch.basic_consume(q, noop, arguments={"x-priority": 5})
    c.case("consume with x-priority=5", priority)

    def not_stream_arg(conn, ch):
        cq = c.qname("classic-offset")
        ch.queue_declare(cq, auto_delete=True)
        ch.basic_qos(prefetch_count=10)
        return ch.basic_consume(cq, noop, arguments={"x-stream-offset": "first"})
    c.case("x-stream-offset on a classic queue", not_stream_arg)
    c.delete(q)


OFFSET_SPECS = [
    ("(no x-stream-offset)", None),
    ("first", "first"),
    ("last", "last"),
    ("next", "next"),
    ("long 0", Typed("l", 0)),
    ("long 5", Typed("l", 5)),
    ("int32 5", Typed("I", 5)),
    ("short 5", Typed("s", 5)),
    ("byte 5", Typed("b", 5)),
    ("long 9", Typed("l", 9)),
    ("long 10 (== next offset)", Typed("l", 10)),
    ("long 100 (beyond end)", Typed("l", 100)),
    ("long -1 (signed 'l')", Typed("l", -1)),
    ("'L' -1", Typed("L", -1)),
    ("int32 -1", Typed("I", -1)),
    ("string \"5\"", "5"),
    ("double 5.0", Typed("d", 5.0)),
    ("timestamp now-3600", "TS_PAST"),
    ("timestamp now+3600", "TS_FUTURE"),
    ("timestamp 0", Typed("T", 0)),
    ("pika datetime now-3600", "DT_PAST"),
    ("long ms timestamp now-3600 (not a T)", "MS_PAST"),
    ("\"10m\"", "10m"),
    ("\"1h\"", "1h"),
    ("\"30s\"", "30s"),
    ("\"7D\"", "7D"),
    ("\"1Y\"", "1Y"),
    ("\"1s\"", "1s"),
    ("\"10\" (no unit)", "10"),
    ("\"0s\"", "0s"),
    ("\"-1h\"", "-1h"),
    ("\"bogus\"", "bogus"),
    ("\"\" (empty string)", ""),
    ("bytes 'x' \"first\"", Typed("x", b"first")),
    ("bytes 'x' \"5\"", Typed("x", b"5")),
    ("\"FIRST\" (upper case)", "FIRST"),
    ("bool true", True),
]


def resolve_offset(spec):
    now = int(time.time())
    if spec == "TS_PAST":
        return Typed("T", now - 3600)
    if spec == "TS_FUTURE":
        return Typed("T", now + 3600)
    if spec == "DT_PAST":
        return datetime.datetime.utcfromtimestamp(now - 3600)
    if spec == "MS_PAST":
        return Typed("l", (now - 3600) * 1000)
    return spec


def t4_offsets(c, burst=False):
    mode = "burst" if burst else "confirmed"
    c.topic = "4 x-stream-offset (%s publish)" % mode
    specs = OFFSET_SPECS if not burst else [
        s for s in OFFSET_SPECS if s[0] in (
            "(no x-stream-offset)", "first", "last", "next", "long 0", "long 5",
            "long 9", "timestamp now-3600", "\"10m\"")]
    for label, spec in specs:
        q = c.make_stream("off", n=10, burst=burst)
        value = resolve_offset(spec)

        def fn(conn, ch, q=q, value=value):
            args = None if value is None else {"x-stream-offset": value}

            def live():
                ch2 = conn.channel()
                ch2.confirm_delivery()
                ch2.basic_publish("", q, b"live")
                ch2.close()
            got = consume_collect(conn, ch, q, args=args, prefetch=100, wait=3.0,
                                  during=live)
            return {"bodies": bodies(got), "x-stream-offset": offsets(got),
                    "first_delivery_headers": got[0]["headers"] if got else None,
                    "other_header_keys": sorted({k for d in got for k in (d["headers"] or {})
                                                 if k != "x-stream-offset"}),
                    "redelivered": sorted({d["redelivered"] for d in got})}
        c.case("offset %s [sent as %r]" % (label, value), fn)
        c.delete(q)


def t5_acks(c):
    c.topic = "5 acks"
    q = c.make_stream("ack", n=10)

    def prefetch2_wrap(conn, ch):
        got = []

        def on_msg(cc, method, p, body):
            got.append({"body": body.decode(), "tag": method.delivery_tag})
        ch.basic_qos(prefetch_count=2)
        ch.basic_consume(q, on_msg, arguments={"x-stream-offset": "first"})
        pump(1.5, conn)
        step = {"1 received before any ack": [g["body"] for g in got]}
        ch.basic_ack(got[1]["tag"])
        pump(1.5, conn)
        step["2 after ack of 2nd only"] = [g["body"] for g in got]
        ch.basic_ack(got[0]["tag"])
        pump(1.5, conn)
        step["3 after ack of 1st too"] = [g["body"] for g in got]
        ch.basic_ack(got[-1]["tag"], multiple=True)
        pump(1.5, conn)
        step["4 after multiple ack of last"] = [g["body"] for g in got]
        return step
    c.case("prefetch 2, ack gating (offset=first, 10 msgs)", prefetch2_wrap)

    def ack_all_counts(conn, ch):
        before = c.mgmt_messages(q)
        passive_before = ch.queue_declare(q, passive=True).method.message_count
        got = consume_collect(conn, ch, q, args={"x-stream-offset": "first"},
                              prefetch=100, wait=2.0, ack=True)
        sync_probe(conn, ch, q)
        during = c.mgmt_messages(q)
        ch.close()
        after = c.mgmt_messages(q)
        ch2 = conn.channel()
        passive_after = ch2.queue_declare(q, passive=True).method.message_count
        return {"acked": len(got), "mgmt_before": before, "declare_ok_before": passive_before,
                "mgmt_with_consumer_after_acks": during, "mgmt_after_close": after,
                "declare_ok_after": passive_after}
    c.case("ack everything: message counts before/after", ack_all_counts)

    def reread(conn, ch):
        got = consume_collect(conn, ch, q, args={"x-stream-offset": "first"}, wait=2.0)
        return {"bodies": bodies(got)}
    c.case("new consumer offset=first after everything was acked", reread)

    def settle(kind):
        def fn(conn, ch):
            got = []

            def on_msg(cc, method, p, body):
                got.append({"body": body.decode(), "tag": method.delivery_tag,
                            "redelivered": method.redelivered})
            ch.basic_qos(prefetch_count=1)
            ch.basic_consume(q, on_msg, arguments={"x-stream-offset": "first"})
            pump(1.0, conn)
            first = list(got)
            if kind == "nack-requeue":
                ch.basic_nack(got[0]["tag"], requeue=True)
            elif kind == "nack-norequeue":
                ch.basic_nack(got[0]["tag"], requeue=False)
            elif kind == "nack-multiple-requeue":
                ch.basic_nack(got[0]["tag"], multiple=True, requeue=True)
            elif kind == "reject-requeue":
                ch.basic_reject(got[0]["tag"], requeue=True)
            elif kind == "reject-norequeue":
                ch.basic_reject(got[0]["tag"], requeue=False)
            elif kind == "recover-requeue":
                ch.basic_recover(requeue=True)
            elif kind == "recover-norequeue":
                ch.basic_recover(requeue=False)
            elif kind == "ack-unknown-tag":
                ch.basic_ack(999)
            elif kind == "double-ack":
                ch.basic_ack(got[0]["tag"])
                ch.basic_ack(got[0]["tag"])
            pump(1.5, conn)
            sync_probe(conn, ch, q)
            return {"before": [(g["body"], g["tag"], g["redelivered"]) for g in first],
                    "after (body, tag, redelivered)":
                        [(g["body"], g["tag"], g["redelivered"]) for g in got[len(first):]]}
        return fn

    for kind in ("nack-requeue", "nack-norequeue", "nack-multiple-requeue",
                 "reject-requeue", "reject-norequeue", "recover-requeue",
                 "recover-norequeue", "ack-unknown-tag", "double-ack"):
        c.case("prefetch 1, first delivery then " + kind, settle(kind))

    def recover_async(conn, ch):
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "first"})
        pump(1.0, conn)
        ch._impl.basic_recover(requeue=True)  # no callback -> no wait
        pump(1.0, conn)
        sync_probe(conn, ch, q)
        return "channel open"
    c.case("basic.recover (checked for channel survival)", recover_async)

    def tx_ack(conn, ch):
        got = []

        def on_msg(cc, method, p, body):
            got.append(method.delivery_tag)
        ch.basic_qos(prefetch_count=2)
        ch.tx_select()
        ch.basic_consume(q, on_msg, arguments={"x-stream-offset": "first"})
        pump(1.0, conn)
        ch.basic_ack(got[-1], multiple=True)
        ch.tx_commit()
        pump(1.0, conn)
        return {"deliveries": len(got)}
    c.case("ack inside a transaction (tx.select, ack, tx.commit)", tx_ack)
    c.delete(q)


def t6_get_purge_delete(c):
    c.topic = "6 get/purge/delete"
    q = c.make_stream("gpd", n=3)
    c.case("basic.get (no_ack=false)", lambda conn, ch: repr(ch.basic_get(q)))

    def get_qos(conn, ch):
        ch.basic_qos(prefetch_count=10)
        return repr(ch.basic_get(q, auto_ack=True))
    c.case("basic.get (auto_ack=true, after qos)", get_qos)
    c.case("queue.purge", lambda conn, ch: vars(ch.queue_purge(q).method))

    def if_unused(conn, ch):
        ch.basic_qos(prefetch_count=10)
        ch.basic_consume(q, lambda *a: None)
        ch2 = conn.channel()
        return vars(ch2.queue_delete(q, if_unused=True).method)
    c.case("queue.delete if_unused=true while a consumer exists", if_unused)

    q2 = c.make_stream("gpd2", n=3)
    c.case("queue.delete if_empty=true on stream with 3 messages",
           lambda conn, ch: vars(ch.queue_delete(q2, if_empty=True).method))
    q3 = c.make_stream("gpd3", n=3)

    def delete_with_consumer(conn, ch):
        cancelled = []
        ch.basic_qos(prefetch_count=10)
        ch.add_on_cancel_callback(lambda m: cancelled.append(m.method.consumer_tag))
        ch.basic_consume(q3, lambda *a: None)
        ch2 = conn.channel()
        res = vars(ch2.queue_delete(q3).method)
        pump(1.0, conn)
        return {"delete_ok": res, "consumer_got_basic.cancel": bool(cancelled),
                "channel_open": ch.is_open}
    c.case("queue.delete (plain) with a live consumer on another channel", delete_with_consumer)
    c.case("queue.delete (plain)", lambda conn, ch: vars(ch.queue_delete(q).method))
    c.delete(q2)


def t7_two_consumers(c):
    c.topic = "7 two consumers"
    q = c.make_stream("two", n=10)

    def fn(conn, ch):
        a, b = [], []
        ch.basic_qos(prefetch_count=100)
        ch.basic_consume(q, lambda cc, m, p, body: (a.append(body.decode()),
                                                    cc.basic_ack(m.delivery_tag)),
                         arguments={"x-stream-offset": "first"})
        ch2 = conn.channel()
        ch2.basic_qos(prefetch_count=100)
        ch2.basic_consume(q, lambda cc, m, p, body: b.append(body.decode()),
                          arguments={"x-stream-offset": Typed("l", 7)})
        pump(2.0, conn)
        return {"A (first, acks)": a, "B (offset 7, never acks)": b}
    c.case("same connection, two channels: offset=first vs offset=7", fn)

    def fn2(conn, ch):
        other_conn, other_ch = c.connect()
        try:
            a, b = [], []
            ch.basic_qos(prefetch_count=3)
            ch.basic_consume(q, lambda cc, m, p, body: a.append(body.decode()),
                             arguments={"x-stream-offset": "first"})
            other_ch.basic_qos(prefetch_count=100)
            other_ch.basic_consume(q, lambda cc, m, p, body: (
                b.append(body.decode()), cc.basic_ack(m.delivery_tag)),
                arguments={"x-stream-offset": "first"})
            pump(4.0, conn, other_conn)
            return {"A (prefetch 3, never acks)": a, "B (prefetch 100, acks)": b}
        finally:
            other_conn.close()
    c.case("two connections, both offset=first; A stalls, B acks", fn2)

    def same_channel(conn, ch):
        a, b = [], []
        ch.basic_qos(prefetch_count=100)
        ch.basic_consume(q, lambda cc, m, p, body: (a.append(body.decode()),
                                                    cc.basic_ack(m.delivery_tag)),
                         arguments={"x-stream-offset": "last"})
        ch.basic_consume(q, lambda cc, m, p, body: (b.append(body.decode()),
                                                    cc.basic_ack(m.delivery_tag)),
                         arguments={"x-stream-offset": Typed("l", 8)})
        pump(2.0, conn)
        return {"A (last)": a, "B (offset 8)": b}
    c.case("same channel, two consumers: last vs offset 8", same_channel)
    c.delete(q)


def t8_counts(c):
    c.topic = "8 declare-ok counts"
    q = c.make_stream("cnt", n=10)

    def counts(conn, ch):
        r = {}
        ok = ch.queue_declare(q, passive=True).method
        r["passive, no consumer"] = (ok.message_count, ok.consumer_count)
        ok = ch.queue_declare(q, durable=True, arguments={"x-queue-type": "stream"}).method
        r["active redeclare, no consumer"] = (ok.message_count, ok.consumer_count)
        ch2 = conn.channel()
        ch2.basic_qos(prefetch_count=3)
        ch2.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "first"})
        pump(1.0, conn)
        ok = ch.queue_declare(q, passive=True).method
        r["passive, 1 consumer holding 3 unacked"] = (ok.message_count, ok.consumer_count)
        time.sleep(6)
        ok = ch.queue_declare(q, passive=True).method
        r["passive, 1 consumer, +6s"] = (ok.message_count, ok.consumer_count)
        return r
    c.case("declare-ok (message_count, consumer_count) on stream with 10 msgs", counts)

    def timeline(conn, ch):
        pub = conn.channel()
        publish_bodies(pub, q, ["extra%d" % i for i in range(5)])
        t0 = time.monotonic()
        seen = []
        while time.monotonic() - t0 < 8:
            n = ch.queue_declare(q, passive=True).method.message_count
            if not seen or seen[-1][1] != n:
                seen.append((round(time.monotonic() - t0, 1), n))
            time.sleep(0.25)
        return {"(seconds after publishing 5 more, message_count)": seen}
    c.case("message_count timeline after publishing 5 more (10 -> 15)", timeline)
    c.delete(q)


def t9_filter(c):
    c.topic = "9 filtering"
    q = c.make_stream("flt")

    def setup(ch):
        ch.confirm_delivery()
        for i, v in enumerate(["red", "blue", "red", None, "blue"]):
            h = {"x-stream-filter-value": v} if v else None
            ch.basic_publish("", q, ("f%d-%s" % (i, v)).encode(),
                             pika.BasicProperties(headers=h))
    c.admin(setup)
    for label, args in [
        ("x-stream-filter=red", {"x-stream-filter": "red"}),
        ("x-stream-filter=[red]", {"x-stream-filter": ["red"]}),
        ("x-stream-filter=red + x-stream-match-unfiltered=true",
         {"x-stream-filter": "red", "x-stream-match-unfiltered": True}),
    ]:
        def fn(conn, ch, args=args):
            a = dict(args)
            a["x-stream-offset"] = "first"
            got = consume_collect(conn, ch, q, args=a, wait=2.0)
            return {"bodies": bodies(got),
                    "headers": [d["headers"] for d in got]}
        c.case(label, fn)
    c.case("declare with x-stream-filter-size-bytes=32", lambda conn, ch: vars(
        ch.queue_declare(c.qname("flt-size"), durable=True, arguments={
            "x-queue-type": "stream", "x-stream-filter-size-bytes": 32}).method))
    c.delete(q)


def t10_mgmt(c):
    c.topic = "10 management API"
    q = c.make_stream("mgmt", n=10, args={"x-max-age": "7D",
                                          "x-max-length-bytes": 1000000})

    def fn(conn, ch):
        ch.basic_qos(prefetch_count=2)
        ch.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "first"})
        pump(0.5, conn)
        early_keys = sorted(c.mgmt_queue(q).keys())
        t0 = time.monotonic()
        while True:  # "messages" only appears once queue stats have been emitted
            pump(1.0, conn)
            j = c.mgmt_queue(q)
            if "messages" in j or time.monotonic() - t0 > 20:
                break
        waited = round(time.monotonic() - t0 + 0.5, 1)
        keep = ("type", "durable", "auto_delete", "exclusive", "arguments", "messages",
                "messages_ready", "messages_unacknowledged", "consumers", "state",
                "leader", "members", "online", "node", "policy", "effective_policy_definition",
                "consumer_details", "message_bytes", "memory", "consumer_utilisation",
                "consumer_capacity", "idle_since", "messages_details", "segments",
                "backing_queue_status", "slave_nodes", "readers")
        out = {"keys right after declare/publish/consume": early_keys,
               "seconds until 'messages' appeared": waited,
               "keys": sorted(j.keys())}
        for k in keep:
            if k in j:
                v = j[k]
                if k == "consumer_details":
                    v = [{kk: vv for kk, vv in d.items() if kk not in ("channel_details",)}
                         for d in v]
                out[k] = v
        listing = [x for x in c.mgmt_get("/api/queues/%s?columns=name,type,messages"
                                         % urllib.parse.quote(c.vhost, safe=""))
                   if x.get("name") == q]
        out["list_view"] = listing
        return out
    c.case("GET /api/queues/<vhost>/<stream> (10 msgs, 1 consumer prefetch 2)", fn)
    c.delete(q)


def t11_offsets_not_tracked(c):
    c.topic = "11 server-side offset tracking"
    q = c.make_stream("trk", n=10)

    def first_half(conn, ch):
        got = []

        def on_msg(cc, m, p, body):
            if len(got) < 5:
                got.append(body.decode())
                cc.basic_ack(m.delivery_tag)
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(q, on_msg, consumer_tag="sref-fixed-tag",
                         arguments={"x-stream-offset": "first"})
        pump(1.5, conn)
        return {"acked": got}
    c.case("consumer tag 'sref-fixed-tag' acks m0..m4, then disconnects", first_half)

    def again(args):
        def fn(conn, ch):
            def live():
                p = conn.channel()
                p.confirm_delivery()
                p.basic_publish("", q, b"live")
                p.close()
            got = consume_collect(conn, ch, q, args=args, wait=3.0, during=live,
                                  tag="sref-fixed-tag")
            return {"bodies": bodies(got)}
        return fn
    c.case("reconnect, same tag, no x-stream-offset", again(None))
    c.case("reconnect, same tag, offset=first", again({"x-stream-offset": "first"}))
    c.delete(q)


def render_markdown(results):
    lines = []
    topic = None
    for r in results:
        if r["topic"] != topic:
            topic = r["topic"]
            lines += ["", "## %s" % topic, "", "| case | outcome | code | text / detail |",
                      "|---|---|---|---|"]
        text = r["text"] if r["outcome"] != "ok" else json.dumps(r["detail"], default=str)
        if r["outcome"] != "ok" and r["detail"]:
            text = "%s (%s)" % (text, r["detail"])
        text = (text or "").replace("|", "\\|")
        lines.append("| %s | %s | %s | %s |" % (r["case"].replace("|", "\\|"), r["outcome"],
                                              r["code"] or "", text))
    return "\n".join(lines) + "\n"


TOPICS = {
    "1": t1_declare, "2": lambda c: (t2_publish(c), t2b_header_types(c)), "3": t3_consume,
    "4": lambda c: (t4_offsets(c, burst=False), t4_offsets(c, burst=True)),
    "5": t5_acks, "6": t6_get_purge_delete, "7": t7_two_consumers, "8": t8_counts,
    "9": t9_filter, "10": t10_mgmt, "11": t11_offsets_not_tracked,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--amqp", default="127.0.0.1:5672", help="HOST:PORT")
    ap.add_argument("--mgmt", help="management base URL (default http://HOST:15672)")
    ap.add_argument("--user", default="guest")
    ap.add_argument("--password", default="guest")
    ap.add_argument("--vhost", default="/")
    ap.add_argument("--topics", default=",".join(TOPICS), help="comma list, e.g. 1,3,4")
    ap.add_argument("--json", help="write all results as JSON here")
    ap.add_argument("--markdown", help="write raw result tables here")
    args = ap.parse_args()
    if not args.mgmt:
        args.mgmt = "http://%s:15672" % (args.amqp.rpartition(":")[0] or "127.0.0.1")

    c = Capture(args)
    try:
        for t in args.topics.split(","):
            TOPICS[t.strip()](c)
    finally:
        for name in sorted(c.created):
            c.delete(name)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(c.results, f, indent=1, default=str)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(render_markdown(c.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
