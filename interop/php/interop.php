<?php
// warren interop scenarios for php-amqplib (Debian's php-amqplib, php-cli).
//
// Usage: php interop.php MODE      MODE = scenarios | cross-publish | cross-consume
// Environment: AMQP_URL (amqp://user:pass@host:port), INTEROP_CLIENTS, INTEROP_EXPECTED,
// INTEROP_ONLY. Prints "PASS name" / "FAIL name: reason" / "NA name: reason".

require_once getenv('PHP_AMQPLIB_AUTOLOAD') ?: '/usr/share/php/PhpAmqpLib/autoload.php';

use PhpAmqpLib\Connection\AMQPStreamConnection;
use PhpAmqpLib\Exception\AMQPBasicCancelException;
use PhpAmqpLib\Exception\AMQPConnectionClosedException;
use PhpAmqpLib\Exception\AMQPProtocolChannelException;
use PhpAmqpLib\Exception\AMQPTimeoutException;
use PhpAmqpLib\Message\AMQPMessage;
use PhpAmqpLib\Wire\AMQPAbstractCollection as C;
use PhpAmqpLib\Wire\AMQPArray;
use PhpAmqpLib\Wire\AMQPDecimal;
use PhpAmqpLib\Wire\AMQPTable;

const ME = 'php';
$URL = rtrim(getenv('AMQP_URL') ?: 'amqp://guest:guest@127.0.0.1:5672', '/');
$U = parse_url($URL);
define('HOST', $U['host']);
define('PORT', $U['port'] ?? 5672);
define('LOGIN', urldecode($U['user'] ?? 'guest'));
define('PASSWORD', urldecode($U['pass'] ?? 'guest'));
define('EXPECTED', getenv('INTEROP_EXPECTED') ?: __DIR__ . '/../cross/expected.json');
define('CLIENTS', preg_split('/\s+/', trim(getenv('INTEROP_CLIENTS') ?: 'python node c ruby php')));

class Fail extends Exception {}
class NA extends Exception {}

function check($cond, $msg)
{
    if (!$cond) {
        throw new Fail($msg);
    }
}

function connect($password = PASSWORD, $heartbeat = 0)
{
    $rw = $heartbeat > 0 ? 2.5 * $heartbeat : 10.0;
    return new AMQPStreamConnection(HOST, PORT, LOGIN, $password, '/', false, 'AMQPLAIN', null, 'en_US',
        5.0, $rw, null, false, $heartbeat);
}

function q($name)
{
    return 'it.' . ME . '.' . $name;
}

function drain($ch, $queue)
{
    $out = [];
    for ($i = 0; $i < 100; $i++) {
        $m = $ch->basic_get($queue, true);
        if ($m === null) {
            break;
        }
        $out[] = $m->getBody();
    }
    return $out;
}

function count_ready($ch, $queue)
{
    return $ch->queue_declare($queue, true)[1];
}

// Polls the ready count until it is $n: RabbitMQ may answer a passive declare before the
// channel's earlier publishes have reached the queue.
function wait_count($ch, $queue, $n, $seconds = 5.0)
{
    $deadline = microtime(true) + $seconds;
    while (count_ready($ch, $queue) !== $n && microtime(true) < $deadline) {
        usleep(20000);
    }
    return count_ready($ch, $queue) === $n;
}

// Runs $fn on a new channel of $conn and expects the broker to close it with $code/$prefix.
function expect_channel_error($conn, $fn, $code, $prefix)
{
    $ch = $conn->channel();
    try {
        $fn($ch);
    } catch (AMQPProtocolChannelException $e) {
        check($e->getCode() === $code && str_starts_with($e->getMessage(), $prefix),
            "expected $code $prefix, got {$e->getCode()} {$e->getMessage()}");
        return;
    }
    throw new Fail("expected channel error $code $prefix, got none");
}

// Processes incoming frames on $ch for $seconds, or until $until() holds.
function pump($ch, $seconds, $until = null)
{
    $deadline = microtime(true) + $seconds;
    while (($until === null || !$until()) && ($left = $deadline - microtime(true)) > 0) {
        try {
            $ch->wait(null, false, min(0.1, $left));
        } catch (AMQPTimeoutException $e) {
        }
    }
}

$SCENARIOS = [];
function scenario($name, $fn, $timeout = 60)
{
    global $SCENARIOS;
    $SCENARIOS[] = [$name, $fn, $timeout];
}

// ---------------------------------------------------------------------------------------------

scenario('connect-ok', function () {
    $c = connect();
    // server properties come as [type letter, value]; capabilities is a table of those
    $caps = $c->getServerProperties()['capabilities'][1] ?? [];
    $ccn = $caps['consumer_cancel_notify'] ?? null;
    check($ccn === ['t', 1], 'capabilities: consumer_cancel_notify is ' . json_encode($ccn));
    $ch = $c->channel();
    check($ch->is_open(), 'channel not open');
    $c->close();
});

scenario('connect-bad-credentials', function () {
    try {
        $c = connect('wrong-password');
        $c->close();
    } catch (AMQPConnectionClosedException $e) {
        check($e->getCode() === 403 && str_starts_with($e->getMessage(), 'ACCESS_REFUSED'),
            "error {$e->getCode()} {$e->getMessage()}");
        return;
    }
    throw new Fail('connection succeeded with a wrong password');
});

foreach (['direct', 'fanout', 'topic', 'headers'] as $kind) {
    scenario("declare-exchange-$kind", function () use ($kind) {
        $c = connect();
        $ch = $c->channel();
        $name = q("ex.$kind");
        $ch->exchange_delete($name);
        $ch->exchange_declare($name, $kind, false, false, false);
        $ch->exchange_declare($name, $kind, false, false, false);
        $ch->exchange_declare($name, $kind, true);
        $other = $kind === 'fanout' ? 'direct' : 'fanout';
        expect_channel_error($c, fn($x) => $x->exchange_declare($name, $other, false, false, false), 406, 'PRECONDITION_FAILED');
        $ch->exchange_delete($name);
        expect_channel_error($c, fn($x) => $x->exchange_declare($name, $kind, true), 404, 'NOT_FOUND');
        $c->close();
    });
}

scenario('declare-queue', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('declare');
    $ch->queue_delete($name);
    [$qn, $mc, $cc] = $ch->queue_declare($name, false, false, false, false);
    check($qn === $name && $mc === 0 && $cc === 0, "declare-ok $qn $mc $cc");
    $ch->queue_declare($name, true);
    $ch->queue_delete($name);
    expect_channel_error($c, fn($x) => $x->queue_declare($name, true), 404, 'NOT_FOUND');
    $c->close();
});

scenario('bind', function () {
    $c = connect();
    $ch = $c->channel();
    $ex = q('bind.ex');
    $name = q('bind');
    $ch->queue_delete($name);
    $ch->exchange_delete($ex);
    $ch->exchange_declare($ex, 'direct', false, false, false);
    $ch->queue_declare($name, false, false, false, false);
    $ch->queue_bind($name, $ex, 'k1');
    $ch->basic_publish(new AMQPMessage('one'), $ex, 'k1');
    $ch->basic_publish(new AMQPMessage('two'), $ex, 'k2');
    $ch->queue_unbind($name, $ex, 'k1');
    $ch->basic_publish(new AMQPMessage('three'), $ex, 'k1');
    $got = drain($ch, $name);
    check($got === ['one'], 'got ' . json_encode($got));
    $ch->queue_delete($name);
    $ch->exchange_delete($ex);
    $c->close();
});

scenario('publish-consume-ack', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('pca');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    for ($i = 0; $i < 3; $i++) {
        $ch->basic_publish(new AMQPMessage("m$i"), '', $name);
    }
    $got = [];
    $redelivered = false;
    $tag = $ch->basic_consume($name, '', false, false, false, false, function ($m) use (&$got, &$redelivered) {
        $got[] = $m->getBody();
        $redelivered = $redelivered || $m->isRedelivered();
        $m->ack();
    });
    pump($ch, 5, function () use (&$got) {
        return count($got) === 3;
    });
    $ch->basic_cancel($tag);
    check($got === ['m0', 'm1', 'm2'] && !$redelivered, 'got ' . json_encode($got) . " redelivered=$redelivered");
    check(count_ready($ch, $name) === 0, 'queue not empty after acks');
    $ch->queue_delete($name);
    $c->close();
});

scenario('nack-requeue', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('nack');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    $ch->basic_publish(new AMQPMessage('again'), '', $name);
    $got = [];
    $tag = $ch->basic_consume($name, '', false, false, false, false, function ($m) use (&$got) {
        $got[] = [$m->isRedelivered(), $m->getBody()];
        if (count($got) === 1) {
            $m->nack(true);
        } else {
            $m->ack();
        }
    });
    pump($ch, 5, function () use (&$got) {
        return count($got) === 2;
    });
    $ch->basic_cancel($tag);
    check($got === [[false, 'again'], [true, 'again']], 'deliveries ' . json_encode($got));
    check(count_ready($ch, $name) === 0, 'queue not empty');
    // requeued messages go back to their original place, ahead of later ones
    foreach (['a', 'b', 'c'] as $b) {
        $ch->basic_publish(new AMQPMessage($b), '', $name);
    }
    $ma = $ch->basic_get($name);
    $mb = $ch->basic_get($name);
    $mb->nack(true);
    $ma->nack(true);
    $after = [];
    for ($i = 0; $i < 3; $i++) {
        $m = $ch->basic_get($name, true);
        $after[] = $m ? [$m->isRedelivered(), $m->getBody()] : null;
    }
    check($after === [[true, 'a'], [true, 'b'], [false, 'c']], 'after two nacks got ' . json_encode($after));
    $ch->queue_delete($name);
    $c->close();
});

scenario('reject-discard', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('reject');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    $ch->basic_publish(new AMQPMessage('gone'), '', $name);
    $m = $ch->basic_get($name);
    check($m && $m->getBody() === 'gone', 'no message');
    $m->reject(false);
    check($ch->basic_get($name) === null, 'message came back');
    check(count_ready($ch, $name) === 0, 'queue not empty');
    $ch->queue_delete($name);
    $c->close();
});

scenario('get-full', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('getfull');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    for ($i = 0; $i < 3; $i++) {
        $ch->basic_publish(new AMQPMessage("g$i"), '', $name);
    }
    $m = $ch->basic_get($name);
    check($m && $m->getBody() === 'g0', 'first message');
    check($m->getMessageCount() === 2, "message_count {$m->getMessageCount()}");
    check(!$m->isRedelivered() && $m->getExchange() === '' && $m->getRoutingKey() === $name, 'get-ok fields');
    $m->ack();
    check(count_ready($ch, $name) === 2, 'count after ack');
    $ch->queue_delete($name);
    $c->close();
});

scenario('get-empty', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('getempty');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    check($ch->basic_get($name) === null, 'get on an empty queue returned a message');
    $ch->queue_delete($name);
    $c->close();
});

scenario('prefetch', function () {
    $c = connect();
    $ch = $c->channel();
    $other = $c->channel();
    $name = q('prefetch');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    for ($i = 0; $i < 10; $i++) {
        $ch->basic_publish(new AMQPMessage("p$i"), '', $name);
    }
    $ch->basic_qos(0, 3, false);
    $got = [];
    $ch->basic_consume($name, '', false, false, false, false, function ($m) use (&$got) {
        $got[] = $m;
    });
    pump($ch, 1);
    check(count($got) === 3, count($got) . ' deliveries in flight with prefetch 3');
    $got[0]->ack();
    pump($ch, 1);
    check(count($got) === 4, count($got) . ' deliveries after one ack, expected 4');
    check(count_ready($other, $name) === 6, 'ready count');
    $got[count($got) - 1]->ack(true);
    pump($ch, 1);
    check(count($got) === 7, count($got) . ' deliveries after multiple ack, expected 7');
    $other->queue_delete($name);
    $c->close();
});

scenario('confirms-10k', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('confirms');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    $acked = 0;
    $nacked = 0;
    $ch->set_ack_handler(function () use (&$acked) {
        $acked++;
    });
    $ch->set_nack_handler(function () use (&$nacked) {
        $nacked++;
    });
    $ch->confirm_select();
    for ($i = 0; $i < 10000; $i++) {
        $ch->basic_publish(new AMQPMessage("c$i"), '', $name);
    }
    $ch->wait_for_pending_acks_returns(60);
    check($acked === 10000 && $nacked === 0, "acked $acked nacked $nacked");
    check(count_ready($ch, $name) === 10000, 'count');
    $ch->queue_delete($name);
    $c->close();
}, 180);

scenario('mandatory-return', function () {
    $c = connect();
    $ch = $c->channel();
    $returned = [];
    $ch->set_return_listener(function ($code, $text, $ex, $key, $m) use (&$returned) {
        $returned[] = [$code, $text, $ex, $key, $m->getBody()];
    });
    $ch->confirm_select();
    $key = q('nowhere');
    $ch->basic_publish(new AMQPMessage('lost'), '', $key, true);
    $ch->wait_for_pending_acks_returns(5);
    check(count($returned) === 1, 'no basic.return');
    check($returned[0] === [312, 'NO_ROUTE', '', $key, 'lost'], 'return ' . json_encode($returned[0]));
    $c->close();
});

scenario('exclusive-locked', function () {
    $c1 = connect();
    $name = q('exclusive');
    $c1->channel()->queue_declare($name, false, false, true, false);
    $c2 = connect();
    expect_channel_error($c2, fn($x) => $x->queue_declare($name, false, false, false, false), 405, 'RESOURCE_LOCKED');
    expect_channel_error($c2, fn($x) => $x->basic_consume($name, '', false, false, false, false, fn() => null), 405, 'RESOURCE_LOCKED');
    $c1->close();
    expect_channel_error($c2, fn($x) => $x->queue_declare($name, true), 404, 'NOT_FOUND');
    $c2->close();
});

scenario('server-named-queue', function () {
    $c = connect();
    $ch = $c->channel();
    [$name] = $ch->queue_declare('', false, false, true, true);
    check(str_starts_with($name, 'amq.gen-'), "name $name");
    $ch->basic_publish(new AMQPMessage('to a generated name'), '', $name);
    $m = $ch->basic_get($name, true);
    check($m && $m->getBody() === 'to a generated name', 'message');
    $c->close();
});

scenario('purge-count', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('purge');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    for ($i = 0; $i < 5; $i++) {
        $ch->basic_publish(new AMQPMessage('x'), '', $name);
    }
    check(wait_count($ch, $name, 5), 'count before purge');
    $holder = $c->channel();
    $holder->basic_get($name); // one unacked message: purge leaves it alone
    $n = $ch->queue_purge($name);
    check($n === 4, "purge-ok message_count $n, expected 4 (5 ready, 1 of them then unacked)");
    check(count_ready($ch, $name) === 0, 'not empty after purge');
    $holder->close(); // the unacked one comes back
    check(count_ready($ch, $name) === 1, 'count after closing the holder');
    $ch->queue_delete($name);
    $c->close();
});

scenario('delete-count', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('delete');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    for ($i = 0; $i < 5; $i++) {
        $ch->basic_publish(new AMQPMessage('x'), '', $name);
    }
    check(wait_count($ch, $name, 5), 'count before delete');
    $c->channel()->basic_get($name); // unacked messages are not counted
    $n = $ch->queue_delete($name);
    check($n === 4, "delete-ok message_count $n, expected 4 (5 published, 1 unacked)");
    expect_channel_error($c, fn($x) => $x->queue_declare($name, true), 404, 'NOT_FOUND');
    $c->close();
});

scenario('tx-commit', function () {
    $c = connect();
    $ch = $c->channel();
    $other = $c->channel();
    $name = q('txc');
    $other->queue_delete($name);
    $other->queue_declare($name, false, false, false, false);
    $ch->tx_select();
    for ($i = 0; $i < 3; $i++) {
        $ch->basic_publish(new AMQPMessage("t$i"), '', $name);
    }
    check(count_ready($other, $name) === 0, 'published messages visible before commit');
    $ch->tx_commit();
    check(count_ready($other, $name) === 3, 'count after commit');
    $m = $ch->basic_get($name);
    $m->ack();
    $ch->tx_commit();
    check(count_ready($other, $name) === 2, 'count after committed ack');
    $other->queue_delete($name);
    $c->close();
});

scenario('tx-rollback', function () {
    $c = connect();
    $ch = $c->channel();
    $other = $c->channel();
    $name = q('txr');
    $other->queue_delete($name);
    $other->queue_declare($name, false, false, false, false);
    $ch->tx_select();
    for ($i = 0; $i < 3; $i++) {
        $ch->basic_publish(new AMQPMessage("t$i"), '', $name);
    }
    $ch->tx_rollback();
    check(count_ready($other, $name) === 0, 'count after rollback');
    $ch->basic_publish(new AMQPMessage('after'), '', $name);
    $ch->tx_commit();
    $got = drain($other, $name);
    check($got === ['after'], 'after rollback+commit got ' . json_encode($got));
    // an ack rolled back leaves the message unacked: closing the channel requeues it
    $other->basic_publish(new AMQPMessage('kept'), '', $name);
    check(wait_count($other, $name, 1), 'kept not there');
    $m = $ch->basic_get($name);
    $m->ack();
    $ch->tx_rollback();
    check(count_ready($other, $name) === 0, 'message ready again right after rollback');
    $ch->close();
    $m = $other->basic_get($name, true);
    check($m && $m->getBody() === 'kept' && $m->isRedelivered(), 'after rollback+close: ' . ($m ? $m->getBody() : 'nothing'));
    $other->queue_delete($name);
    $c->close();
});

scenario('large-message-10mib', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('large');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, false, false, false);
    $size = 10 * 1024 * 1024;
    $body = substr(str_repeat(implode('', array_map('chr', range(0, 250))), intdiv($size, 251) + 1), 0, $size);
    $ch->basic_publish(new AMQPMessage($body), '', $name);
    $m = null;
    for ($i = 0; $i < 50 && !$m; $i++) {
        $m = $ch->basic_get($name, true);
        if (!$m) {
            usleep(100000);
        }
    }
    check($m, 'no message');
    $got = $m->getBody();
    check(strlen($got) === $size && hash('sha256', $got) === hash('sha256', $body), 'body differs: ' . strlen($got) . ' bytes');
    $ch->queue_delete($name);
    $c->close();
}, 120);

// RabbitMQ's topic semantics: "*" one word, "#" zero or more, words may be empty ("a..c"),
// the empty key has no words (so "#" and "" match it, "*" does not).
const TOPIC_BINDINGS = ['q1' => 'a.*.c', 'q2' => 'a.#', 'q3' => '*.b', 'q4' => '#.c', 'q5' => '#', 'q6' => 'a.#.c',
    'q7' => '*', 'q8' => ''];
const TOPIC_KEYS = ['a.b.c', 'a', 'a.b', 'x.b', 'a.b.c.d', 'c', 'x.y', 'a.x.y.c', '', 'a..c', 'a.c'];
const TOPIC_EXPECT = [
    'q1' => ['a.b.c', 'a..c'],
    'q2' => ['a.b.c', 'a', 'a.b', 'a.b.c.d', 'a.x.y.c', 'a..c', 'a.c'],
    'q3' => ['a.b', 'x.b'],
    'q4' => ['a.b.c', 'c', 'a.x.y.c', 'a..c', 'a.c'],
    'q5' => ['a.b.c', 'a', 'a.b', 'x.b', 'a.b.c.d', 'c', 'x.y', 'a.x.y.c', '', 'a..c', 'a.c'],
    'q6' => ['a.b.c', 'a.x.y.c', 'a..c', 'a.c'],
    'q7' => ['a', 'c'],
    'q8' => [''],
];

scenario('topic-routing', function () {
    $c = connect();
    $ch = $c->channel();
    $ex = q('topic.ex');
    $ch->exchange_delete($ex);
    $ch->exchange_declare($ex, 'topic', false, false, false);
    foreach (TOPIC_BINDINGS as $k => $pattern) {
        $ch->queue_delete(q("topic.$k"));
        $ch->queue_declare(q("topic.$k"), false, false, false, false);
        $ch->queue_bind(q("topic.$k"), $ex, $pattern);
    }
    foreach (TOPIC_KEYS as $key) {
        $ch->basic_publish(new AMQPMessage($key), $ex, $key);
    }
    foreach (TOPIC_EXPECT as $k => $want) {
        $got = drain($ch, q("topic.$k"));
        check($got === $want, TOPIC_BINDINGS[$k] . ' got ' . json_encode($got) . ', expected ' . json_encode($want));
        $ch->queue_delete(q("topic.$k"));
    }
    $ch->exchange_delete($ex);
    $c->close();
});

function headers_scenario($match, $want)
{
    return function () use ($match, $want) {
        $c = connect();
        $ch = $c->channel();
        $ex = q("headers.$match.ex");
        $name = q("headers.$match");
        $ch->queue_delete($name);
        $ch->exchange_delete($ex);
        $ch->exchange_declare($ex, 'headers', false, false, false);
        $ch->queue_declare($name, false, false, false, false);
        $ch->queue_bind($name, $ex, '', false, new AMQPTable(['x-match' => $match, 'a' => 1, 'b' => 'two']));
        $msgs = [
            'both' => ['a' => 1, 'b' => 'two'],
            'both+extra' => ['a' => 1, 'b' => 'two', 'c' => 3],
            'only-a' => ['a' => 1],
            'only-b' => ['b' => 'two', 'c' => 3],
            'a-differs' => ['a' => 2, 'b' => 'three'],
            'a-string' => ['a' => '1'], // a string never equals an integer
            'none' => null,
        ];
        foreach ($msgs as $body => $headers) {
            $props = $headers === null ? [] : ['application_headers' => new AMQPTable($headers)];
            $ch->basic_publish(new AMQPMessage($body, $props), $ex, 'ignored');
        }
        $got = drain($ch, $name);
        check($got === $want, "x-match=$match got " . json_encode($got) . ', expected ' . json_encode($want));
        $ch->queue_delete($name);
        $ch->exchange_delete($ex);
        $c->close();
    };
}
scenario('headers-all', headers_scenario('all', ['both', 'both+extra']));
scenario('headers-any', headers_scenario('any', ['both', 'both+extra', 'only-a', 'only-b']));

// A stream queue: declared durable with x-queue-type stream, published with confirms, read by
// two consumers at their own offsets (prefetch first, manual acks), each delivery carrying its
// x-stream-offset.
scenario('stream-queue', function () {
    $c = connect();
    $ch = $c->channel();
    $name = q('stream');
    $ch->queue_delete($name);
    $ch->queue_declare($name, false, true, false, false, false, new AMQPTable(['x-queue-type' => 'stream']));
    $ch->confirm_select();
    for ($i = 0; $i < 5; $i++) {
        $ch->basic_publish(new AMQPMessage("s$i"), '', $name);
    }
    $ch->wait_for_pending_acks(5);
    $ch->basic_qos(0, 10, false);
    foreach ([['first', 0], [3, 3]] as [$start, $from]) {
        $got = [];
        $tag = $ch->basic_consume($name, '', false, false, false, false, function ($m) use (&$got) {
            $headers = $m->get('application_headers')->getNativeData();
            $got[] = [$m->getBody(), $headers['x-stream-offset']];
            $m->ack();
        }, null, new AMQPTable(['x-stream-offset' => $start]));
        $deadline = microtime(true) + 5;
        while (count($got) < 5 - $from && microtime(true) < $deadline) {
            pump($ch, 0.2);
        }
        $ch->basic_cancel($tag);
        $want = [];
        for ($i = $from; $i < 5; $i++) {
            $want[] = ["s$i", $i];
        }
        check($got === $want, "$start: got " . json_encode($got));
    }
    $ch->queue_delete($name);
    $c->close();
});

scenario('heartbeat', function () {
    $c = connect(PASSWORD, 1);
    check($c->getHeartbeat() === 1, 'negotiated heartbeat ' . $c->getHeartbeat());
    $ch = $c->channel();
    // idle for 5 s inside wait(): php-amqplib sends its heartbeats from its I/O loop and
    // throws if the broker sends nothing for 2 intervals
    $t0 = microtime(true);
    pump($ch, 5);
    check(microtime(true) - $t0 >= 4.9, 'idled less than 5 s');
    check($c->isConnected(), 'connection closed while idle');
    [$name] = $ch->queue_declare('', false, false, true, true);
    $ch->basic_publish(new AMQPMessage('alive'), '', $name);
    $m = $ch->basic_get($name, true);
    check($m && $m->getBody() === 'alive', 'connection not usable after idling');
    $c->close();
});

scenario('consumer-cancel-notify', function () {
    $c = connect();
    $ch = $c->channel();
    $other = $c->channel();
    $name = q('cancel');
    $other->queue_delete($name);
    $other->queue_declare($name, false, false, false, false);
    $tag = $ch->basic_consume($name, 'it-php-cancel', false, false, false, false, fn() => null);
    $other->queue_delete($name);
    try {
        $ch->wait(null, false, 5);
        throw new Fail('no basic.cancel from the broker');
    } catch (AMQPBasicCancelException $e) {
        // php-amqplib surfaces a server basic.cancel as this exception
        check($e->getConsumerTag() === $tag, 'cancel for ' . $e->getConsumerTag());
    } catch (AMQPTimeoutException $e) {
        throw new Fail('no basic.cancel from the broker within 5 s');
    }
    check($ch->is_open(), 'channel closed');
    $c->close();
});

// ---------------------------------------------------------------------------------------------
// Cross-client

function load_expected()
{
    return json_decode(file_get_contents(EXPECTED), true, 512, JSON_BIGINT_AS_STRING | JSON_THROW_ON_ERROR);
}

function subst($v)
{
    return $v === '${login}' ? LOGIN : $v;
}

function strip_tags_typed($typed, $banned)
{
    [$tag, $v] = $typed;
    if ($tag === 'F') {
        $o = [];
        foreach ($v as $k => $x) {
            if (!in_array($x[0], $banned, true)) {
                $o[$k] = strip_tags_typed($x, $banned);
            }
        }
        return ['F', $o];
    }
    if ($tag === 'A') {
        $o = [];
        foreach ($v as $x) {
            if (!in_array($x[0], $banned, true)) {
                $o[] = strip_tags_typed($x, $banned);
            }
        }
        return ['A', $o];
    }
    return $typed;
}

const TYPES = [
    'b' => C::T_INT_SHORTSHORT, 'B' => C::T_INT_SHORTSHORT_U, 's' => C::T_INT_SHORT, 'u' => C::T_INT_SHORT_U,
    'I' => C::T_INT_LONG, 'i' => C::T_INT_LONG_U, 'l' => C::T_INT_LONGLONG, 'f' => C::T_FLOAT, 'd' => C::T_DOUBLE,
    'D' => C::T_DECIMAL, 'T' => C::T_TIMESTAMP, 'V' => C::T_VOID, 't' => C::T_BOOL, 'S' => C::T_STRING_LONG,
    'A' => C::T_ARRAY, 'F' => C::T_TABLE, 'x' => C::T_BYTES,
];

// typed -> [value, php-amqplib type constant]
function native($typed)
{
    [$tag, $v] = $typed;
    switch ($tag) {
        case 'F':
            $t = new AMQPTable();
            foreach ($v as $k => $x) {
                [$nv, $nt] = native($x);
                $t->set((string) $k, $nv, $nt);
            }
            return [$t, C::T_TABLE];
        case 'A':
            $a = new AMQPArray();
            foreach ($v as $x) {
                [$nv, $nt] = native($x);
                $a->push($nv, $nt);
            }
            return [$a, C::T_ARRAY];
        case 'D':
            return [new AMQPDecimal($v[1], $v[0]), C::T_DECIMAL];
        case 'x':
            return [hex2bin($v), C::T_BYTES];
        case 'f':
        case 'd':
            throw new Exception('php-amqplib cannot write float fields');
        case 'l':
            return [(int) $v, C::T_INT_LONGLONG];
        default:
            return [$v, TYPES[$tag]];
    }
}

const PROPS = ['content_type', 'content_encoding', 'delivery_mode', 'priority', 'correlation_id', 'reply_to',
    'expiration', 'message_id', 'timestamp', 'type', 'user_id', 'app_id', 'cluster_id'];

function cross_publish()
{
    $exp = load_expected();
    $me = $exp['publishers'][ME];
    $c = connect();
    $ch = $c->channel();
    $ch->confirm_select();
    $nacked = 0;
    $ch->set_nack_handler(function () use (&$nacked) {
        $nacked++;
    });
    foreach (CLIENTS as $consumer) {
        $banned = $exp['consumers'][$consumer]['cannot_decode'] ?? [];
        [$headers] = native(strip_tags_typed(['F', $me['headers']], $banned));
        $props = ['application_headers' => $headers];
        foreach ($me['properties'] as $k => $v) {
            $props[$k] = subst($v);
        }
        $name = 'xc.' . ME . ".$consumer";
        $ch->queue_delete($name);
        $ch->queue_declare($name, false, false, false, false);
        $ch->basic_publish(new AMQPMessage($me['body'], $props), '', $name, true);
    }
    $ch->wait_for_pending_acks_returns(10);
    check($nacked === 0, 'nacked');
    $c->close();
}

function compare($typed, $got, $where, &$errs)
{
    // $got is [type constant, value] as AMQPTable/AMQPArray iteration yields it
    [$tag, $v] = $typed;
    [$gtype, $gval] = $got;
    $gtag = C::getSymbolForDataType($gtype);
    if ($gtag !== $tag) {
        $errs[] = "$where: type $gtag, expected $tag";
        return;
    }
    $bad = function ($what) use ($where, $tag, $v, $gval, &$errs) {
        $errs[] = "$where: $what (expected $tag " . json_encode($v) . ', got ' . var_export($gval, true) . ')';
    };
    switch ($tag) {
        case 'S':
            if ($gval !== $v) {
                $bad('string');
            }
            break;
        case 'x':
            if ($gval !== hex2bin($v)) {
                $bad('bytes');
            }
            break;
        case 'l':
            if ((string) $gval !== (string) $v) {
                $bad('int64');
            }
            break;
        case 'b': case 'B': case 's': case 'u': case 'I': case 'i': case 'T':
            if ((int) $gval !== $v) {
                $bad('integer');
            }
            break;
        case 'f': case 'd':
            if ((float) $gval !== (float) $v) {
                $bad('float');
            }
            break;
        case 't':
            if ((bool) $gval !== $v) {
                $bad('bool');
            }
            break;
        case 'V':
            if ($gval !== null) {
                $bad('void');
            }
            break;
        case 'D':
            if (!($gval instanceof AMQPDecimal) || $gval->getE() !== $v[0] || $gval->getN() !== $v[1]) {
                $bad('decimal');
            }
            break;
        case 'F':
            $entries = [];
            foreach ($gval as $k => $e) {
                $entries[(string) $k] = $e;
            }
            $gk = array_map('strval', array_keys($entries));
            $wk = array_map('strval', array_keys($v));
            sort($gk);
            sort($wk);
            if ($gk !== $wk) {
                $errs[] = "$where: keys " . json_encode($gk) . ' != expected ' . json_encode($wk);
            }
            foreach ($v as $k => $x) {
                if (array_key_exists((string) $k, $entries)) {
                    compare($x, $entries[(string) $k], "$where.$k", $errs);
                }
            }
            break;
        case 'A':
            $items = [];
            foreach ($gval as $e) {
                $items[] = $e;
            }
            if (count($items) !== count($v)) {
                $bad('array length ' . count($items));
                break;
            }
            foreach ($v as $i => $x) {
                compare($x, $items[$i], "{$where}[$i]", $errs);
            }
            break;
    }
}

function cross_consume()
{
    $exp = load_expected();
    $banned = $exp['consumers'][ME]['cannot_decode'];
    $c = connect();
    foreach (CLIENTS as $pub) {
        $name = "cross-from-$pub";
        try {
            $ch = $c->channel();
            $want = $exp['publishers'][$pub];
            $qn = "xc.$pub." . ME;
            $m = $ch->basic_get($qn, true);
            check($m, "no message in $qn");
            $errs = [];
            if ($m->getBody() !== $want['body']) {
                $errs[] = 'body ' . json_encode($m->getBody());
            }
            $props = $m->get_properties();
            foreach (PROPS as $k) {
                $w = subst($want['properties'][$k] ?? null);
                $g = $props[$k] ?? null;
                if ($g !== $w) {
                    $errs[] = "property $k: " . var_export($g, true) . ' != ' . var_export($w, true);
                }
            }
            $headers = $props['application_headers'] ?? null;
            if (!($headers instanceof AMQPTable)) {
                $errs[] = 'no headers table';
            } else {
                compare(strip_tags_typed(['F', $want['headers']], $banned), [C::T_TABLE, $headers], 'headers', $errs);
            }
            if ($ch->basic_get($qn, true) !== null) {
                $errs[] = 'more than one message';
            }
            $ch->queue_delete($qn);
            $ch->close();
            check(!$errs, implode('; ', $errs));
            echo "PASS $name\n";
        } catch (Throwable $e) {
            echo "FAIL $name: " . get_class($e) . ': ' . str_replace("\n", ' ', $e->getMessage()) . "\n";
            if (!$c->isConnected()) {
                $c = connect();
            }
        }
    }
    $c->close();
}

class ScenarioTimeout extends Exception {}

function run_one($name, $fn, $timeout)
{
    $start = microtime(true);
    if (function_exists('pcntl_alarm')) {
        pcntl_async_signals(true);
        pcntl_signal(SIGALRM, function () {
            throw new ScenarioTimeout('scenario timed out');
        });
        pcntl_alarm($timeout);
    }
    try {
        $fn();
        echo "PASS $name\n";
    } catch (NA $e) {
        echo "NA $name: {$e->getMessage()}\n";
    } catch (Throwable $e) {
        echo "FAIL $name: " . get_class($e) . ': ' . str_replace("\n", ' ', $e->getMessage()) . "\n";
        fwrite(STDERR, $e->getTraceAsString() . "\n");
    } finally {
        if (function_exists('pcntl_alarm')) {
            pcntl_alarm(0);
        }
    }
    fwrite(STDERR, sprintf("[%s] %s: %.2fs\n", ME, $name, microtime(true) - $start));
}

$mode = $argv[1] ?? 'scenarios';
$only = array_filter(preg_split('/\s+/', trim(getenv('INTEROP_ONLY') ?: '')));
if ($mode === 'scenarios') {
    foreach ($SCENARIOS as [$name, $fn, $timeout]) {
        if (!$only || in_array($name, $only, true)) {
            run_one($name, $fn, $timeout);
        }
    }
} elseif ($mode === 'cross-publish') {
    run_one('cross-publish', 'cross_publish', 60);
} elseif ($mode === 'cross-consume') {
    cross_consume();
} else {
    fwrite(STDERR, "unknown mode $mode\n");
    exit(2);
}
exit(0);
