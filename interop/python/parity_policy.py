"""Policy precedence, printed so that two brokers can be compared side by side. Set the same
policy on both first, then run this against each and diff:

    rabbitmqctl set_policy --apply-to queues prec '^prec' \
        '{"max-length":1,"dead-letter-exchange":"","dead-letter-routing-key":"dead-policy","message-ttl":60000}'
    warren --data-dir DIR ctl set_policy --apply-to queues prec '^prec' '...the same...'
    python parity_policy.py amqp://guest:guest@127.0.0.1:5672/%2F

Expected (RabbitMQ 3.10.8 and warren alike): the lower max-length wins (1 of the argument's 3),
the argument's dead-letter target wins over the policy's (4 in dead-arg), the lower TTL wins
(the argument's 100 ms). Not part of CI: tests/e2e/policy.rs asserts the same against warren.
"""
import sys, pika, time
c = pika.BlockingConnection(pika.URLParameters(sys.argv[1])); ch = c.channel(); ch.confirm_delivery()
for q in ['prec.a', 'prec.b', 'dead-arg', 'dead-policy']: ch.queue_delete(q)
for q in ['dead-arg', 'dead-policy']: ch.queue_declare(q)
ch.queue_declare('prec.a', arguments={'x-max-length': 3, 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': 'dead-arg'})
for i in range(5): ch.basic_publish('', 'prec.a', b'm')
time.sleep(0.3)
print('prec.a', ch.queue_declare('prec.a', passive=True).method.message_count, 'dead-arg', ch.queue_declare('dead-arg', passive=True).method.message_count, 'dead-policy', ch.queue_declare('dead-policy', passive=True).method.message_count)
ch.queue_declare('prec.b', arguments={'x-message-ttl': 100})
ch.basic_publish('', 'prec.b', b'm'); time.sleep(0.4)
print('prec.b ttl min', ch.queue_declare('prec.b', passive=True).method.message_count)
