"""Priority queues and argument equivalence, printed so that two brokers can be compared side
by side (run it against RabbitMQ and against warren and diff the output):

    python parity_priority.py amqp://guest:guest@127.0.0.1:5672/%2F

Against RabbitMQ 3.10.8 the output is identical. Needs pika (the interop venv has it). Not part of CI: tests/e2e/priority.rs
asserts the same outcomes against warren (and, with WARREN_E2E_URL, against RabbitMQ).
"""
import sys, time, pika
url = sys.argv[1]
c = pika.BlockingConnection(pika.URLParameters(url)); ch = c.channel(); ch.confirm_delivery()
for v in [0, 1, 255, 256, -1, 'a', True]:
    try:
        cc = c.channel(); cc.queue_delete('pbad'); cc.queue_declare('pbad', arguments={'x-max-priority': v}); print('ok', repr(v)); cc.queue_delete('pbad')
    except pika.exceptions.ChannelClosedByBroker as e: print('bad', repr(v), e.reply_code, e.reply_text)
ch.queue_delete('pq'); ch.queue_declare('pq', arguments={'x-max-priority': 5})
for body, p in [('a0', None), ('b3', 3), ('c9', 9), ('d3', 3), ('e1', 1), ('f0', 0), ('g5', 5)]:
    ch.basic_publish('', 'pq', body.encode(), pika.BasicProperties(priority=p))
print('count', ch.queue_declare('pq', passive=True).method.message_count)
m1 = ch.basic_get('pq'); m2 = ch.basic_get('pq')
print('got', m1[2], m1[1].priority, m2[2], m2[1].priority)
ch.basic_nack(m2[0].delivery_tag, multiple=False, requeue=True); ch.basic_nack(m1[0].delivery_tag, requeue=True)
out = []
while True:
    m = ch.basic_get('pq', auto_ack=True)
    if m[0] is None: break
    out.append((m[2].decode(), m[0].redelivered))
print('order', out)
try:
    ch.queue_declare('pq', arguments={'x-max-priority': 6})
except pika.exceptions.ChannelClosedByBroker as e: print('redeclare', e.reply_code, e.reply_text)
c.close()
c = pika.BlockingConnection(pika.URLParameters(url))
cases = [({'x-message-ttl': 5}, {'x-message-ttl': 6}), ({'x-overflow': 'drop-head'}, {'x-overflow': 'reject-publish'}),
         ({'x-dead-letter-exchange': 'a'}, {}), ({}, {'x-dead-letter-exchange': 'b'}), ({'x-max-priority': 5}, {}),
         ({'x-single-active-consumer': True}, {'x-single-active-consumer': False}), ({}, {'x-queue-type': 'quorum'})]
for a, b in cases:
    ch = c.channel(); ch.queue_delete('eq'); ch.queue_declare('eq', arguments=a)
    try: ch.queue_declare('eq', arguments=b); print('ok', a, b)
    except pika.exceptions.ChannelClosedByBroker as e: print(e.reply_code, e.reply_text)
    except pika.exceptions.ConnectionClosedByBroker as e: print('conn', e.reply_code, e.reply_text); c = pika.BlockingConnection(pika.URLParameters(url))
