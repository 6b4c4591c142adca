"""pika smoke scenarios against a broker URI (argv[1]); exits non-zero on the first failure."""

import decimal
import sys

import pika
import pika.exceptions

uri = sys.argv[1]
params = pika.URLParameters(uri)


def main() -> None:
    conn = pika.BlockingConnection(params)
    ch = conn.channel()
    q = ch.queue_declare(queue="", exclusive=True).method.queue
    assert q.startswith("amq.gen-"), q

    # publish with confirms and every property; consume with manual ack
    ch.confirm_delivery()
    props = pika.BasicProperties(
        content_type="text/plain",
        content_encoding="utf-8",
        headers={"s": "ünïcödé", "i": 42, "big": 2**40, "d": decimal.Decimal("1.50"), "b": True, "n": {"x": [1, "a"]}},
        delivery_mode=2,
        priority=5,
        correlation_id="c1",
        reply_to="r",
        expiration="60000",
        message_id="m1",
        timestamp=1700000000,
        type="t",
        user_id="guest",
        app_id="smoke",
    )
    ch.basic_publish("", q, b"hello from pika", props, mandatory=True)
    method, got, body = next(ch.consume(q, inactivity_timeout=5))
    assert body == b"hello from pika", body
    for field in ("content_type", "content_encoding", "delivery_mode", "priority", "correlation_id",
                  "reply_to", "expiration", "message_id", "timestamp", "type", "user_id", "app_id"):
        assert getattr(got, field) == getattr(props, field), field
    assert got.headers["s"] == "ünïcödé" and got.headers["i"] == 42 and got.headers["big"] == 2**40
    assert got.headers["d"] == decimal.Decimal("1.50") and got.headers["b"] is True and got.headers["n"] == {"x": [1, "a"]}
    ch.basic_ack(method.delivery_tag)
    ch.cancel()

    # mandatory publish to nowhere is returned
    try:
        ch.basic_publish("", "no-such-queue-anywhere", b"x", mandatory=True)
        raise AssertionError("expected UnroutableError")
    except pika.exceptions.UnroutableError:
        pass

    # nack with requeue comes back redelivered; get-empty afterwards
    ch.basic_publish("", q, b"again")
    m, _, _ = ch.basic_get(q)
    ch.basic_nack(m.delivery_tag, requeue=True)
    m, _, body = ch.basic_get(q, auto_ack=True)
    assert m.redelivered and body == b"again"
    assert ch.basic_get(q) == (None, None, None)

    # a missing queue closes the channel with 404, the connection lives on
    try:
        ch.queue_declare(queue="missing-queue", passive=True)
        raise AssertionError("expected 404")
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 404, e
    ch2 = conn.channel()
    ch2.queue_declare(queue="", exclusive=True)
    conn.close()

    # bad credentials are refused
    bad = pika.URLParameters(uri.replace("guest:guest", "guest:wrong"))
    try:
        pika.BlockingConnection(bad)
        raise AssertionError("expected refusal")
    except pika.exceptions.ProbableAuthenticationError:
        pass


main()
print("pika smoke ok")
