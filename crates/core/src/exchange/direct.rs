//! Direct exchange: a message goes to the bindings whose key equals its routing key.

use std::collections::HashMap;

use warren_wire::FieldTable;
use warren_wire::value::tables_equivalent;

use super::{Destination, Router};

/// Bindings by routing key.
#[derive(Debug, Default)]
pub struct DirectRouter {
    by_key: HashMap<String, Vec<(Destination, FieldTable)>>,
    count: usize,
}

impl Router for DirectRouter {
    fn bind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        let list = self.by_key.entry(routing_key.to_string()).or_default();
        if list.iter().any(|(d, a)| d == dest && tables_equivalent(a, args)) {
            return false;
        }
        list.push((dest.clone(), args.clone()));
        self.count += 1;
        true
    }

    fn unbind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        let Some(list) = self.by_key.get_mut(routing_key) else {
            return false;
        };
        let Some(pos) = list.iter().position(|(d, a)| d == dest && tables_equivalent(a, args))
        else {
            return false;
        };
        list.swap_remove(pos);
        if list.is_empty() {
            self.by_key.remove(routing_key);
        }
        self.count -= 1;
        true
    }

    fn remove_destination(&mut self, dest: &Destination) -> usize {
        let before = self.count;
        self.by_key.retain(|_, list| {
            list.retain(|(d, _)| d != dest);
            !list.is_empty()
        });
        self.count = self.by_key.values().map(Vec::len).sum();
        before - self.count
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        if let Some(list) = self.by_key.get(routing_key) {
            for (d, _) in list {
                if !out[..].contains(d) {
                    out.push(d.clone());
                }
            }
        }
    }

    fn has_destination(&self, dest: &Destination) -> bool {
        self.by_key.values().any(|l| l.iter().any(|(d, _)| d == dest))
    }

    fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    #[test]
    fn routes_by_exact_key_once_per_destination() {
        let mut r = DirectRouter::default();
        let none = FieldTable::new();
        let other = FieldTable::new().with("x", true);
        assert!(r.bind(&q("a"), "k", &none));
        assert!(!r.bind(&q("a"), "k", &none), "duplicate binding");
        assert!(r.bind(&q("a"), "k", &other), "same key, other args: a second binding");
        assert!(r.bind(&q("b"), "other", &none));
        let mut out = Vec::new();
        r.route("k", None, &mut out);
        assert_eq!(out, vec![q("a")]);
        out.clear();
        r.route("K", None, &mut out);
        assert!(out.is_empty(), "keys are case-sensitive");
        assert_eq!(r.len(), 3);
        assert!(r.unbind(&q("a"), "k", &none));
        assert!(!r.unbind(&q("a"), "k", &none));
        assert_eq!(r.remove_destination(&q("a")), 1);
        assert_eq!(r.len(), 1);
        assert!(r.has_destination(&q("b")) && !r.has_destination(&q("a")));
    }
}
