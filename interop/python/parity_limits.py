"""Length limits, reject-publish, argument refusals and single active consumer, printed so
that two brokers can be compared side by side (run it against RabbitMQ and against warren and
diff the output):

    python parity_limits.py amqp://guest:guest@127.0.0.1:5672/%2F

Needs pika (the interop venv has it). Not part of CI: tests/e2e/limits.rs asserts the same
outcomes against warren.
"""
import sys, time, pika
url = sys.argv[1]
def conn():
    return pika.BlockingConnection(pika.URLParameters(url))
c = conn(); ch = c.channel(); ch.confirm_delivery()
def drain(q):
    out = []
    while True:
        m = ch.basic_get(q, auto_ack=True)
        if m[0] is None: return out
        out.append(m[2].decode())
def pub(q, body):
    try:
        ch.basic_publish('', q, body.encode()); return True
    except pika.exceptions.NackError:
        return False
ch.queue_delete('len'); ch.queue_declare('len', arguments={'x-max-length': 3})
for i in range(1,6): assert pub('len', f'm{i}')
print('drop-head', drain('len'))
ch.queue_delete('bytes'); ch.queue_declare('bytes', arguments={'x-max-length-bytes': 10})
for b in ['aaaa','bbbb','cccc','dddd']: pub('bytes', b)
print('bytes', drain('bytes'))
ch.queue_delete('full'); ch.queue_declare('full', arguments={'x-max-length': 2, 'x-overflow': 'reject-publish'})
print('reject', [pub('full','m1'), pub('full','m2'), pub('full','m3')], drain('full'), pub('full','m4'), drain('full'))
for arg, val in [('x-max-length', -1), ('x-max-length-bytes', '10'), ('x-overflow', 'drop-tail'), ('x-single-active-consumer', 'yes'), ('x-expires', 0), ('x-expires', -5)]:
    c2 = conn(); ch2 = c2.channel()
    try:
        ch2.queue_declare('bad', arguments={arg: val}); print(arg, 'accepted!')
    except pika.exceptions.ChannelClosedByBroker as e:
        print(arg, e.reply_code, e.reply_text)
    c2.close()
# SAC
ch.queue_delete('sac'); ch.queue_declare('sac', arguments={'x-single-active-consumer': True})
ca = c.channel(); cb = c.channel(); ca.basic_qos(prefetch_count=10); cb.basic_qos(prefetch_count=10)
got = {'a': [], 'b': []}
ca.basic_consume('sac', lambda chn, m, p, b: got['a'].append((b.decode(), m.redelivered)), consumer_tag='a')
cb.basic_consume('sac', lambda chn, m, p, b: got['b'].append((b.decode(), m.redelivered, chn.basic_ack(m.delivery_tag))), consumer_tag='b')
for i in range(1,5): pub('sac', f'm{i}')
c.process_data_events(time_limit=0.5)
print('sac before', got)
ca.basic_cancel('a'); ca.close()
for _ in range(10):
    c.process_data_events(time_limit=0.3)
print('sac after', [(x[0], x[1]) for x in got['b']])
c.close()
# x-expires: unused for 300 ms: gone; with a consumer: kept, then gone once it cancels.
c = conn(); ch = c.channel()
def exists(name):
    c2 = conn(); ch2 = c2.channel()
    try:
        ch2.queue_declare(name, passive=True); return True
    except pika.exceptions.ChannelClosedByBroker:
        return False
    finally:
        if c2.is_open: c2.close()
ch.queue_declare('exp', arguments={'x-expires': 300})
time.sleep(1.0); print('expired unused', not exists('exp'))
ch.queue_declare('kept', arguments={'x-expires': 500})
ch.basic_consume('kept', lambda *a: None, consumer_tag='k')
time.sleep(1.2); print('kept with consumer', exists('kept'))
ch.basic_cancel('k'); c.process_data_events(time_limit=0.1)
time.sleep(1.2); print('expired after cancel', not exists('kept'))
c.close()
