//! Fanout exchange: a message goes to every bound destination; keys are ignored.

use warren_wire::FieldTable;
use warren_wire::value::tables_equivalent;

use super::{Destination, Router};

/// All bindings, in bind order.
#[derive(Debug, Default)]
pub struct FanoutRouter {
    bindings: Vec<(Destination, String, FieldTable)>,
}

impl Router for FanoutRouter {
    fn bind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        if self
            .bindings
            .iter()
            .any(|(d, k, a)| d == dest && k == routing_key && tables_equivalent(a, args))
        {
            return false;
        }
        self.bindings.push((dest.clone(), routing_key.to_string(), args.clone()));
        true
    }

    fn unbind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        let before = self.bindings.len();
        self.bindings
            .retain(|(d, k, a)| !(d == dest && k == routing_key && tables_equivalent(a, args)));
        self.bindings.len() != before
    }

    fn remove_destination(&mut self, dest: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|(d, _, _)| d != dest);
        before - self.bindings.len()
    }

    fn route(&self, _routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        for (d, _, _) in &self.bindings {
            if !out[..].contains(d) {
                out.push(d.clone());
            }
        }
    }

    fn has_destination(&self, dest: &Destination) -> bool {
        self.bindings.iter().any(|(d, _, _)| d == dest)
    }

    fn len(&self) -> usize {
        self.bindings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_to_every_destination_once() {
        let mut r = FanoutRouter::default();
        let none = FieldTable::new();
        let a = Destination::Queue("a".into());
        let e = Destination::Exchange("e".into());
        assert!(r.bind(&a, "x", &none));
        assert!(r.bind(&a, "y", &none));
        assert!(r.bind(&e, "", &none));
        let mut out = Vec::new();
        r.route("anything", None, &mut out);
        assert_eq!(out, vec![a.clone(), e.clone()]);
        assert_eq!(r.remove_destination(&a), 2);
        assert!(r.unbind(&e, "", &none));
        assert!(r.is_empty());
    }
}
