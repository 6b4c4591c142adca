"""Dead-lettering scenarios, printed so that two brokers can be compared side by side (run it
against RabbitMQ and against warren and diff the output):

    python parity_dlx.py amqp://guest:guest@127.0.0.1:5672/%2F

Prints each dead-lettered message with its headers in wire order and the type letters of
integers and timestamps (whether recent; the last line compares two entries' times). Against RabbitMQ 3.10.8 the only
difference is warren's `x-last-death-*` headers, which RabbitMQ writes from 3.13 on.
Needs pika (the interop venv has it). Not part of CI: tests/e2e/dlx.rs asserts the same
outcomes against warren (and, with WARREN_E2E_URL, against RabbitMQ).
"""
import sys, time, pika, pika.data
url = sys.argv[1]
orig = pika.data.decode_value
def dv(encoded, offset):
    kind = encoded[offset:offset+1].decode()
    v, off = orig(encoded, offset)
    if kind == 'T': v = ('T', 'recent' if time.time() - v.timestamp() < 30 else 'old', int(v.timestamp()))
    elif kind in 'lIbBsu': v = (kind, v)
    return v, off
pika.data.decode_value = dv
c = pika.BlockingConnection(pika.URLParameters(url)); ch = c.channel()
def strip_times(v):
    if isinstance(v, dict): return {k: strip_times(x) for k, x in v.items()}
    if isinstance(v, list): return [strip_times(x) for x in v]
    if isinstance(v, tuple) and v[0] == 'T': return v[:2]
    return v
def show(tag, m):
    if m[0] is None: print(tag, None); return
    m[1].headers = strip_times(m[1].headers) if tag != 'third' else m[1].headers
    if tag == 'third':
        d = m[1].headers['x-death']; print('the repeated entry keeps its first time:', d[0]['time'][2] < d[1]['time'][2])
        m[1].headers = strip_times(m[1].headers)
    print(tag, m[0].exchange, m[0].routing_key, m[0].redelivered, 'exp=', m[1].expiration, 'dm=', m[1].delivery_mode, m[1].headers, m[2])
for q in ['src', 'dlq', 'dlq2', 'ttlq', 'cyc', 'maxq', 'rpd']: ch.queue_delete(q)
ch.exchange_delete('dlx'); ch.exchange_declare('dlx', 'fanout')
ch.queue_declare('dlq'); ch.queue_bind('dlq', 'dlx')
ch.queue_declare('src', arguments={'x-dead-letter-exchange': 'dlx'})
ch.basic_publish('', 'src', b'r1', pika.BasicProperties(headers={'h': 1}, expiration='60000', delivery_mode=2))
m = ch.basic_get('src'); ch.basic_reject(m[0].delivery_tag, requeue=False); time.sleep(0.2)
m = ch.basic_get('dlq'); show('rejected', m)
# again: reject from dlq? republish the dead-lettered message to src again with its headers
h = m[1].headers
ch.basic_ack(m[0].delivery_tag)
# ttl
ch.queue_declare('ttlq', arguments={'x-dead-letter-exchange': 'dlx', 'x-message-ttl': 100, 'x-dead-letter-routing-key': 'newkey'})
ch.basic_publish('', 'ttlq', b't1', pika.BasicProperties(expiration='50'))
time.sleep(0.4); show('expired', ch.basic_get('dlq', auto_ack=True))
# repeat death: src -> dlq(=dlx fanout) twice, same queue same reason
ch.basic_publish('', 'src', b'r2'); m = ch.basic_get('src'); ch.basic_nack(m[0].delivery_tag, requeue=False); time.sleep(0.1)
m = ch.basic_get('dlq', auto_ack=True); show('first', m)
time.sleep(1.1)
ch.basic_publish('', 'src', b'r2b', pika.BasicProperties(headers=None))
# republish with old headers from first death (as a client would) and reject again
import datetime
ch.queue_declare('dlq2'); ch.exchange_declare('dlx2','fanout'); ch.queue_bind('dlq2','dlx2')
ch.queue_declare('maxq', arguments={'x-dead-letter-exchange': 'dlx', 'x-max-length': 1})
ch.basic_publish('', 'maxq', b'm1'); ch.basic_publish('', 'maxq', b'm2'); time.sleep(0.1)
show('maxlen', ch.basic_get('dlq', auto_ack=True))
ch.queue_declare('rpd', arguments={'x-dead-letter-exchange': 'dlx', 'x-max-length': 1, 'x-overflow': 'reject-publish-dlx'})
ch.basic_publish('', 'rpd', b'p1'); ch.basic_publish('', 'rpd', b'p2'); time.sleep(0.1)
show('rpdlx', ch.basic_get('dlq', auto_ack=True)); print('rpd count', ch.queue_declare('rpd', passive=True).method.message_count)
# cycle: ttl queue dead-letters to itself via default exchange
ch.queue_declare('cyc', arguments={'x-dead-letter-exchange': '', 'x-message-ttl': 50})
ch.basic_publish('', 'cyc', b'c1'); time.sleep(0.5); print('cycle count', ch.queue_declare('cyc', passive=True).method.message_count)
# reject cycle: src2 -> back to itself on reject is allowed
ch.queue_delete('self'); ch.queue_declare('self', arguments={'x-dead-letter-exchange': ''})
ch.basic_publish('', 'self', b's1'); m = ch.basic_get('self'); ch.basic_reject(m[0].delivery_tag, requeue=False); time.sleep(0.1)
m = ch.basic_get('self'); show('self1', m); ch.basic_reject(m[0].delivery_tag, requeue=False); time.sleep(0.1)
show('self2', ch.basic_get('self', auto_ack=True))
for args in [{'x-dead-letter-routing-key': 'k'}, {'x-dead-letter-exchange': 5}, {'x-dead-letter-exchange': 'e', 'x-dead-letter-routing-key': 5}]:
    try:
        cc = c.channel(); cc.queue_declare('bad', arguments=args); print('bad ok', args)
    except pika.exceptions.ChannelClosedByBroker as e: print('bad', args, e.reply_code, e.reply_text)
for q in ['q1', 'q2']: ch.queue_delete(q)
ch.queue_declare('q1', arguments={'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'q2'})
ch.queue_declare('q2', arguments={'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'q1'})
ch.basic_publish('', 'q1', b'x', pika.BasicProperties(headers={'z': 'last', 'a': 'first'}))
def rej(q):
    m = ch.basic_get(q); ch.basic_reject(m[0].delivery_tag, requeue=False); time.sleep(0.1)
rej('q1'); time.sleep(2.1); rej('q2'); time.sleep(2.1); rej('q1')
show('third', ch.basic_get('q2', auto_ack=True))
c.close()
