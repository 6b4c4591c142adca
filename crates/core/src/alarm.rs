//! Resource alarms, as RabbitMQ's memory and disk alarms: while one is set, a connection that
//! publishes is blocked (it stops being read, after telling clients that asked for it with
//! `connection.blocked`), while consuming, acking and deleting go on so that the broker can
//! drain. The server's monitor sets and clears them; connections wait for a change here.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio::sync::futures::Notified;

/// A resource an alarm watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// The broker's memory use is above the high watermark.
    Memory,
    /// Free disk space under the data dir is below the limit.
    Disk,
}

/// The alarms in force.
#[derive(Debug, Default)]
pub struct Alarms {
    memory: AtomicBool,
    disk: AtomicBool,
    changed: Notify,
}

impl Alarms {
    fn flag(&self, r: Resource) -> &AtomicBool {
        match r {
            Resource::Memory => &self.memory,
            Resource::Disk => &self.disk,
        }
    }

    /// Sets or clears the alarm on `r`; true if that changed it (waiters are woken).
    pub fn set(&self, r: Resource, on: bool) -> bool {
        let changed = self.flag(r).swap(on, Ordering::AcqRel) != on;
        if changed {
            self.changed.notify_waiters();
        }
        changed
    }

    /// Whether the alarm on `r` is set.
    pub fn is_set(&self, r: Resource) -> bool {
        self.flag(r).load(Ordering::Acquire)
    }

    /// Whether any alarm is set (checked for every content frame: one load each).
    pub fn any(&self) -> bool {
        self.memory.load(Ordering::Relaxed) || self.disk.load(Ordering::Relaxed)
    }

    /// The reason `connection.blocked` gives, as RabbitMQ words it ("low on memory",
    /// "low on disk", "low on memory & disk"); `None` without an alarm.
    pub fn reason(&self) -> Option<&'static str> {
        match (self.is_set(Resource::Memory), self.is_set(Resource::Disk)) {
            (true, true) => Some("low on memory & disk"),
            (true, false) => Some("low on memory"),
            (false, true) => Some("low on disk"),
            (false, false) => None,
        }
    }

    /// Resolves at the next change (enable it before looking, or a change in between is
    /// missed).
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_name_every_alarm_set() {
        let a = Alarms::default();
        assert_eq!(a.reason(), None);
        assert!(!a.any());
        assert!(a.set(Resource::Disk, true));
        assert!(!a.set(Resource::Disk, true), "no change");
        assert_eq!(a.reason(), Some("low on disk"));
        a.set(Resource::Memory, true);
        assert_eq!(a.reason(), Some("low on memory & disk"));
        a.set(Resource::Disk, false);
        assert_eq!(a.reason(), Some("low on memory"));
        assert!(a.any());
    }
}
