//! Exchanges: a type's routing table (one file per type behind [`Router`]) and the exchange
//! record that owns it.

pub mod direct;
pub mod fanout;
pub mod headers;
pub mod topic;

use warren_wire::{FieldTable, ShortStr};

/// Where a binding sends matching messages.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Destination {
    /// A queue, by name.
    Queue(ShortStr),
    /// Another exchange, by name (exchange-to-exchange binding).
    Exchange(ShortStr),
}

/// One exchange type's bindings and matching. Implementations are plain data structures: the
/// caller holds whatever lock guards them.
pub trait Router: Send + Sync + std::fmt::Debug {
    /// Adds a binding. Returns false if an identical binding (same destination, key and
    /// arguments) already existed, in which case nothing changes.
    fn bind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool;

    /// Removes a binding. Returns false if no such binding existed.
    fn unbind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool;

    /// Removes every binding to `dest` (the queue or exchange was deleted). Returns how many
    /// were removed.
    fn remove_destination(&mut self, dest: &Destination) -> usize;

    /// Appends to `out` the destinations a message with this routing key and headers goes to.
    /// Each destination is appended at most once per call.
    fn route(&self, routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>);

    /// Whether any binding has `dest` as destination.
    fn has_destination(&self, dest: &Destination) -> bool;

    /// Number of bindings.
    fn len(&self) -> usize;

    /// Whether there are no bindings.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The four exchange types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Exact routing-key match.
    Direct,
    /// Every binding.
    Fanout,
    /// Dotted words with `*` and `#`.
    Topic,
    /// Header values, `x-match` all/any.
    Headers,
}

impl ExchangeKind {
    /// Parses a declare's `type`.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            _ => return None,
        })
    }

    /// The type's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }

    fn router(self) -> Box<dyn Router> {
        match self {
            ExchangeKind::Direct => Box::<direct::DirectRouter>::default(),
            ExchangeKind::Fanout => Box::<fanout::FanoutRouter>::default(),
            ExchangeKind::Topic => Box::<topic::TopicRouter>::default(),
            ExchangeKind::Headers => Box::<headers::HeadersRouter>::default(),
        }
    }
}

/// How an exchange was declared.
#[derive(Debug, Clone, PartialEq)]
pub struct ExchangeOptions {
    /// Type.
    pub kind: ExchangeKind,
    /// Survives a restart.
    pub durable: bool,
    /// Deleted when its last binding (as a source) goes.
    pub auto_delete: bool,
    /// Cannot be published to by clients, only bound from.
    pub internal: bool,
    /// Declare arguments.
    pub arguments: FieldTable,
}

/// One exchange's bindings: the type's router, for matching, and the bindings as declared, for
/// listing them (definitions snapshots). Both change together under the exchange's lock.
#[derive(Debug)]
pub struct Routes {
    router: Box<dyn Router>,
    list: Vec<(Destination, String, FieldTable)>,
}

impl Routes {
    /// Adds a binding; false if it existed.
    pub fn bind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        let added = self.router.bind(dest, routing_key, args);
        if added {
            self.list.push((dest.clone(), routing_key.to_string(), args.clone()));
        }
        added
    }

    /// Removes a binding; false if there was none.
    pub fn unbind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        let removed = self.router.unbind(dest, routing_key, args);
        if removed {
            let same = |(d, k, a): &(Destination, String, FieldTable)| {
                d == dest && k == routing_key && warren_wire::value::tables_equivalent(a, args)
            };
            if let Some(i) = self.list.iter().position(same) {
                self.list.swap_remove(i);
            }
        }
        removed
    }

    /// Removes every binding to `dest`; how many there were.
    pub fn remove_destination(&mut self, dest: &Destination) -> usize {
        self.list.retain(|(d, _, _)| d != dest);
        self.router.remove_destination(dest)
    }

    /// Destinations for a message (see [`Router::route`]).
    pub fn route(
        &self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<Destination>,
    ) {
        self.router.route(routing_key, headers, out)
    }

    /// Whether any binding goes to `dest`.
    pub fn has_destination(&self, dest: &Destination) -> bool {
        self.router.has_destination(dest)
    }

    /// Whether there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.router.is_empty()
    }

    /// The bindings as declared: destination, key, arguments.
    pub fn list(&self) -> &[(Destination, String, FieldTable)] {
        &self.list
    }
}

/// An exchange and its bindings.
#[derive(Debug)]
pub struct Exchange {
    /// Name, unique in its vhost.
    pub name: ShortStr,
    /// Declared options (for an `x-delayed-message` exchange, `kind` is its `x-delayed-type`).
    pub options: ExchangeOptions,
    /// The held messages of an `x-delayed-message` exchange.
    pub delayed: Option<std::sync::Arc<crate::delayed::Delayed>>,
    /// Its alternate exchange: the argument, else the applying policy's.
    alternate: std::sync::RwLock<Option<ShortStr>>,
    routes: std::sync::RwLock<Routes>,
}

impl Exchange {
    /// An exchange with no bindings.
    pub fn new(name: ShortStr, options: ExchangeOptions) -> Self {
        Self::with_delayed(name, options, None)
    }

    /// An exchange with no bindings, holding delayed messages if `delayed` is set.
    pub fn with_delayed(
        name: ShortStr,
        options: ExchangeOptions,
        delayed: Option<std::sync::Arc<crate::delayed::Delayed>>,
    ) -> Self {
        let routes = Routes { router: options.kind.router(), list: Vec::new() };
        let alternate = crate::policy::alternate_exchange(&options.arguments, None);
        Exchange {
            name,
            options,
            delayed,
            alternate: std::sync::RwLock::new(alternate),
            routes: std::sync::RwLock::new(routes),
        }
    }

    /// Where what its bindings route nowhere goes (the `alternate-exchange` argument, else
    /// the applying policy's).
    pub fn alternate(&self) -> Option<ShortStr> {
        self.alternate.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies `policy` (or none).
    pub fn apply_policy(&self, policy: Option<&crate::policy::Policy>) {
        let ae = crate::policy::alternate_exchange(&self.options.arguments, policy);
        *self.alternate.write().unwrap_or_else(|p| p.into_inner()) = ae;
    }

    /// Its type as declared: `x-delayed-message` or its routing type.
    pub fn type_name(&self) -> &'static str {
        match self.delayed {
            Some(_) => crate::delayed::TYPE,
            None => self.options.kind.as_str(),
        }
    }

    /// Whether it is one of the exchanges every vhost has (`""` and `amq.*`).
    pub fn is_builtin(&self) -> bool {
        self.name.is_empty() || self.name.starts_with("amq.")
    }

    /// Read access to the bindings (never held across an await).
    pub fn router(&self) -> std::sync::RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Write access to the bindings (never held across an await).
    pub fn router_mut(&self) -> std::sync::RwLockWriteGuard<'_, Routes> {
        self.routes.write().unwrap_or_else(|p| p.into_inner())
    }
}
