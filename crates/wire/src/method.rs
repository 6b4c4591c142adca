//! Every method of the classes connection, channel, access, exchange, queue, basic, confirm and
//! tx, with RabbitMQ's extensions (basic.nack, exchange.bind/unbind, connection.blocked and
//! unblocked, connection.update-secret), as typed structs and one [`Method`] enum.
//!
//! The table below is written by hand from `amqp-rabbitmq-0.9.1.json` and a test checks it
//! against that file, id by id and field by field. A declarative macro turns the table into the
//! structs, the enum and their decode/encode, so each method is stated exactly once; we chose
//! this over build-time generation so that the crate builds without the spec file and reads
//! plainly in an editor. Field names follow the spec with `-` as `_`; the spec's `type` is `kind`.

use bytes::{Bytes, BytesMut};

use crate::error::WireError;
use crate::read::Reader;
use crate::value::{FieldTable, LongStr, ShortStr};
use crate::write::Writer;

/// A value that can be a method argument: one per AMQP domain type.
pub(crate) trait Arg: Sized {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError>;
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError>;
}

impl Arg for u8 {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.octet()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.octet(*self);
        Ok(())
    }
}

impl Arg for u16 {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.short()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.short(*self);
        Ok(())
    }
}

impl Arg for u32 {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.long()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.long(*self);
        Ok(())
    }
}

impl Arg for u64 {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.longlong()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.longlong(*self);
        Ok(())
    }
}

impl Arg for bool {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.bit()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.bit(*self);
        Ok(())
    }
}

impl Arg for ShortStr {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.shortstr()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.shortstr(self)
    }
}

impl Arg for LongStr {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.longstr()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.longstr(self)
    }
}

impl Arg for FieldTable {
    fn read(r: &mut Reader<'_>) -> Result<Self, WireError> {
        r.table()
    }
    fn write(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
        w.table(self)
    }
}

/// What the method table says of one method, for tests and diagnostics.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// Class id.
    pub class_id: u16,
    /// Method id within the class.
    pub method_id: u16,
    /// Dotted name, e.g. `basic.publish`.
    pub name: &'static str,
    /// Argument names in wire order (Rust spelling).
    pub fields: &'static [&'static str],
    /// Argument Rust types in wire order (`u8`, `ShortStr`, ...).
    pub types: &'static [&'static str],
    /// Whether content (header and body frames) follows the method.
    pub content: bool,
}

macro_rules! methods {
    ($(
        $class_id:literal {
            $( $method_id:literal $name:ident $text:literal $content:literal {
                $( $(#[$fmeta:meta])* $field:ident : $ty:ty ),* $(,)?
            } )*
        }
    )*) => {
        $($(
            #[doc = concat!("`", $text, "`.")]
            #[derive(Debug, Clone, PartialEq, Default)]
            pub struct $name {
                $( $(#[$fmeta])* #[doc = concat!("`", stringify!($field), "`")] pub $field: $ty, )*
            }

            impl From<$name> for Method {
                fn from(m: $name) -> Method {
                    Method::$name(m)
                }
            }
        )*)*

        /// Any method, by class and method id.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Method {
            $($(
                #[doc = concat!("`", $text, "`")]
                $name($name),
            )*)*
        }

        /// Every method the crate knows, in class order.
        pub const METHODS: &[MethodInfo] = &[
            $($(
                MethodInfo {
                    class_id: $class_id,
                    method_id: $method_id,
                    name: $text,
                    fields: &[$(stringify!($field)),*],
                    types: &[$(stringify!($ty)),*],
                    content: $content,
                },
            )*)*
        ];

        impl Method {
            /// The class id.
            pub fn class_id(&self) -> u16 {
                match self { $($(Method::$name(_) => $class_id,)*)* }
            }

            /// The method id within its class.
            pub fn method_id(&self) -> u16 {
                match self { $($(Method::$name(_) => $method_id,)*)* }
            }

            /// The dotted name, e.g. `basic.publish`.
            pub fn name(&self) -> &'static str {
                match self { $($(Method::$name(_) => $text,)*)* }
            }

            /// Whether a content header and body frames follow this method.
            pub fn has_content(&self) -> bool {
                match self { $($(Method::$name(_) => $content,)*)* }
            }

            pub(crate) fn read_args(
                class_id: u16,
                method_id: u16,
                r: &mut Reader<'_>,
            ) -> Result<Method, WireError> {
                #[allow(unused_variables)]
                match (class_id, method_id) {
                    $($(
                        ($class_id, $method_id) => Ok(Method::$name($name {
                            $( $field: Arg::read(r)?, )*
                        })),
                    )*)*
                    _ => Err(WireError::UnknownMethod { class_id, method_id }),
                }
            }

            pub(crate) fn write_args(&self, w: &mut Writer<'_>) -> Result<(), WireError> {
                match self {
                    $($(
                        #[allow(unused_variables)]
                        Method::$name(m) => {
                            $( m.$field.write(w)?; )*
                        }
                    )*)*
                }
                Ok(())
            }
        }

        #[cfg(test)]
        pub(crate) fn arbitrary_methods() -> Vec<proptest::strategy::BoxedStrategy<Method>> {
            use proptest::strategy::{Just, Strategy};
            use crate::value::arbitrary::ArbArg;
            vec![$($(
                ( $(<$ty as ArbArg>::arb(),)* Just(()), )
                    .prop_map(|($($field,)* (),)| Method::$name($name { $($field),* }))
                    .boxed(),
            )*)*]
        }
    };
}

impl Method {
    /// Decodes a method frame's payload (class id, method id, arguments). `payload` must lie
    /// inside `root`, which strings are sliced from.
    pub fn decode(root: &Bytes, payload: &[u8]) -> Result<Method, WireError> {
        let mut r = Reader::new(root, payload);
        let class_id = r.short()?;
        let method_id = r.short()?;
        let method = Method::read_args(class_id, method_id, &mut r)?;
        r.finish("method arguments")?;
        Ok(method)
    }

    /// Appends the payload of this method's frame (class id, method id, arguments).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), WireError> {
        let mut w = Writer::new(buf);
        w.short(self.class_id());
        w.short(self.method_id());
        self.write_args(&mut w)
    }
}

methods! {
    10 {
        10 ConnectionStart "connection.start" false {
            version_major: u8, version_minor: u8, server_properties: FieldTable,
            mechanisms: LongStr, locales: LongStr,
        }
        11 ConnectionStartOk "connection.start-ok" false {
            client_properties: FieldTable, mechanism: ShortStr, response: LongStr, locale: ShortStr,
        }
        20 ConnectionSecure "connection.secure" false { challenge: LongStr }
        21 ConnectionSecureOk "connection.secure-ok" false { response: LongStr }
        30 ConnectionTune "connection.tune" false { channel_max: u16, frame_max: u32, heartbeat: u16 }
        31 ConnectionTuneOk "connection.tune-ok" false { channel_max: u16, frame_max: u32, heartbeat: u16 }
        40 ConnectionOpen "connection.open" false { virtual_host: ShortStr, capabilities: ShortStr, insist: bool }
        41 ConnectionOpenOk "connection.open-ok" false { known_hosts: ShortStr }
        50 ConnectionClose "connection.close" false {
            reply_code: u16, reply_text: ShortStr, class_id: u16, method_id: u16,
        }
        51 ConnectionCloseOk "connection.close-ok" false {}
        60 ConnectionBlocked "connection.blocked" false { reason: ShortStr }
        61 ConnectionUnblocked "connection.unblocked" false {}
        70 ConnectionUpdateSecret "connection.update-secret" false { new_secret: LongStr, reason: ShortStr }
        71 ConnectionUpdateSecretOk "connection.update-secret-ok" false {}
    }
    20 {
        10 ChannelOpen "channel.open" false { out_of_band: ShortStr }
        11 ChannelOpenOk "channel.open-ok" false { channel_id: LongStr }
        20 ChannelFlow "channel.flow" false { active: bool }
        21 ChannelFlowOk "channel.flow-ok" false { active: bool }
        40 ChannelClose "channel.close" false {
            reply_code: u16, reply_text: ShortStr, class_id: u16, method_id: u16,
        }
        41 ChannelCloseOk "channel.close-ok" false {}
    }
    30 {
        10 AccessRequest "access.request" false {
            realm: ShortStr, exclusive: bool, passive: bool, active: bool, write: bool, read: bool,
        }
        11 AccessRequestOk "access.request-ok" false { ticket: u16 }
    }
    40 {
        10 ExchangeDeclare "exchange.declare" false {
            ticket: u16, exchange: ShortStr, kind: ShortStr, passive: bool, durable: bool,
            auto_delete: bool, internal: bool, nowait: bool, arguments: FieldTable,
        }
        11 ExchangeDeclareOk "exchange.declare-ok" false {}
        20 ExchangeDelete "exchange.delete" false {
            ticket: u16, exchange: ShortStr, if_unused: bool, nowait: bool,
        }
        21 ExchangeDeleteOk "exchange.delete-ok" false {}
        30 ExchangeBind "exchange.bind" false {
            ticket: u16, destination: ShortStr, source: ShortStr, routing_key: ShortStr,
            nowait: bool, arguments: FieldTable,
        }
        31 ExchangeBindOk "exchange.bind-ok" false {}
        40 ExchangeUnbind "exchange.unbind" false {
            ticket: u16, destination: ShortStr, source: ShortStr, routing_key: ShortStr,
            nowait: bool, arguments: FieldTable,
        }
        51 ExchangeUnbindOk "exchange.unbind-ok" false {}
    }
    50 {
        10 QueueDeclare "queue.declare" false {
            ticket: u16, queue: ShortStr, passive: bool, durable: bool, exclusive: bool,
            auto_delete: bool, nowait: bool, arguments: FieldTable,
        }
        11 QueueDeclareOk "queue.declare-ok" false {
            queue: ShortStr, message_count: u32, consumer_count: u32,
        }
        20 QueueBind "queue.bind" false {
            ticket: u16, queue: ShortStr, exchange: ShortStr, routing_key: ShortStr, nowait: bool,
            arguments: FieldTable,
        }
        21 QueueBindOk "queue.bind-ok" false {}
        30 QueuePurge "queue.purge" false { ticket: u16, queue: ShortStr, nowait: bool }
        31 QueuePurgeOk "queue.purge-ok" false { message_count: u32 }
        40 QueueDelete "queue.delete" false {
            ticket: u16, queue: ShortStr, if_unused: bool, if_empty: bool, nowait: bool,
        }
        41 QueueDeleteOk "queue.delete-ok" false { message_count: u32 }
        50 QueueUnbind "queue.unbind" false {
            ticket: u16, queue: ShortStr, exchange: ShortStr, routing_key: ShortStr,
            arguments: FieldTable,
        }
        51 QueueUnbindOk "queue.unbind-ok" false {}
    }
    60 {
        10 BasicQos "basic.qos" false { prefetch_size: u32, prefetch_count: u16, global: bool }
        11 BasicQosOk "basic.qos-ok" false {}
        20 BasicConsume "basic.consume" false {
            ticket: u16, queue: ShortStr, consumer_tag: ShortStr, no_local: bool, no_ack: bool,
            exclusive: bool, nowait: bool, arguments: FieldTable,
        }
        21 BasicConsumeOk "basic.consume-ok" false { consumer_tag: ShortStr }
        30 BasicCancel "basic.cancel" false { consumer_tag: ShortStr, nowait: bool }
        31 BasicCancelOk "basic.cancel-ok" false { consumer_tag: ShortStr }
        40 BasicPublish "basic.publish" true {
            ticket: u16, exchange: ShortStr, routing_key: ShortStr, mandatory: bool, immediate: bool,
        }
        50 BasicReturn "basic.return" true {
            reply_code: u16, reply_text: ShortStr, exchange: ShortStr, routing_key: ShortStr,
        }
        60 BasicDeliver "basic.deliver" true {
            consumer_tag: ShortStr, delivery_tag: u64, redelivered: bool, exchange: ShortStr,
            routing_key: ShortStr,
        }
        70 BasicGet "basic.get" false { ticket: u16, queue: ShortStr, no_ack: bool }
        71 BasicGetOk "basic.get-ok" true {
            delivery_tag: u64, redelivered: bool, exchange: ShortStr, routing_key: ShortStr,
            message_count: u32,
        }
        72 BasicGetEmpty "basic.get-empty" false { cluster_id: ShortStr }
        80 BasicAck "basic.ack" false { delivery_tag: u64, multiple: bool }
        90 BasicReject "basic.reject" false { delivery_tag: u64, requeue: bool }
        100 BasicRecoverAsync "basic.recover-async" false { requeue: bool }
        110 BasicRecover "basic.recover" false { requeue: bool }
        111 BasicRecoverOk "basic.recover-ok" false {}
        120 BasicNack "basic.nack" false { delivery_tag: u64, multiple: bool, requeue: bool }
    }
    85 {
        10 ConfirmSelect "confirm.select" false { nowait: bool }
        11 ConfirmSelectOk "confirm.select-ok" false {}
    }
    90 {
        10 TxSelect "tx.select" false {}
        11 TxSelectOk "tx.select-ok" false {}
        20 TxCommit "tx.commit" false {}
        21 TxCommitOk "tx.commit-ok" false {}
        30 TxRollback "tx.rollback" false {}
        31 TxRollbackOk "tx.rollback-ok" false {}
    }
}
