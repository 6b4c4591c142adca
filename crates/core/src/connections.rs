//! The client connections the broker knows of, for the management API: who is connected from
//! where, to which vhost, with which client properties, how many channels; and a way to close
//! one (`DELETE /api/connections/{name}`). The server registers each connection once it is
//! open and removes it when it ends; it updates nothing per message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use warren_wire::FieldTable;

use crate::queue::ConnectionId;

/// What a connection's channels did, as RabbitMQ's channel metrics count it. The connection
/// counts in a plain copy and publishes it here once per turn (a few relaxed stores, no
/// shared write per message).
#[derive(Debug, Default)]
pub struct ChannelCounters {
    /// basic.publish received.
    pub published: AtomicU64,
    /// Publishes that no queue took and that were returned (mandatory).
    pub returned: AtomicU64,
    /// Publishes that no queue took and that were dropped.
    pub dropped: AtomicU64,
    /// Deliveries to consumers that acknowledge.
    pub delivered_ack: AtomicU64,
    /// Deliveries to no-ack consumers.
    pub delivered_no_ack: AtomicU64,
    /// basic.get answered with a message, acknowledged mode.
    pub get_ack: AtomicU64,
    /// basic.get answered with a message, no-ack.
    pub get_no_ack: AtomicU64,
    /// basic.get answered get-empty.
    pub get_empty: AtomicU64,
    /// Deliveries the client acknowledged.
    pub acked: AtomicU64,
    /// Deliveries flagged redelivered.
    pub redelivered: AtomicU64,
}

/// The plain copy a connection counts in (see [`ChannelCounters`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// See [`ChannelCounters`].
    pub published: u64,
    /// See [`ChannelCounters`].
    pub returned: u64,
    /// See [`ChannelCounters`].
    pub dropped: u64,
    /// See [`ChannelCounters`].
    pub delivered_ack: u64,
    /// See [`ChannelCounters`].
    pub delivered_no_ack: u64,
    /// See [`ChannelCounters`].
    pub get_ack: u64,
    /// See [`ChannelCounters`].
    pub get_no_ack: u64,
    /// See [`ChannelCounters`].
    pub get_empty: u64,
    /// See [`ChannelCounters`].
    pub acked: u64,
    /// See [`ChannelCounters`].
    pub redelivered: u64,
}

impl ChannelCounters {
    /// Sets the counters to a connection's counts.
    pub fn store(&self, c: &Counts) {
        let r = Ordering::Relaxed;
        self.published.store(c.published, r);
        self.returned.store(c.returned, r);
        self.dropped.store(c.dropped, r);
        self.delivered_ack.store(c.delivered_ack, r);
        self.delivered_no_ack.store(c.delivered_no_ack, r);
        self.get_ack.store(c.get_ack, r);
        self.get_no_ack.store(c.get_no_ack, r);
        self.get_empty.store(c.get_empty, r);
        self.acked.store(c.acked, r);
        self.redelivered.store(c.redelivered, r);
    }

    /// Adds them into `c`.
    pub fn add_to(&self, c: &mut Counts) {
        let r = Ordering::Relaxed;
        c.published += self.published.load(r);
        c.returned += self.returned.load(r);
        c.dropped += self.dropped.load(r);
        c.delivered_ack += self.delivered_ack.load(r);
        c.delivered_no_ack += self.delivered_no_ack.load(r);
        c.get_ack += self.get_ack.load(r);
        c.get_no_ack += self.get_no_ack.load(r);
        c.get_empty += self.get_empty.load(r);
        c.acked += self.acked.load(r);
        c.redelivered += self.redelivered.load(r);
    }
}

/// One channel, as the management API shows it (asked of the connection when needed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Channel number.
    pub number: u16,
    /// Consumers on it.
    pub consumers: u32,
    /// Deliveries not yet acknowledged.
    pub unacked: u32,
    /// Prefetch for its next consumers (basic.qos, global=false).
    pub prefetch: u32,
    /// Its shared window (basic.qos, global=true).
    pub global_prefetch: u32,
    /// In confirm mode.
    pub confirm: bool,
    /// In transaction mode.
    pub transactional: bool,
    /// Publishes not yet confirmed.
    pub unconfirmed: u64,
    /// Publishes of the open transaction.
    pub uncommitted_messages: u32,
    /// Settles of the open transaction.
    pub uncommitted_acks: u32,
}

/// One open client connection.
pub struct ConnectionInfo {
    /// The broker's id for it.
    pub id: ConnectionId,
    /// RabbitMQ's name for it: `peer -> local`, e.g. `127.0.0.1:39502 -> 127.0.0.1:5672`.
    pub name: String,
    /// The user it logged in as.
    pub user: String,
    /// Its vhost.
    pub vhost: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// The listener's address it came in on.
    pub local: SocketAddr,
    /// AMQPS.
    pub tls: bool,
    /// What the client said of itself in connection.start-ok, as it was encoded (a few hundred
    /// bytes, owned: decoded only when the management API asks).
    client_properties: bytes::Bytes,
    /// Negotiated frame-max, channel-max, heartbeat (seconds).
    pub frame_max: u32,
    /// Negotiated channel-max.
    pub channel_max: u16,
    /// Negotiated heartbeat, seconds.
    pub heartbeat: u16,
    /// When it connected, milliseconds since the Unix epoch.
    pub connected_at: u64,
    /// Channels open now (the connection updates it as channels open and close).
    pub channels: AtomicU32,
    /// What its channels did.
    pub counters: ChannelCounters,
    /// Wakes the connection to close (set by the server; nothing waits per message).
    closer: Box<dyn Fn() + Send + Sync>,
    /// The connection's event inbox, to ask it about its channels.
    events: Option<tokio::sync::mpsc::UnboundedSender<crate::Event>>,
    close_reason: Mutex<Option<String>>,
}

impl std::fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionInfo").field("id", &self.id).field("name", &self.name).finish()
    }
}

impl ConnectionInfo {
    /// A connection's record; `name` is made from the addresses; `closer` wakes the
    /// connection when a close is requested.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: ConnectionId,
        user: &str,
        vhost: &str,
        peer: SocketAddr,
        local: SocketAddr,
        tls: bool,
        client_properties: &FieldTable,
        (frame_max, channel_max, heartbeat): (u32, u16, u16),
        closer: Box<dyn Fn() + Send + Sync>,
    ) -> ConnectionInfo {
        let connected_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        ConnectionInfo {
            id,
            name: format!("{peer} -> {local}"),
            user: user.into(),
            vhost: vhost.into(),
            peer,
            local,
            tls,
            client_properties: {
                let mut buf = bytes::BytesMut::new();
                match client_properties.encode(&mut buf) {
                    Ok(()) => buf.freeze(),
                    Err(_) => bytes::Bytes::new(),
                }
            },
            frame_max,
            channel_max,
            heartbeat,
            connected_at,
            channels: AtomicU32::new(0),
            counters: ChannelCounters::default(),
            closer,
            events: None,
            close_reason: Mutex::new(None),
        }
    }

    /// Lets [`ConnectionInfo::channels`] ask the connection through its event inbox.
    pub fn with_events(mut self, events: tokio::sync::mpsc::UnboundedSender<crate::Event>) -> Self {
        self.events = Some(events);
        self
    }

    /// What its channels are doing, asked of the connection (empty if it does not answer
    /// within a second: it may be busy writing to a slow client).
    pub async fn channels(&self) -> Vec<ChannelInfo> {
        let Some(events) = &self.events else { return Vec::new() };
        let (reply, answer) = tokio::sync::oneshot::channel();
        if events.send(crate::Event::Describe { reply }).is_err() {
            return Vec::new();
        }
        match tokio::time::timeout(std::time::Duration::from_secs(1), answer).await {
            Ok(Ok(list)) => list,
            _ => Vec::new(),
        }
    }

    /// Asks the connection to close with `reason` (it sends connection.close 320).
    pub fn request_close(&self, reason: &str) {
        *self.close_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.into());
        (self.closer)();
    }

    /// Why a close was requested, if one was.
    pub fn close_reason(&self) -> Option<String> {
        self.close_reason.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The client properties from connection.start-ok.
    pub fn client_properties(&self) -> FieldTable {
        FieldTable::decode(&self.client_properties).unwrap_or_default()
    }

    /// Channels open now.
    pub fn channel_count(&self) -> u32 {
        self.channels.load(Ordering::Relaxed)
    }
}

/// An open connection's place in the registry: it leaves the registry when dropped, however
/// the connection ends (a panic in its task included).
pub struct Registration {
    info: Arc<ConnectionInfo>,
    broker: Arc<crate::Broker>,
}

impl Registration {
    /// The connection's record.
    pub fn info(&self) -> &Arc<ConnectionInfo> {
        &self.info
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.broker.connections.unregister(self.info.id);
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registration").field(&self.info.id).finish()
    }
}

impl crate::Broker {
    /// Adds an open connection to the registry, until the returned registration is dropped.
    pub fn register_connection(self: &Arc<Self>, info: Arc<ConnectionInfo>) -> Registration {
        self.connections.register(info.clone());
        Registration { info, broker: self.clone() }
    }
}

/// The registry the broker keeps.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<ConnectionId, Arc<ConnectionInfo>>>,
    /// Connections opened and closed, ever.
    opened: AtomicU64,
    closed: AtomicU64,
    /// What the channels of connections that have closed did.
    gone: Mutex<Counts>,
}

impl Connections {
    /// Adds an open connection (see [`crate::Broker::register_connection`]).
    fn register(&self, info: Arc<ConnectionInfo>) {
        self.opened.fetch_add(1, Ordering::Relaxed);
        self.open.lock().unwrap_or_else(|p| p.into_inner()).insert(info.id, info);
    }

    /// Removes a connection that ended (its final counts were stored).
    fn unregister(&self, id: ConnectionId) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(info) = open.remove(&id) {
            self.closed.fetch_add(1, Ordering::Relaxed);
            info.counters.add_to(&mut self.gone.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    /// Connections opened and closed since the start.
    pub fn churn(&self) -> (u64, u64) {
        (self.opened.load(Ordering::Relaxed), self.closed.load(Ordering::Relaxed))
    }

    /// What every connection's channels did since the start, closed ones included (taken
    /// under the registry's lock, as `unregister` moves a connection's counts: none is missed
    /// or counted twice).
    pub fn totals(&self) -> Counts {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mut c = *self.gone.lock().unwrap_or_else(|p| p.into_inner());
        for info in open.values() {
            info.counters.add_to(&mut c);
        }
        c
    }

    /// Every open connection, oldest first.
    pub fn list(&self) -> Vec<Arc<ConnectionInfo>> {
        let mut all: Vec<_> =
            self.open.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// The connection called `name`.
    pub fn by_name(&self, name: &str) -> Option<Arc<ConnectionInfo>> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .find(|c| c.name == name)
            .cloned()
    }

    /// The connection with id `id`.
    pub fn by_id(&self, id: ConnectionId) -> Option<Arc<ConnectionInfo>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_request_reaches_the_connection_with_its_reason() {
        let addr = |p| SocketAddr::from(([127, 0, 0, 1], p));
        let woken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let w = woken.clone();
        let info = Arc::new(ConnectionInfo::new(
            7,
            "guest",
            "/",
            addr(40000),
            addr(5672),
            false,
            &FieldTable::new().with("connection_name", "billing"),
            (131072, 2047, 60),
            Box::new(move || w.store(true, std::sync::atomic::Ordering::SeqCst)),
        ));
        assert_eq!(info.name, "127.0.0.1:40000 -> 127.0.0.1:5672");
        assert_eq!(
            info.client_properties().get("connection_name").and_then(|v| v.as_str()),
            Some("billing")
        );
        let broker = Arc::new(crate::Broker::default());
        let registration = broker.register_connection(info.clone());
        let all = &broker.connections;
        assert_eq!(all.by_name("127.0.0.1:40000 -> 127.0.0.1:5672").map(|c| c.id), Some(7));
        assert_eq!(info.close_reason(), None);
        info.request_close("Closed via management plugin");
        assert!(woken.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(info.close_reason().as_deref(), Some("Closed via management plugin"));
        info.counters.published.store(5, Ordering::Relaxed);
        drop(registration);
        assert_eq!(all.count(), 0, "dropping the registration unregisters");
        assert_eq!((all.churn(), all.totals().published), ((1, 1), 5), "its counts stay");
    }
}
