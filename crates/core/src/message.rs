//! A published message as queues hold it: shared, immutable, body as `Bytes`.

use bytes::Bytes;
use warren_wire::{BasicProperties, ShortStr};

/// One message, shared by every queue it was routed to.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Exchange it was published to.
    pub exchange: ShortStr,
    /// Routing key it was published with.
    pub routing_key: ShortStr,
    /// Properties as the publisher set them.
    pub properties: BasicProperties,
    /// The body (one slice of the read buffer when it came in one frame).
    pub body: Bytes,
}

impl Message {
    /// Whether the publisher asked for persistence (delivery-mode 2).
    pub fn is_persistent(&self) -> bool {
        self.properties.is_persistent()
    }
}
