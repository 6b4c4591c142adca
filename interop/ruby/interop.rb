# frozen_string_literal: true

# warren interop scenarios for bunny (Ruby, Debian's ruby-bunny).
#
# Usage: ruby interop.rb MODE      MODE = scenarios | cross-publish | cross-consume
# Environment: AMQP_URL (amqp://user:pass@host:port), INTEROP_CLIENTS, INTEROP_EXPECTED,
# INTEROP_ONLY. Prints "PASS name" / "FAIL name: reason" / "NA name: reason".

require 'bunny'
require 'bigdecimal'
require 'digest'
require 'json'
require 'logger'
require 'stringio'
require 'timeout'
require 'uri'

$stdout.sync = true
ME = 'ruby'
URL = (ENV['AMQP_URL'] || 'amqp://guest:guest@127.0.0.1:5672').sub(%r{/+\z}, '')
LOGIN = URI.decode_www_form_component(URI.parse(URL).user || 'guest')
EXPECTED = ENV['INTEROP_EXPECTED'] || File.join(__dir__, '..', 'cross', 'expected.json')
CLIENTS = (ENV['INTEROP_CLIENTS'] || 'python node c ruby php').split

class Fail < StandardError; end
class NA < StandardError; end

def check(cond, msg)
  raise Fail, msg unless cond
end

def connect(url = URL, **opts)
  c = Bunny.new("#{url}/%2F", automatically_recover: false, logger: Logger.new($stderr, level: Logger::ERROR),
                              continuation_timeout: 15_000, **opts)
  c.start
  c
end

def q(name)
  "it.#{ME}.#{name}"
end

def drain(ch, queue)
  out = []
  100.times do
    _, _, body = ch.basic_get(queue, manual_ack: false)
    break if body.nil?

    out << body
  end
  out
end

def count(ch, queue)
  ch.queue_declare(queue, passive: true).message_count
end

# Polls the ready count until it is n: RabbitMQ may answer a passive declare before the
# channel's earlier publishes have reached the queue.
def wait_count(ch, queue, n, seconds = 5)
  deadline = Time.now + seconds
  sleep 0.02 while count(ch, queue) != n && Time.now < deadline
  count(ch, queue) == n
end

# Runs the block on a new channel of conn and expects the broker to close it with code/text.
def expect_channel_error(conn, code, text_prefix)
  ch = conn.create_channel
  begin
    yield ch
  rescue Bunny::ChannelLevelException => e
    cc = e.channel_close
    check(cc.reply_code == code && cc.reply_text.start_with?(text_prefix),
          "expected #{code} #{text_prefix}, got #{cc.reply_code} #{cc.reply_text}")
    return
  end
  raise Fail, "expected channel error #{code} #{text_prefix}, got none"
end

def wait_until(seconds)
  deadline = Time.now + seconds
  sleep 0.02 until yield || Time.now > deadline
  yield
end

SCENARIOS = []
def scenario(name, timeout = 60, &blk)
  SCENARIOS << [name, blk, timeout]
end

# ---------------------------------------------------------------------------------------------

scenario('connect-ok') do
  c = connect
  caps = c.server_capabilities || {}
  check(caps['consumer_cancel_notify'] == true, "capabilities #{caps}")
  ch = c.create_channel
  check(ch.open?, 'channel not open')
  c.close
end

scenario('connect-bad-credentials') do
  u = URI.parse(URL)
  u.password = 'wrong-password'
  log = StringIO.new
  begin
    c = Bunny.new("#{u}/%2F", automatically_recover: false, logger: Logger.new(log))
    c.start
    c.close
  rescue Bunny::AuthenticationFailureError
    # bunny raises this for a connection.close during the handshake and logs its code and text
    check(log.string.include?('403 ACCESS_REFUSED'), "logged: #{log.string.strip}")
    next
  rescue StandardError => e
    raise Fail, "wrong error #{e.class}: #{e.message}"
  end
  raise Fail, 'connection succeeded with a wrong password'
end

%w[direct fanout topic headers].each do |kind|
  scenario("declare-exchange-#{kind}") do
    c = connect
    ch = c.create_channel
    name = q("ex.#{kind}")
    ch.exchange_delete(name)
    ch.exchange_declare(name, kind, durable: false, auto_delete: false)
    ch.exchange_declare(name, kind, durable: false, auto_delete: false)
    ch.exchange_declare(name, kind, passive: true)
    other = kind == 'fanout' ? 'direct' : 'fanout'
    expect_channel_error(c, 406, 'PRECONDITION_FAILED') { |x| x.exchange_declare(name, other) }
    ch.exchange_delete(name)
    expect_channel_error(c, 404, 'NOT_FOUND') { |x| x.exchange_declare(name, kind, passive: true) }
    c.close
  end
end

scenario('declare-queue') do
  c = connect
  ch = c.create_channel
  name = q('declare')
  ch.queue_delete(name)
  ok = ch.queue_declare(name, durable: false)
  check(ok.queue == name && ok.message_count.zero? && ok.consumer_count.zero?, "declare-ok #{ok.inspect}")
  ch.queue_declare(name, passive: true)
  ch.queue_delete(name)
  expect_channel_error(c, 404, 'NOT_FOUND') { |x| x.queue_declare(name, passive: true) }
  c.close
end

scenario('bind') do
  c = connect
  ch = c.create_channel
  ex = q('bind.ex')
  name = q('bind')
  ch.queue_delete(name)
  ch.exchange_delete(ex)
  ch.exchange_declare(ex, 'direct')
  ch.queue_declare(name)
  ch.queue_bind(name, ex, routing_key: 'k1')
  ch.basic_publish('one', ex, 'k1')
  ch.basic_publish('two', ex, 'k2')
  ch.queue_unbind(name, ex, routing_key: 'k1')
  ch.basic_publish('three', ex, 'k1')
  got = drain(ch, name)
  check(got == ['one'], "got #{got}")
  ch.queue_delete(name)
  ch.exchange_delete(ex)
  c.close
end

scenario('publish-consume-ack') do
  c = connect
  ch = c.create_channel
  name = q('pca')
  ch.queue_delete(name)
  ch.queue_declare(name)
  3.times { |i| ch.basic_publish("m#{i}", '', name) }
  got = []
  redelivered = false
  consumer = ch.queue(name, passive: true).subscribe(manual_ack: true) do |info, _p, body|
    got << body
    redelivered ||= info.redelivered?
    ch.ack(info.delivery_tag)
  end
  check(wait_until(5) { got.size == 3 }, "got #{got}")
  consumer.cancel
  check(got == %w[m0 m1 m2] && !redelivered, "got #{got} redelivered=#{redelivered}")
  check(count(ch, name).zero?, 'queue not empty after acks')
  ch.queue_delete(name)
  c.close
end

scenario('nack-requeue') do
  c = connect
  ch = c.create_channel
  name = q('nack')
  ch.queue_delete(name)
  ch.queue_declare(name)
  ch.basic_publish('again', '', name)
  got = []
  consumer = ch.queue(name, passive: true).subscribe(manual_ack: true) do |info, _p, body|
    got << [info.redelivered?, body]
    if got.size == 1
      ch.nack(info.delivery_tag, false, true)
    else
      ch.ack(info.delivery_tag)
    end
  end
  check(wait_until(5) { got.size == 2 }, "#{got.size} deliveries")
  consumer.cancel
  check(got == [[false, 'again'], [true, 'again']], "deliveries #{got}")
  check(count(ch, name).zero?, 'queue not empty')
  # requeued messages go back to their original place, ahead of later ones
  %w[a b c].each { |b| ch.basic_publish(b, '', name) }
  ia, = ch.basic_get(name, manual_ack: true)
  ib, = ch.basic_get(name, manual_ack: true)
  ch.nack(ib.delivery_tag, false, true)
  ch.nack(ia.delivery_tag, false, true)
  after = Array.new(3) do
    info, _, body = ch.basic_get(name, manual_ack: false)
    [info&.redelivered, body]
  end
  check(after == [[true, 'a'], [true, 'b'], [false, 'c']], "after two nacks got #{after}")
  ch.queue_delete(name)
  c.close
end

scenario('reject-discard') do
  c = connect
  ch = c.create_channel
  name = q('reject')
  ch.queue_delete(name)
  ch.queue_declare(name)
  ch.basic_publish('gone', '', name)
  info, _, body = ch.basic_get(name, manual_ack: true)
  check(body == 'gone', 'no message')
  ch.reject(info.delivery_tag, false)
  _, _, again = ch.basic_get(name, manual_ack: true)
  check(again.nil?, 'message came back')
  check(count(ch, name).zero?, 'queue not empty')
  ch.queue_delete(name)
  c.close
end

scenario('get-full') do
  c = connect
  ch = c.create_channel
  name = q('getfull')
  ch.queue_delete(name)
  ch.queue_declare(name)
  3.times { |i| ch.basic_publish("g#{i}", '', name) }
  info, _, body = ch.basic_get(name, manual_ack: true)
  check(body == 'g0', "got #{body.inspect}")
  check(info.message_count == 2, "message_count #{info.message_count}")
  check(!info.redelivered && info.exchange == '' && info.routing_key == name, "get-ok #{info.inspect}")
  ch.ack(info.delivery_tag)
  check(count(ch, name) == 2, 'count after ack')
  ch.queue_delete(name)
  c.close
end

scenario('get-empty') do
  c = connect
  ch = c.create_channel
  name = q('getempty')
  ch.queue_delete(name)
  ch.queue_declare(name)
  got = ch.basic_get(name, manual_ack: true)
  check(got == [nil, nil, nil], "get on an empty queue returned #{got.inspect}")
  ch.queue_delete(name)
  c.close
end

scenario('prefetch') do
  c = connect
  ch = c.create_channel
  other = c.create_channel
  name = q('prefetch')
  ch.queue_delete(name)
  ch.queue_declare(name)
  10.times { |i| ch.basic_publish("p#{i}", '', name) }
  ch.prefetch(3)
  got = []
  ch.queue(name, passive: true).subscribe(manual_ack: true) { |info, _p, _b| got << info.delivery_tag }
  sleep 1
  check(got.size == 3, "#{got.size} deliveries in flight with prefetch 3")
  ch.ack(got[0])
  sleep 1
  check(got.size == 4, "#{got.size} deliveries after one ack, expected 4")
  check(count(other, name) == 6, 'ready count')
  ch.ack(got[-1], true)
  sleep 1
  check(got.size == 7, "#{got.size} deliveries after multiple ack, expected 7")
  other.queue_delete(name)
  c.close
end

scenario('confirms-10k', 180) do
  c = connect
  ch = c.create_channel
  name = q('confirms')
  ch.queue_delete(name)
  ch.queue_declare(name)
  ch.confirm_select
  10_000.times { |i| ch.basic_publish("c#{i}", '', name) }
  check(ch.wait_for_confirms, "nacked: #{ch.nacked_set.size}")
  check(ch.unconfirmed_set.empty?, "unconfirmed: #{ch.unconfirmed_set.size}")
  check(count(ch, name) == 10_000, "count #{count(ch, name)}")
  ch.queue_delete(name)
  c.close
end

scenario('mandatory-return') do
  c = connect
  ch = c.create_channel
  returned = []
  ch.default_exchange.on_return { |info, _p, body| returned << [info, body] }
  key = q('nowhere')
  ch.confirm_select
  ch.basic_publish('lost', '', key, mandatory: true)
  check(ch.wait_for_confirms, 'nacked')
  check(wait_until(5) { !returned.empty? }, 'no basic.return')
  info, body = returned[0]
  check(info.reply_code == 312 && info.reply_text == 'NO_ROUTE', "return #{info.reply_code} #{info.reply_text}")
  check(info.exchange == '' && info.routing_key == key && body == 'lost', "return #{info.inspect}")
  c.close
end

scenario('exclusive-locked') do
  c1 = connect
  name = q('exclusive')
  c1.create_channel.queue_declare(name, exclusive: true)
  c2 = connect
  expect_channel_error(c2, 405, 'RESOURCE_LOCKED') { |x| x.queue_declare(name) }
  expect_channel_error(c2, 405, 'RESOURCE_LOCKED') { |x| x.basic_consume(name, '', false) }
  c1.close
  expect_channel_error(c2, 404, 'NOT_FOUND') { |x| x.queue_declare(name, passive: true) }
  c2.close
end

scenario('server-named-queue') do
  c = connect
  ch = c.create_channel
  name = ch.queue_declare('', exclusive: true).queue
  check(name.start_with?('amq.gen-'), "name #{name}")
  ch.basic_publish('to a generated name', '', name)
  _, _, body = ch.basic_get(name, manual_ack: false)
  check(body == 'to a generated name', "got #{body.inspect}")
  c.close
end

scenario('purge-count') do
  c = connect
  ch = c.create_channel
  name = q('purge')
  ch.queue_delete(name)
  ch.queue_declare(name)
  5.times { ch.basic_publish('x', '', name) }
  check(wait_count(ch, name, 5), 'count before purge')
  holder = c.create_channel
  holder.basic_get(name, manual_ack: true) # one unacked message: purge leaves it alone
  n = ch.queue_purge(name).message_count
  check(n == 4, "purge-ok message_count #{n}, expected 4 (5 ready, 1 of them then unacked)")
  check(count(ch, name).zero?, 'not empty after purge')
  holder.close # the unacked one comes back
  check(count(ch, name) == 1, "count after closing the holder #{count(ch, name)}")
  ch.queue_delete(name)
  c.close
end

scenario('delete-count') do
  c = connect
  ch = c.create_channel
  name = q('delete')
  ch.queue_delete(name)
  ch.queue_declare(name)
  5.times { ch.basic_publish('x', '', name) }
  check(wait_count(ch, name, 5), 'count before delete')
  c.create_channel.basic_get(name, manual_ack: true) # unacked messages are not counted
  n = ch.queue_delete(name).message_count
  check(n == 4, "delete-ok message_count #{n}, expected 4 (5 published, 1 unacked)")
  expect_channel_error(c, 404, 'NOT_FOUND') { |x| x.queue_declare(name, passive: true) }
  c.close
end

scenario('tx-commit') do
  c = connect
  ch = c.create_channel
  other = c.create_channel
  name = q('txc')
  other.queue_delete(name)
  other.queue_declare(name)
  ch.tx_select
  3.times { |i| ch.basic_publish("t#{i}", '', name) }
  check(count(other, name).zero?, 'published messages visible before commit')
  ch.tx_commit
  check(count(other, name) == 3, "count after commit #{count(other, name)}")
  info, = ch.basic_get(name, manual_ack: true)
  ch.ack(info.delivery_tag)
  ch.tx_commit
  check(count(other, name) == 2, "count after committed ack #{count(other, name)}")
  other.queue_delete(name)
  c.close
end

scenario('tx-rollback') do
  c = connect
  ch = c.create_channel
  other = c.create_channel
  name = q('txr')
  other.queue_delete(name)
  other.queue_declare(name)
  ch.tx_select
  3.times { |i| ch.basic_publish("t#{i}", '', name) }
  ch.tx_rollback
  check(count(other, name).zero?, "count after rollback #{count(other, name)}")
  ch.basic_publish('after', '', name)
  ch.tx_commit
  got = drain(other, name)
  check(got == ['after'], "after rollback+commit got #{got}")
  # an ack rolled back leaves the message unacked: closing the channel requeues it
  other.basic_publish('kept', '', name)
  check(wait_count(other, name, 1), 'kept not there')
  info, = ch.basic_get(name, manual_ack: true)
  ch.ack(info.delivery_tag)
  ch.tx_rollback
  check(count(other, name).zero?, 'message ready again right after rollback')
  ch.close
  info, _, body = other.basic_get(name, manual_ack: false)
  check(body == 'kept' && info.redelivered, "after rollback+close got #{body.inspect} #{info.inspect}")
  other.queue_delete(name)
  c.close
end

scenario('large-message-10mib', 120) do
  c = connect
  ch = c.create_channel
  name = q('large')
  ch.queue_delete(name)
  ch.queue_declare(name)
  size = 10 * 1024 * 1024
  body = ((0...251).to_a.pack('C*') * (size / 251 + 1))[0, size]
  ch.basic_publish(body, '', name)
  got = nil
  50.times do
    _, _, got = ch.basic_get(name, manual_ack: false)
    break if got

    sleep 0.1
  end
  check(got, 'no message')
  check(got.bytesize == size && Digest::SHA256.digest(got) == Digest::SHA256.digest(body), "body differs: #{got.bytesize} bytes")
  ch.queue_delete(name)
  c.close
end

# RabbitMQ's topic semantics: "*" one word, "#" zero or more, words may be empty ("a..c"),
# the empty key has no words (so "#" and "" match it, "*" does not).
TOPIC_BINDINGS = { 'q1' => 'a.*.c', 'q2' => 'a.#', 'q3' => '*.b', 'q4' => '#.c', 'q5' => '#', 'q6' => 'a.#.c',
                   'q7' => '*', 'q8' => '' }.freeze
TOPIC_KEYS = ['a.b.c', 'a', 'a.b', 'x.b', 'a.b.c.d', 'c', 'x.y', 'a.x.y.c', '', 'a..c', 'a.c'].freeze
TOPIC_EXPECT = {
  'q1' => %w[a.b.c a..c],
  'q2' => %w[a.b.c a a.b a.b.c.d a.x.y.c a..c a.c],
  'q3' => %w[a.b x.b],
  'q4' => %w[a.b.c c a.x.y.c a..c a.c],
  'q5' => ['a.b.c', 'a', 'a.b', 'x.b', 'a.b.c.d', 'c', 'x.y', 'a.x.y.c', '', 'a..c', 'a.c'],
  'q6' => %w[a.b.c a.x.y.c a..c a.c],
  'q7' => %w[a c],
  'q8' => ['']
}.freeze

scenario('topic-routing') do
  c = connect
  ch = c.create_channel
  ex = q('topic.ex')
  ch.exchange_delete(ex)
  ch.exchange_declare(ex, 'topic')
  TOPIC_BINDINGS.each do |k, pattern|
    ch.queue_delete(q("topic.#{k}"))
    ch.queue_declare(q("topic.#{k}"))
    ch.queue_bind(q("topic.#{k}"), ex, routing_key: pattern)
  end
  TOPIC_KEYS.each { |key| ch.basic_publish(key, ex, key) }
  TOPIC_EXPECT.each do |k, want|
    got = drain(ch, q("topic.#{k}"))
    check(got == want, "#{TOPIC_BINDINGS[k]} got #{got}, expected #{want}")
    ch.queue_delete(q("topic.#{k}"))
  end
  ch.exchange_delete(ex)
  c.close
end

def headers_scenario(match, want)
  c = connect
  ch = c.create_channel
  ex = q("headers.#{match}.ex")
  name = q("headers.#{match}")
  ch.queue_delete(name)
  ch.exchange_delete(ex)
  ch.exchange_declare(ex, 'headers')
  ch.queue_declare(name)
  ch.queue_bind(name, ex, arguments: { 'x-match' => match, 'a' => 1, 'b' => 'two' })
  msgs = {
    'both' => { 'a' => 1, 'b' => 'two' },
    'both+extra' => { 'a' => 1, 'b' => 'two', 'c' => 3 },
    'only-a' => { 'a' => 1 },
    'only-b' => { 'b' => 'two', 'c' => 3 },
    'a-differs' => { 'a' => 2, 'b' => 'three' },
    'a-string' => { 'a' => '1' }, # a string never equals an integer
    'none' => nil
  }
  msgs.each { |body, headers| ch.basic_publish(body, ex, 'ignored', headers: headers) }
  got = drain(ch, name)
  check(got == want, "x-match=#{match} got #{got}, expected #{want}")
  ch.queue_delete(name)
  ch.exchange_delete(ex)
  c.close
end

scenario('headers-all') { headers_scenario('all', %w[both both+extra]) }
scenario('headers-any') { headers_scenario('any', %w[both both+extra only-a only-b]) }

# A stream queue: declared durable with x-queue-type stream, published with confirms, read by
# two consumers at their own offsets (prefetch first, manual acks), each delivery carrying its
# x-stream-offset.
scenario('stream-queue') do
  c = connect
  ch = c.create_channel
  name = q('stream')
  ch.queue_delete(name)
  ch.queue_declare(name, durable: true, arguments: { 'x-queue-type' => 'stream' })
  ch.confirm_select
  5.times { |i| ch.basic_publish("s#{i}", '', name) }
  check(ch.wait_for_confirms, 'confirms')
  ch.prefetch(10)
  [['first', 0], [3, 3]].each do |start, from|
    got = []
    consumer = ch.queue(name, passive: true).subscribe(manual_ack: true, arguments: { 'x-stream-offset' => start }) do |info, props, body|
      got << [body, props.headers['x-stream-offset']]
      ch.ack(info.delivery_tag)
    end
    deadline = Time.now + 5
    sleep 0.05 while got.size < 5 - from && Time.now < deadline
    consumer.cancel
    want = (from...5).map { |i| ["s#{i}", i] }
    check(got == want, "#{start}: got #{got.inspect}")
  end
  ch.queue_delete(name)
  c.close
end

scenario('heartbeat') do
  c = connect(heartbeat: 1)
  check(c.heartbeat == 1, "negotiated heartbeat #{c.heartbeat}")
  # idle for 5 s: bunny's heartbeat sender keeps us alive; its reader loop times out (and the
  # connection is lost) when the broker sends nothing for 2 intervals.
  sleep 5
  check(c.open?, 'connection closed while idle')
  ch = c.create_channel
  name = ch.queue_declare('', exclusive: true).queue
  ch.basic_publish('alive', '', name)
  _, _, body = ch.basic_get(name, manual_ack: false)
  check(body == 'alive', 'connection not usable after idling')
  c.close
end

scenario('consumer-cancel-notify') do
  c = connect
  ch = c.create_channel
  other = c.create_channel
  name = q('cancel')
  other.queue_delete(name)
  other.queue_declare(name)
  cancelled = []
  consumer = Bunny::Consumer.new(ch, name, 'it-ruby-cancel', false)
  consumer.on_delivery { |*| nil }
  consumer.on_cancellation { |cancel| cancelled << cancel }
  ch.basic_consume_with(consumer)
  other.queue_delete(name)
  check(wait_until(5) { !cancelled.empty? }, 'no basic.cancel from the broker')
  check(cancelled[0].consumer_tag == 'it-ruby-cancel', "cancel for #{cancelled[0].consumer_tag}")
  check(ch.open? && ch.consumers.empty?, 'channel closed or consumer still registered')
  c.close
end

# ---------------------------------------------------------------------------------------------
# Cross-client

def load_expected
  JSON.parse(File.read(EXPECTED, encoding: 'UTF-8'))
end

def subst(value)
  value == '${login}' ? LOGIN : value
end

def strip_tags(typed, banned)
  tag, v = typed
  case tag
  when 'F' then ['F', v.reject { |_, x| banned.include?(x[0]) }.transform_values { |x| strip_tags(x, banned) }]
  when 'A' then ['A', v.reject { |x| banned.include?(x[0]) }.map { |x| strip_tags(x, banned) }]
  else typed
  end
end

def native(typed)
  tag, v = typed
  case tag
  when 'S' then v
  when 'l' then Integer(v)
  when 'd' then Float(v)
  when 't' then v
  when 'T' then Time.at(v)
  when 'V' then nil
  when 'D'
    # amq-protocol mis-encodes BigDecimals with a fraction; integral ones go out as scale 0
    raise ArgumentError, 'bunny can encode integral decimals only' unless v[0].zero?

    BigDecimal(v[1].to_s)
  # non-ASCII keys must be binary strings: amq-protocol's Table.encode appends them to a binary
  # buffer and raises Encoding::CompatibilityError for UTF-8 ones
  when 'F' then v.to_h { |k, x| [k.b, native(x)] }
  when 'A' then v.map { |x| native(x) }
  else raise ArgumentError, "bunny cannot encode tag #{tag}"
  end
end

PROPS = %w[content_type content_encoding delivery_mode priority correlation_id reply_to expiration
           message_id timestamp type user_id app_id cluster_id].freeze

def cross_publish
  exp = load_expected
  me = exp['publishers'][ME]
  c = connect
  ch = c.create_channel
  ch.confirm_select
  CLIENTS.each do |consumer|
    banned = (exp['consumers'][consumer] || {}).fetch('cannot_decode', [])
    opts = { headers: native(strip_tags(['F', me['headers']], banned)), mandatory: true }
    me['properties'].each do |k, v|
      # non-ASCII shortstr properties must be binary strings too (encode_properties joins them
      # with binary data and raises Encoding::CompatibilityError for UTF-8 ones)
      opts[k.to_sym] = v.is_a?(String) ? subst(v).b : v
    end
    name = "xc.#{ME}.#{consumer}"
    ch.queue_delete(name)
    ch.queue_declare(name)
    ch.basic_publish(me['body'], '', name, opts)
  end
  check(ch.wait_for_confirms, 'nacked')
  c.close
end

def utf8(str)
  str.dup.force_encoding('UTF-8')
end

def compare(typed, got, where, errs)
  tag, v = typed
  bad = ->(what) { errs << "#{where}: #{what} (expected #{tag} #{v.inspect}, got #{got.class} #{got.inspect})" }
  case tag
  when 'S'
    bad.call('string') unless got.is_a?(String) && got.b == v.b
  when 'x'
    bad.call('bytes') unless got.is_a?(String) && got.b == [v].pack('H*')
  when 's', 'l'
    bad.call('integer') unless got.is_a?(Integer) && got == v
  when 'b' # bunny quirk: b is decoded as unsigned 8-bit
    bad.call('integer (b read unsigned by bunny)') unless got.is_a?(Integer) && got == (v & 0xff)
  when 'I' # bunny quirk: I is decoded as unsigned 32-bit
    bad.call('integer (I read unsigned by bunny)') unless got.is_a?(Integer) && got == (v & 0xffffffff)
  when 'f' # bunny quirk: float32 is read in host byte order (little-endian here)
    want = [v].pack('g').unpack1('e')
    bad.call('float32 (read byte-swapped by bunny)') unless got.is_a?(Float) && (got == want || (got.nan? && want.nan?))
  when 'd'
    bad.call('float') unless got.is_a?(Float) && got == v
  when 't'
    bad.call('boolean') unless got == v
  when 'V'
    bad.call('void') unless got.nil?
  when 'D'
    bad.call('decimal') unless got.is_a?(BigDecimal) && got == BigDecimal(v[1].to_s) / (10**v[0])
  when 'T'
    bad.call('timestamp') unless got.is_a?(Time) && got.to_i == v
  when 'F'
    unless got.is_a?(Hash)
      bad.call('table')
      return
    end
    g = got.transform_keys { |k| utf8(k) }
    errs << "#{where}: keys #{g.keys.sort} != expected #{v.keys.sort}" if g.keys.sort != v.keys.sort
    v.each { |k, x| compare(x, g[k], "#{where}.#{k}", errs) if g.key?(k) }
  when 'A'
    unless got.is_a?(Array) && got.size == v.size
      bad.call('array')
      return
    end
    v.each_with_index { |x, i| compare(x, got[i], "#{where}[#{i}]", errs) }
  else
    bad.call('unknown tag')
  end
end

def cross_consume
  exp = load_expected
  banned = exp['consumers'][ME]['cannot_decode']
  c = connect
  CLIENTS.each do |pub|
    name = "cross-from-#{pub}"
    begin
      ch = c.create_channel
      want = exp['publishers'][pub]
      qn = "xc.#{pub}.#{ME}"
      _, props, body = ch.basic_get(qn, manual_ack: false)
      check(body, "no message in #{qn}")
      errs = []
      errs << "body #{body.inspect}" unless body.b == want['body'].b
      PROPS.each do |k|
        w = subst(want['properties'][k])
        g = props[k.to_sym]
        g = g.to_i if k == 'timestamp' && g.is_a?(Time)
        g = utf8(g) if g.is_a?(String)
        errs << "property #{k}: #{g.inspect} != #{w.inspect}" unless g == w
      end
      compare(strip_tags(['F', want['headers']], banned), props[:headers], 'headers', errs)
      _, _, more = ch.basic_get(qn, manual_ack: false)
      errs << 'more than one message' if more
      ch.queue_delete(qn)
      ch.close
      check(errs.empty?, errs.join('; '))
      puts "PASS #{name}"
    rescue StandardError => e
      puts "FAIL #{name}: #{e.class}: #{e.message.gsub("\n", ' ')}"
      c = connect unless c.open?
    end
  end
  c.close
end

def run_one(name, timeout, &blk)
  start = Time.now
  Timeout.timeout(timeout) { blk.call }
  puts "PASS #{name}"
rescue NA => e
  puts "NA #{name}: #{e.message}"
rescue Exception => e # rubocop:disable Lint/RescueException - report everything as a line
  raise if e.is_a?(SystemExit) || e.is_a?(Interrupt)

  puts "FAIL #{name}: #{e.class}: #{e.message.to_s.gsub("\n", ' ')}"
  warn e.backtrace.first(8).join("\n")
ensure
  warn format('[%s] %s: %.2fs', ME, name, Time.now - start)
end

mode = ARGV[0] || 'scenarios'
only = (ENV['INTEROP_ONLY'] || '').split
case mode
when 'scenarios'
  SCENARIOS.each do |name, blk, timeout|
    run_one(name, timeout, &blk) if only.empty? || only.include?(name)
  end
when 'cross-publish' then run_one('cross-publish', 60) { cross_publish }
when 'cross-consume' then Timeout.timeout(60) { cross_consume }
else abort "unknown mode #{mode}"
end
exit!(0) # do not wait for reader threads of connections a failed scenario left open
