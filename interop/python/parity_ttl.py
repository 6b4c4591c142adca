"""Message TTL scenarios, printed so that two brokers can be compared side by side (run it
against RabbitMQ and against warren and diff the output):

    python parity_ttl.py amqp://guest:guest@127.0.0.1:5672/%2F

Needs pika (the interop venv has it). Not part of CI: tests/e2e/ttl.rs asserts the same
outcomes against warren.
"""
import sys, time, pika
url = sys.argv[1]
c = pika.BlockingConnection(pika.URLParameters(url)); ch = c.channel(); ch.confirm_delivery()
def count(q): return ch.queue_declare(q, passive=True).method.message_count
def get(q):
    m = ch.basic_get(q, auto_ack=True); return None if m[0] is None else m[2].decode()
for q in ['qttl', 'mttl', 'zero', 'requeue']: ch.queue_delete(q)
ch.queue_declare('qttl', arguments={'x-message-ttl': 200})
for i in range(3): ch.basic_publish('', 'qttl', f'm{i}'.encode())
print('qttl before', count('qttl')); time.sleep(0.7); print('qttl after', count('qttl'))
ch.queue_declare('mttl', arguments={'x-message-ttl': 60000})
ch.basic_publish('', 'mttl', b'short', pika.BasicProperties(expiration='100'))
ch.basic_publish('', 'mttl', b'long')
time.sleep(0.5); print('mttl', get('mttl'), get('mttl'))
ch.queue_declare('zero', arguments={'x-message-ttl': 0})
ch.basic_publish('', 'zero', b'nobody'); print('zero no consumer', count('zero'))
got = []
cch = c.channel(); cch.basic_consume('zero', lambda chn, m, p, b: got.append(b.decode()), auto_ack=True)
ch.basic_publish('', 'zero', b'taken'); c.process_data_events(time_limit=0.3); print('zero consumer', got)
ch.queue_declare('requeue', arguments={'x-message-ttl': 400})
ch.basic_publish('', 'requeue', b'm')
gch = c.channel(); m = gch.basic_get('requeue')
time.sleep(0.8); gch.basic_nack(m[0].delivery_tag, requeue=True); c.process_data_events(time_limit=0.2)
print('requeue after expiry', count('requeue'))
try:
    c2 = pika.BlockingConnection(pika.URLParameters(url)); c2.channel().queue_declare('bad', arguments={'x-message-ttl': -1})
except pika.exceptions.ChannelClosedByBroker as e:
    print('bad ttl', e.reply_code, e.reply_text)
c.close()
