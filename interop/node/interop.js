// warren interop scenarios for amqplib (Node.js).
//
// Usage: node interop.js MODE      MODE = scenarios | cross-publish | cross-consume
// Environment: AMQP_URL (amqp://user:pass@host:port), INTEROP_CLIENTS, INTEROP_EXPECTED,
// INTEROP_ONLY (scenario names to run). Prints "PASS name" / "FAIL name: reason" / "NA name: reason".
'use strict';

const amqp = require('amqplib');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const ME = 'node';
const URL_BASE = (process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672').replace(/\/+$/, '');
const LOGIN = decodeURIComponent(new URL(URL_BASE).username || 'guest');
const EXPECTED = process.env.INTEROP_EXPECTED || path.join(__dirname, '..', 'cross', 'expected.json');
const CLIENTS = (process.env.INTEROP_CLIENTS || 'python node c ruby php').split(/\s+/).filter(Boolean);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const q = (name) => `it.${ME}.${name}`;

class Fail extends Error {}
class NA extends Error {}
function check(cond, msg) {
  if (!cond) throw new Fail(msg);
}

async function connect(url = URL_BASE, query = '') {
  const conn = await amqp.connect(`${url}/%2F${query}`);
  conn.on('error', () => {}); // reported through the promises instead
  return conn;
}

async function channel(conn, confirm = false) {
  const ch = confirm ? await conn.createConfirmChannel() : await conn.createChannel();
  ch.on('error', () => {});
  return ch;
}

// Runs fn(ch) on a fresh channel and expects the broker to close the channel with code/text.
async function expectChannelError(conn, fn, code, textPrefix) {
  const ch = await channel(conn);
  try {
    await fn(ch);
  } catch (e) {
    const m = /with message "([^"]*)"/.exec(e.message);
    const text = m ? m[1] : e.message;
    check(e.code === code && text.startsWith(textPrefix), `expected ${code} ${textPrefix}, got ${e.code} ${e.message}`);
    return;
  }
  throw new Fail(`expected channel error ${code} ${textPrefix}, got none`);
}

async function drain(ch, queue) {
  const out = [];
  for (let i = 0; i < 100; i++) {
    const m = await ch.get(queue, { noAck: true });
    if (!m) break;
    out.push(m.content.toString());
  }
  return out;
}

async function count(ch, queue) {
  return (await ch.checkQueue(queue)).messageCount;
}

// Polls the ready count until it is n: RabbitMQ may answer a passive declare before the
// channel's earlier publishes have reached the queue.
async function waitCount(ch, queue, n, ms = 5000) {
  const end = Date.now() + ms;
  while ((await count(ch, queue)) !== n && Date.now() < end) await sleep(20);
  return (await count(ch, queue)) === n;
}

// Waits until pred() holds or ms pass.
async function until(pred, ms) {
  const end = Date.now() + ms;
  while (!pred() && Date.now() < end) await sleep(20);
  return pred();
}

const SCENARIOS = [];
function scenario(name, fn, timeout = 60000) {
  SCENARIOS.push({ name, fn, timeout });
}

// ---------------------------------------------------------------------------------------------

scenario('connect-ok', async () => {
  const c = await connect();
  const caps = c.connection.serverProperties.capabilities || {};
  check(caps.consumer_cancel_notify === true, `capabilities ${JSON.stringify(caps)}`);
  await channel(c);
  await c.close();
});

scenario('connect-bad-credentials', async () => {
  const u = new URL(URL_BASE);
  u.password = 'wrong-password';
  try {
    const c = await connect(u.toString().replace(/\/+$/, ''));
    await c.close();
  } catch (e) {
    check(/403 \(ACCESS-REFUSED\)/.test(e.message) && /ACCESS_REFUSED/.test(e.message), `error: ${e.message}`);
    return;
  }
  throw new Fail('connection succeeded with a wrong password');
});

for (const kind of ['direct', 'fanout', 'topic', 'headers']) {
  scenario(`declare-exchange-${kind}`, async () => {
    const c = await connect();
    const ch = await channel(c);
    const name = q(`ex.${kind}`);
    await ch.deleteExchange(name);
    await ch.assertExchange(name, kind, { durable: false, autoDelete: false });
    await ch.assertExchange(name, kind, { durable: false, autoDelete: false });
    await ch.checkExchange(name);
    const other = kind === 'fanout' ? 'direct' : 'fanout';
    await expectChannelError(c, (x) => x.assertExchange(name, other, { durable: false }), 406, 'PRECONDITION_FAILED');
    await ch.deleteExchange(name);
    await expectChannelError(c, (x) => x.checkExchange(name), 404, 'NOT_FOUND');
    await c.close();
  });
}

scenario('declare-queue', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('declare');
  await ch.deleteQueue(name);
  const ok = await ch.assertQueue(name, { durable: false });
  check(ok.queue === name && ok.messageCount === 0 && ok.consumerCount === 0, `declare-ok ${JSON.stringify(ok)}`);
  await ch.checkQueue(name);
  await ch.deleteQueue(name);
  await expectChannelError(c, (x) => x.checkQueue(name), 404, 'NOT_FOUND');
  await c.close();
});

scenario('bind', async () => {
  const c = await connect();
  const ch = await channel(c);
  const ex = q('bind.ex');
  const name = q('bind');
  await ch.deleteQueue(name);
  await ch.deleteExchange(ex);
  await ch.assertExchange(ex, 'direct', { durable: false });
  await ch.assertQueue(name, { durable: false });
  await ch.bindQueue(name, ex, 'k1');
  ch.publish(ex, 'k1', Buffer.from('one'));
  ch.publish(ex, 'k2', Buffer.from('two'));
  await ch.unbindQueue(name, ex, 'k1');
  ch.publish(ex, 'k1', Buffer.from('three'));
  const got = await drain(ch, name);
  check(JSON.stringify(got) === '["one"]', `got ${JSON.stringify(got)}`);
  await ch.deleteQueue(name);
  await ch.deleteExchange(ex);
  await c.close();
});

scenario('publish-consume-ack', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('pca');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  for (let i = 0; i < 3; i++) ch.sendToQueue(name, Buffer.from(`m${i}`));
  const got = [];
  let redelivered = false;
  const { consumerTag } = await ch.consume(name, (m) => {
    got.push(m.content.toString());
    redelivered ||= m.fields.redelivered;
    ch.ack(m);
  });
  check(await until(() => got.length === 3, 5000), `got ${JSON.stringify(got)}`);
  await ch.cancel(consumerTag);
  check(JSON.stringify(got) === '["m0","m1","m2"]' && !redelivered, `got ${JSON.stringify(got)} redelivered=${redelivered}`);
  check((await count(ch, name)) === 0, 'queue not empty after acks');
  await ch.deleteQueue(name);
  await c.close();
});

scenario('nack-requeue', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('nack');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  ch.sendToQueue(name, Buffer.from('again'));
  const got = [];
  const { consumerTag } = await ch.consume(name, (m) => {
    got.push(m);
    if (got.length === 1) ch.nack(m, false, true);
    else ch.ack(m);
  });
  check(await until(() => got.length === 2, 5000), `${got.length} deliveries`);
  await ch.cancel(consumerTag);
  check(!got[0].fields.redelivered && got[1].fields.redelivered, 'redelivered flags wrong');
  check(got[1].content.toString() === 'again', 'body');
  check((await count(ch, name)) === 0, 'queue not empty');
  // requeued messages go back to their original place, ahead of later ones
  for (const b of ['a', 'b', 'c']) ch.sendToQueue(name, Buffer.from(b));
  const ma = await ch.get(name);
  const mb = await ch.get(name);
  ch.nack(mb, false, true);
  ch.nack(ma, false, true);
  const after = [];
  for (let i = 0; i < 3; i++) {
    const m = await ch.get(name, { noAck: true });
    after.push(m && [m.fields.redelivered, m.content.toString()]);
  }
  check(JSON.stringify(after) === JSON.stringify([[true, 'a'], [true, 'b'], [false, 'c']]), `after two nacks got ${JSON.stringify(after)}`);
  await ch.deleteQueue(name);
  await c.close();
});

scenario('reject-discard', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('reject');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  ch.sendToQueue(name, Buffer.from('gone'));
  const m = await ch.get(name);
  check(m && m.content.toString() === 'gone', 'no message');
  ch.reject(m, false);
  check((await ch.get(name)) === false, 'message came back');
  check((await count(ch, name)) === 0, 'queue not empty');
  await ch.deleteQueue(name);
  await c.close();
});

scenario('get-full', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('getfull');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  for (let i = 0; i < 3; i++) ch.sendToQueue(name, Buffer.from(`g${i}`));
  const m = await ch.get(name);
  check(m && m.content.toString() === 'g0', 'first message');
  check(m.fields.messageCount === 2, `messageCount ${m.fields.messageCount}`);
  check(!m.fields.redelivered && m.fields.exchange === '' && m.fields.routingKey === name, JSON.stringify(m.fields));
  ch.ack(m);
  check((await count(ch, name)) === 2, 'count after ack');
  await ch.deleteQueue(name);
  await c.close();
});

scenario('get-empty', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('getempty');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  check((await ch.get(name)) === false, 'get on an empty queue returned a message');
  await ch.deleteQueue(name);
  await c.close();
});

scenario('prefetch', async () => {
  const c = await connect();
  const ch = await channel(c);
  const other = await channel(c);
  const name = q('prefetch');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  for (let i = 0; i < 10; i++) ch.sendToQueue(name, Buffer.from(`p${i}`));
  await ch.prefetch(3);
  const got = [];
  await ch.consume(name, (m) => got.push(m));
  await sleep(1000);
  check(got.length === 3, `${got.length} deliveries in flight with prefetch 3`);
  ch.ack(got[0]);
  await sleep(1000);
  check(got.length === 4, `${got.length} deliveries after one ack, expected 4`);
  check((await count(other, name)) === 6, 'ready count');
  ch.ack(got[got.length - 1], true);
  await sleep(1000);
  check(got.length === 7, `${got.length} deliveries after multiple ack, expected 7`);
  await other.deleteQueue(name);
  await c.close();
});

scenario(
  'confirms-10k',
  async () => {
    const c = await connect();
    const ch = await channel(c, true);
    const name = q('confirms');
    await ch.deleteQueue(name);
    await ch.assertQueue(name, { durable: false });
    let acked = 0;
    let nacked = 0;
    for (let i = 0; i < 10000; i++) {
      const ok = ch.sendToQueue(name, Buffer.from(`c${i}`), {}, (err) => (err ? nacked++ : acked++));
      if (!ok) await new Promise((r) => ch.once('drain', r));
    }
    await ch.waitForConfirms();
    check(acked === 10000 && nacked === 0, `acked ${acked} nacked ${nacked}`);
    check((await count(ch, name)) === 10000, 'count');
    await ch.deleteQueue(name);
    await c.close();
  },
  180000,
);

scenario('mandatory-return', async () => {
  const c = await connect();
  const ch = await channel(c, true);
  const returned = [];
  ch.on('return', (m) => returned.push(m));
  const key = q('nowhere');
  let confirmed = null;
  ch.publish('', key, Buffer.from('lost'), { mandatory: true }, (err) => {
    confirmed = { err, returnedBefore: returned.length };
  });
  await ch.waitForConfirms();
  check(returned.length === 1, 'no basic.return');
  const f = returned[0].fields;
  check(f.replyCode === 312 && f.replyText === 'NO_ROUTE', `return ${f.replyCode} ${f.replyText}`);
  check(f.exchange === '' && f.routingKey === key && returned[0].content.toString() === 'lost', JSON.stringify(f));
  check(confirmed && !confirmed.err && confirmed.returnedBefore === 1, 'the ack did not follow the return');
  await c.close();
});

scenario('exclusive-locked', async () => {
  const c1 = await connect();
  const ch1 = await channel(c1);
  const name = q('exclusive');
  await ch1.assertQueue(name, { exclusive: true, durable: false });
  const c2 = await connect();
  await expectChannelError(c2, (x) => x.assertQueue(name, { durable: false }), 405, 'RESOURCE_LOCKED');
  await expectChannelError(c2, (x) => x.consume(name, () => {}), 405, 'RESOURCE_LOCKED');
  await c1.close();
  await expectChannelError(c2, (x) => x.checkQueue(name), 404, 'NOT_FOUND');
  await c2.close();
});

scenario('server-named-queue', async () => {
  const c = await connect();
  const ch = await channel(c);
  const { queue } = await ch.assertQueue('', { exclusive: true });
  check(queue.startsWith('amq.gen-'), `name ${queue}`);
  ch.sendToQueue(queue, Buffer.from('to a generated name'));
  const m = await ch.get(queue, { noAck: true });
  check(m && m.content.toString() === 'to a generated name', 'message');
  await c.close();
});

scenario('purge-count', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('purge');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  for (let i = 0; i < 5; i++) ch.sendToQueue(name, Buffer.from('x'));
  check(await waitCount(ch, name, 5), 'count before purge');
  const holder = await channel(c);
  await holder.get(name); // one unacked message: purge leaves it alone
  const { messageCount } = await ch.purgeQueue(name);
  check(messageCount === 4, `purge-ok messageCount ${messageCount}, expected 4 (5 ready, 1 of them then unacked)`);
  check((await count(ch, name)) === 0, 'not empty after purge');
  await holder.close(); // the unacked one comes back
  check((await count(ch, name)) === 1, 'count after closing the holder');
  await ch.deleteQueue(name);
  await c.close();
});

scenario('delete-count', async () => {
  const c = await connect();
  const ch = await channel(c);
  const name = q('delete');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: false });
  for (let i = 0; i < 5; i++) ch.sendToQueue(name, Buffer.from('x'));
  check(await waitCount(ch, name, 5), 'count before delete');
  const holder = await channel(c);
  await holder.get(name); // unacked messages are not counted
  const { messageCount } = await ch.deleteQueue(name);
  check(messageCount === 4, `delete-ok messageCount ${messageCount}, expected 4 (5 published, 1 unacked)`);
  await expectChannelError(c, (x) => x.checkQueue(name), 404, 'NOT_FOUND');
  await c.close();
});

scenario('tx-commit', async () => {
  throw new NA('amqplib has no transaction API (tx.select/commit/rollback)');
});
scenario('tx-rollback', async () => {
  throw new NA('amqplib has no transaction API (tx.select/commit/rollback)');
});

scenario(
  'large-message-10mib',
  async () => {
    const c = await connect();
    const ch = await channel(c);
    const name = q('large');
    await ch.deleteQueue(name);
    await ch.assertQueue(name, { durable: false });
    const size = 10 * 1024 * 1024;
    const body = Buffer.alloc(size);
    for (let i = 0; i < size; i++) body[i] = i % 251;
    ch.sendToQueue(name, body);
    let m = false;
    for (let i = 0; i < 50 && !m; i++) {
      m = await ch.get(name, { noAck: true });
      if (!m) await sleep(100);
    }
    check(m, 'no message');
    const h = (b) => crypto.createHash('sha256').update(b).digest('hex');
    check(m.content.length === size && h(m.content) === h(body), `body differs: ${m.content.length} bytes`);
    await ch.deleteQueue(name);
    await c.close();
  },
  120000,
);

// RabbitMQ's topic semantics: "*" one word, "#" zero or more, words may be empty ("a..c"),
// the empty key has no words (so "#" and "" match it, "*" does not).
const TOPIC_BINDINGS = { q1: 'a.*.c', q2: 'a.#', q3: '*.b', q4: '#.c', q5: '#', q6: 'a.#.c', q7: '*', q8: '' };
const TOPIC_KEYS = ['a.b.c', 'a', 'a.b', 'x.b', 'a.b.c.d', 'c', 'x.y', 'a.x.y.c', '', 'a..c', 'a.c'];
const TOPIC_EXPECT = {
  q1: ['a.b.c', 'a..c'],
  q2: ['a.b.c', 'a', 'a.b', 'a.b.c.d', 'a.x.y.c', 'a..c', 'a.c'],
  q3: ['a.b', 'x.b'],
  q4: ['a.b.c', 'c', 'a.x.y.c', 'a..c', 'a.c'],
  q5: ['a.b.c', 'a', 'a.b', 'x.b', 'a.b.c.d', 'c', 'x.y', 'a.x.y.c', '', 'a..c', 'a.c'],
  q6: ['a.b.c', 'a.x.y.c', 'a..c', 'a.c'],
  q7: ['a', 'c'],
  q8: [''],
};

scenario('topic-routing', async () => {
  const c = await connect();
  const ch = await channel(c);
  const ex = q('topic.ex');
  await ch.deleteExchange(ex);
  await ch.assertExchange(ex, 'topic', { durable: false });
  for (const [k, pattern] of Object.entries(TOPIC_BINDINGS)) {
    await ch.deleteQueue(q(`topic.${k}`));
    await ch.assertQueue(q(`topic.${k}`), { durable: false });
    await ch.bindQueue(q(`topic.${k}`), ex, pattern);
  }
  for (const key of TOPIC_KEYS) ch.publish(ex, key, Buffer.from(key));
  for (const [k, want] of Object.entries(TOPIC_EXPECT)) {
    const got = await drain(ch, q(`topic.${k}`));
    check(JSON.stringify(got) === JSON.stringify(want), `${TOPIC_BINDINGS[k]} got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    await ch.deleteQueue(q(`topic.${k}`));
  }
  await ch.deleteExchange(ex);
  await c.close();
});

function headersScenario(match, want) {
  return async () => {
    const c = await connect();
    const ch = await channel(c);
    const ex = q(`headers.${match}.ex`);
    const name = q(`headers.${match}`);
    await ch.deleteQueue(name);
    await ch.deleteExchange(ex);
    await ch.assertExchange(ex, 'headers', { durable: false });
    await ch.assertQueue(name, { durable: false });
    await ch.bindQueue(name, ex, '', { 'x-match': match, a: 1, b: 'two' });
    const msgs = {
      both: { a: 1, b: 'two' },
      'both+extra': { a: 1, b: 'two', c: 3 },
      'only-a': { a: 1 },
      'only-b': { b: 'two', c: 3 },
      'a-differs': { a: 2, b: 'three' },
      'a-string': { a: '1' }, // a string never equals an integer
      none: undefined,
    };
    for (const [body, headers] of Object.entries(msgs)) ch.publish(ex, 'ignored', Buffer.from(body), { headers });
    const got = await drain(ch, name);
    check(JSON.stringify(got) === JSON.stringify(want), `x-match=${match} got ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
    await ch.deleteQueue(name);
    await ch.deleteExchange(ex);
    await c.close();
  };
}
scenario('headers-all', headersScenario('all', ['both', 'both+extra']));
scenario('headers-any', headersScenario('any', ['both', 'both+extra', 'only-a', 'only-b']));

// A stream queue: declared durable with x-queue-type stream, published with confirms, read by
// two consumers at their own offsets (prefetch first, manual acks), each delivery carrying its
// x-stream-offset; basic.get on it is a connection error (540).
scenario('stream-queue', async () => {
  const c = await connect();
  const ch = await channel(c, true);
  const name = q('stream');
  await ch.deleteQueue(name);
  await ch.assertQueue(name, { durable: true, arguments: { 'x-queue-type': 'stream' } });
  for (let i = 0; i < 5; i++) ch.sendToQueue(name, Buffer.from(`s${i}`));
  await ch.waitForConfirms();
  await ch.prefetch(10);
  for (const [start, from] of [['first', 0], [3, 3]]) {
    const got = [];
    const { consumerTag } = await ch.consume(
      name,
      (m) => {
        got.push([m.content.toString(), m.properties.headers['x-stream-offset']]);
        ch.ack(m);
      },
      { arguments: { 'x-stream-offset': start } },
    );
    await until(() => got.length >= 5 - from, 5000);
    await ch.cancel(consumerTag);
    const want = [];
    for (let i = from; i < 5; i++) want.push([`s${i}`, i]);
    check(JSON.stringify(got) === JSON.stringify(want), `${start}: got ${JSON.stringify(got)}`);
  }
  const other = await connect();
  const closed = new Promise((resolve) => other.on('close', resolve));
  const och = await channel(other);
  try {
    await och.get(name);
    throw new Fail('basic.get on a stream was not refused');
  } catch (e) {
    if (e instanceof Fail) throw e;
  }
  const err = await Promise.race([closed, sleep(5000).then(() => null)]);
  check(err && err.code === 540, `basic.get: ${err && err.message}`);
  await ch.deleteQueue(name);
  await c.close();
});

scenario('heartbeat', async () => {
  const c = await connect(URL_BASE, '?heartbeat=1');
  let closed = null;
  c.on('close', (e) => {
    closed = e || 'closed';
  });
  check(c.connection.heartbeat === 1, `negotiated heartbeat ${c.connection.heartbeat}`);
  // idle for 5 s: amqplib sends ours and drops the connection if the broker's stop for 2 intervals
  await sleep(5000);
  check(closed === null, `connection closed while idle: ${closed}`);
  const ch = await channel(c);
  const { queue } = await ch.assertQueue('', { exclusive: true });
  ch.sendToQueue(queue, Buffer.from('alive'));
  const m = await ch.get(queue, { noAck: true });
  check(m && m.content.toString() === 'alive', 'connection not usable after idling');
  await c.close();
});

scenario('consumer-cancel-notify', async () => {
  const c = await connect();
  const ch = await channel(c);
  const other = await channel(c);
  const name = q('cancel');
  await other.deleteQueue(name);
  await other.assertQueue(name, { durable: false });
  let cancelled = false;
  await ch.consume(name, (m) => {
    if (m === null) cancelled = true;
  });
  await other.deleteQueue(name);
  check(await until(() => cancelled, 5000), 'no basic.cancel from the broker');
  await ch.checkExchange('amq.direct'); // the channel is still open
  await c.close();
});

// ---------------------------------------------------------------------------------------------
// Cross-client

const loadExpected = () => JSON.parse(fs.readFileSync(EXPECTED, 'utf8'));
const subst = (v) => (v === '${login}' ? LOGIN : v);

function stripTags([tag, v], banned) {
  if (tag === 'F') {
    const o = {};
    for (const [k, x] of Object.entries(v)) if (!banned.includes(x[0])) o[k] = stripTags(x, banned);
    return ['F', o];
  }
  if (tag === 'A') return ['A', v.filter((x) => !banned.includes(x[0])).map((x) => stripTags(x, banned))];
  return [tag, v];
}

const TYPE = { b: 'int8', B: 'uint8', s: 'int16', u: 'uint16', I: 'int32', i: 'uint32', l: 'int64', f: 'float', d: 'double' };
function nativeValue([tag, v]) {
  if (TYPE[tag]) return { '!': TYPE[tag], value: v };
  switch (tag) {
    case 'S':
    case 't':
      return v;
    case 'V':
      return null;
    case 'x':
      return Buffer.from(v, 'hex');
    case 'D':
      return { '!': 'decimal', value: { places: v[0], digits: v[1] } };
    case 'T':
      return { '!': 'timestamp', value: v };
    case 'F': {
      const o = {};
      for (const [k, x] of Object.entries(v)) o[k] = nativeValue(x);
      return o;
    }
    case 'A':
      return v.map(nativeValue);
  }
  throw new Error(`unknown tag ${tag}`);
}

const PROPS = {
  content_type: 'contentType',
  content_encoding: 'contentEncoding',
  delivery_mode: 'deliveryMode',
  priority: 'priority',
  correlation_id: 'correlationId',
  reply_to: 'replyTo',
  expiration: 'expiration',
  message_id: 'messageId',
  timestamp: 'timestamp',
  type: 'type',
  user_id: 'userId',
  app_id: 'appId',
  cluster_id: 'clusterId',
};

async function crossPublish() {
  const exp = loadExpected();
  const me = exp.publishers[ME];
  const c = await connect();
  const ch = await channel(c, true);
  for (const consumer of CLIENTS) {
    const banned = (exp.consumers[consumer] || {}).cannot_decode || [];
    const opts = { headers: nativeValue(stripTags(['F', me.headers], banned)), mandatory: true };
    for (const [k, v] of Object.entries(me.properties)) {
      if (k === 'cluster_id') throw new Error('amqplib cannot set cluster_id');
      opts[PROPS[k]] = subst(v);
    }
    const name = `xc.${ME}.${consumer}`;
    await ch.deleteQueue(name);
    await ch.assertQueue(name, { durable: false });
    ch.sendToQueue(name, Buffer.from(me.body, 'utf8'), opts);
  }
  await ch.waitForConfirms();
  await c.close();
}

function isPlainObject(x) {
  return x !== null && typeof x === 'object' && !Array.isArray(x) && !Buffer.isBuffer(x) && !('!' in x);
}

function compare([tag, v], got, where, errs) {
  const bad = (what) => errs.push(`${where}: ${what} (expected ${tag} ${JSON.stringify(v)}, got ${typeof got} ${JSON.stringify(got)})`);
  switch (tag) {
    case 'S':
      if (got !== v) bad('string');
      break;
    case 'x':
      if (!Buffer.isBuffer(got) || got.toString('hex') !== v) bad('bytes');
      break;
    case 'b':
    case 'B':
    case 's':
    case 'u':
    case 'I':
    case 'i':
    case 'l': // decoded as Number: compared at double precision, as JSON.parse reads it
    case 'f':
    case 'd':
      if (typeof got !== 'number' || got !== v) bad('number');
      break;
    case 't':
      if (got !== v) bad('boolean');
      break;
    case 'V':
      if (got !== null) bad('void');
      break;
    case 'D':
      if (!got || got['!'] !== 'decimal' || got.value.places !== v[0] || got.value.digits !== v[1]) bad('decimal');
      break;
    case 'T':
      if (!got || got['!'] !== 'timestamp' || got.value !== v) bad('timestamp');
      break;
    case 'F': {
      if (!isPlainObject(got)) {
        bad('table');
        break;
      }
      const gk = Object.keys(got).sort();
      const wk = Object.keys(v).sort();
      if (JSON.stringify(gk) !== JSON.stringify(wk)) errs.push(`${where}: keys ${gk} != expected ${wk}`);
      for (const [k, x] of Object.entries(v)) if (k in got) compare(x, got[k], `${where}.${k}`, errs);
      break;
    }
    case 'A':
      if (!Array.isArray(got) || got.length !== v.length) {
        bad('array');
        break;
      }
      v.forEach((x, i) => compare(x, got[i], `${where}[${i}]`, errs));
      break;
    default:
      bad('unknown tag');
  }
}

async function crossConsume() {
  const exp = loadExpected();
  const banned = exp.consumers[ME].cannot_decode;
  let c = await connect();
  for (const pub of CLIENTS) {
    const name = `cross-from-${pub}`;
    try {
      const ch = await channel(c);
      const want = exp.publishers[pub];
      const qn = `xc.${pub}.${ME}`;
      const m = await ch.get(qn, { noAck: true });
      check(m, `no message in ${qn}`);
      const errs = [];
      if (!m.content.equals(Buffer.from(want.body, 'utf8'))) errs.push(`body ${JSON.stringify(m.content.toString())}`);
      for (const [k, prop] of Object.entries(PROPS)) {
        const w = subst(want.properties[k]);
        if (m.properties[prop] !== w) errs.push(`property ${k}: ${JSON.stringify(m.properties[prop])} != ${JSON.stringify(w)}`);
      }
      compare(stripTags(['F', want.headers], banned), m.properties.headers, 'headers', errs);
      if ((await ch.get(qn, { noAck: true })) !== false) errs.push('more than one message');
      await ch.deleteQueue(qn);
      await ch.close();
      check(errs.length === 0, errs.join('; '));
      console.log(`PASS ${name}`);
    } catch (e) {
      console.log(`FAIL ${name}: ${e.message.replace(/\n/g, ' ')}`);
      try {
        await c.close();
      } catch {}
      c = await connect();
    }
  }
  await c.close();
}

async function runOne(name, fn, timeout) {
  const start = Date.now();
  let timer;
  try {
    await Promise.race([fn(), new Promise((_, rej) => (timer = setTimeout(() => rej(new Error('scenario timed out')), timeout)))]);
    console.log(`PASS ${name}`);
  } catch (e) {
    if (e instanceof NA) console.log(`NA ${name}: ${e.message}`);
    else {
      console.log(`FAIL ${name}: ${(e.message || String(e)).replace(/\n/g, ' ')}`);
      console.error(e.stack);
    }
  } finally {
    clearTimeout(timer);
    console.error(`[${ME}] ${name}: ${((Date.now() - start) / 1000).toFixed(2)}s`);
  }
}

async function main() {
  const mode = process.argv[2] || 'scenarios';
  const only = (process.env.INTEROP_ONLY || '').split(/\s+/).filter(Boolean);
  if (mode === 'scenarios') {
    for (const s of SCENARIOS) if (!only.length || only.includes(s.name)) await runOne(s.name, s.fn, s.timeout);
  } else if (mode === 'cross-publish') {
    await runOne('cross-publish', crossPublish, 60000);
  } else if (mode === 'cross-consume') {
    await crossConsume();
  } else {
    console.error(`unknown mode ${mode}`);
    process.exit(2);
  }
  process.exit(0); // do not wait for connections a failed scenario left open
}

main();
