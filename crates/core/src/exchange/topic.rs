//! Topic exchange: bindings keyed by dot-separated patterns, where the word `*` stands for
//! exactly one word and the word `#` for zero or more, held in a trie of words.
//!
//! Words follow RabbitMQ (`rabbit_db_topic_exchange:split_topic_key/1` and its Khepri
//! counterpart): a key is cut at every `.`, so `"a..b"` is `a`, empty, `b` and `"a."` is `a`,
//! empty; but the empty key has no words at all, not one empty word. Hence binding key `""`
//! matches only routing key `""`, `#` matches every key (`""` included), and `*` never matches
//! `""`. Only whole words `*` and `#` in a binding key are wildcards; in a routing key they are
//! plain words, and `a*` is a plain word anywhere.
//!
//! Matching walks the trie the way RabbitMQ's `trie_match` does (at each node: the literal
//! child for the next word, the `*` child, and the `#` child for every suffix), without
//! building a word list: a position is the byte offset where the next word starts. A `#` node
//! remembers the lowest position it was entered at during one `route` call, so each
//! (`#` node, position) pair is expanded once and patterns like `#.#.#.a` stay linear in the
//! key's length instead of exponential.
//!
//! Keys come from AMQP short strings (at most 255 bytes), so the trie, and the recursion over
//! it, is at most 256 levels deep.

use std::collections::HashMap;

use warren_wire::FieldTable;
use warren_wire::value::tables_equivalent;

use super::{Destination, Router};

/// Position past the last word: every word of the key has been consumed.
const END: usize = usize::MAX;

/// Topic bindings in a trie of binding-key words.
#[derive(Debug, Default)]
pub struct TopicRouter {
    root: Node,
    /// Bindings per destination, for `has_destination` and a quick `remove_destination`.
    per_dest: HashMap<Destination, usize>,
    count: usize,
}

/// One trie node: the binding-key prefix spelled by the path from the root.
#[derive(Debug, Default)]
struct Node {
    /// Children by literal word (never `*` or `#`).
    words: HashMap<Box<str>, Node>,
    /// Child for the wildcard word `*`.
    star: Option<Box<Node>>,
    /// Child for the wildcard word `#`.
    hash: Option<Box<Node>>,
    /// Bindings whose key ends at this node.
    bindings: Vec<(Destination, FieldTable)>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.bindings.is_empty()
            && self.words.is_empty()
            && self.star.is_none()
            && self.hash.is_none()
    }

    /// The child for `word`, created if missing.
    fn child_or_insert(&mut self, word: &str) -> &mut Node {
        match word {
            "*" => self.star.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => self.words.entry(Box::from(word)).or_default(),
        }
    }

    /// Removes the binding at the end of `words`, pruning children left empty.
    fn unbind<'k>(
        &mut self,
        mut words: impl Iterator<Item = &'k str>,
        dest: &Destination,
        args: &FieldTable,
    ) -> bool {
        let Some(word) = words.next() else {
            let Some(pos) =
                self.bindings.iter().position(|(d, a)| d == dest && tables_equivalent(a, args))
            else {
                return false;
            };
            self.bindings.swap_remove(pos);
            return true;
        };
        match word {
            "*" | "#" => {
                let slot = if word == "*" { &mut self.star } else { &mut self.hash };
                let Some(child) = slot.as_deref_mut() else {
                    return false;
                };
                let removed = child.unbind(words, dest, args);
                if child.is_empty() {
                    *slot = None;
                }
                removed
            }
            _ => {
                let Some(child) = self.words.get_mut(word) else {
                    return false;
                };
                let removed = child.unbind(words, dest, args);
                if child.is_empty() {
                    self.words.remove(word);
                }
                removed
            }
        }
    }

    /// Removes every binding to `dest` below this node, pruning emptied children. Returns how
    /// many were removed.
    fn remove_destination(&mut self, dest: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|(d, _)| d != dest);
        let mut removed = before - self.bindings.len();
        self.words.retain(|_, child| {
            removed += child.remove_destination(dest);
            !child.is_empty()
        });
        for slot in [&mut self.star, &mut self.hash] {
            if let Some(child) = slot.as_deref_mut() {
                removed += child.remove_destination(dest);
                if child.is_empty() {
                    *slot = None;
                }
            }
        }
        removed
    }
}

/// The words of a key: none for `""`, otherwise every `.`-separated piece, empty ones included.
fn words(key: &str) -> impl Iterator<Item = &str> {
    (!key.is_empty()).then(|| key.split('.')).into_iter().flatten()
}

/// State of one `route` call.
struct Matcher<'a, 'o> {
    key: &'a str,
    /// Per `#` node entered so far: the lowest position it was entered at. Entering at `p`
    /// visits the node at `p` and every later position, so a later entry at or past that
    /// position has nothing left to do. Allocates only once a `#` node is reached.
    hash_low: HashMap<*const Node, usize>,
    out: &'o mut Vec<Destination>,
}

impl<'a> Matcher<'a, '_> {
    /// The word starting at `pos` (not `END`) and the position after it.
    fn word_at(&self, pos: usize) -> (&'a str, usize) {
        let key: &'a str = self.key;
        let rest = &key[pos..];
        match rest.find('.') {
            Some(i) => (&rest[..i], pos + i + 1),
            None => (rest, END),
        }
    }

    /// Matches the rest of the key, from `pos`, against the patterns below `node`.
    fn visit(&mut self, node: &'a Node, pos: usize) {
        if pos == END {
            for (d, _) in &node.bindings {
                if !self.out[..].contains(d) {
                    self.out.push(d.clone());
                }
            }
        } else {
            let (word, next) = self.word_at(pos);
            if let Some(child) = node.words.get(word) {
                self.visit(child, next);
            }
            if let Some(child) = node.star.as_deref() {
                self.visit(child, next);
            }
        }
        if let Some(child) = node.hash.as_deref() {
            self.enter_hash(child, pos);
        }
    }

    /// `#` takes zero or more words: visits `node` (the child of a `#` edge) at `pos` and at
    /// every later position not already covered by an earlier entry.
    fn enter_hash(&mut self, node: &'a Node, pos: usize) {
        let low = self.hash_low.get(&std::ptr::from_ref(node)).copied();
        if low.is_some_and(|low| pos >= low) {
            return;
        }
        self.hash_low.insert(std::ptr::from_ref(node), pos);
        let mut at = pos;
        loop {
            self.visit(node, at);
            if at == END {
                break;
            }
            at = self.word_at(at).1;
            if low.is_some_and(|low| at >= low) {
                break;
            }
        }
    }
}

impl Router for TopicRouter {
    fn bind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        let mut node = &mut self.root;
        for word in words(routing_key) {
            node = node.child_or_insert(word);
        }
        if node.bindings.iter().any(|(d, a)| d == dest && tables_equivalent(a, args)) {
            // The path existed already (it leads to a binding), so nothing was created.
            return false;
        }
        node.bindings.push((dest.clone(), args.clone()));
        *self.per_dest.entry(dest.clone()).or_default() += 1;
        self.count += 1;
        true
    }

    fn unbind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        if !self.root.unbind(words(routing_key), dest, args) {
            return false;
        }
        if let Some(n) = self.per_dest.get_mut(dest) {
            *n -= 1;
            if *n == 0 {
                self.per_dest.remove(dest);
            }
        }
        self.count -= 1;
        true
    }

    fn remove_destination(&mut self, dest: &Destination) -> usize {
        if self.per_dest.remove(dest).is_none() {
            return 0;
        }
        let removed = self.root.remove_destination(dest);
        self.count -= removed;
        removed
    }

    fn route(&self, routing_key: &str, _headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        let mut m = Matcher { key: routing_key, hash_low: HashMap::new(), out };
        m.visit(&self.root, if routing_key.is_empty() { END } else { 0 });
    }

    fn has_destination(&self, dest: &Destination) -> bool {
        self.per_dest.contains_key(dest)
    }

    fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    fn routed(r: &TopicRouter, key: &str) -> Vec<Destination> {
        let mut out = Vec::new();
        r.route(key, None, &mut out);
        out.sort();
        out
    }

    /// Reference matcher: RabbitMQ's word split and the textbook recursive definition.
    fn ref_words(key: &str) -> Vec<&str> {
        if key.is_empty() { Vec::new() } else { key.split('.').collect() }
    }

    fn ref_match(pattern: &[&str], words: &[&str]) -> bool {
        match pattern.split_first() {
            None => words.is_empty(),
            Some((&"#", rest)) => {
                ref_match(rest, words) || (!words.is_empty() && ref_match(pattern, &words[1..]))
            }
            Some((&"*", rest)) => !words.is_empty() && ref_match(rest, &words[1..]),
            Some((w, rest)) => words.first() == Some(w) && ref_match(rest, &words[1..]),
        }
    }

    fn matches(binding_key: &str, routing_key: &str) -> bool {
        let mut r = TopicRouter::default();
        r.bind(&q("q"), binding_key, &FieldTable::new());
        !routed(&r, routing_key).is_empty()
    }

    #[test]
    fn match_table() {
        let cases: &[(&str, &str, bool)] = &[
            // `#` alone matches everything, the empty key included.
            ("#", "", true),
            ("#", "a", true),
            ("#", "a.b.c", true),
            ("#", ".", true),
            ("#", "#", true),
            ("#.#", "", true),
            ("#.#", "a", true),
            ("#.#", "a.b.c", true),
            // The empty binding key has no words: it matches only the empty routing key.
            ("", "", true),
            ("", "a", false),
            ("", ".", false),
            // `*` is exactly one word; "" has none, "." has two empty ones.
            ("*", "", false),
            ("*", "a", true),
            ("*", ".", false),
            ("*", "a.b", false),
            ("*", "*", true),
            ("*.*", ".", true),
            ("*.*", "a.", true),
            ("*.*", "", false),
            ("a.#.b", "a.b", true),
            ("a.#.b", "a.x.b", true),
            ("a.#.b", "a.x.y.b", true),
            ("a.#.b", "a.b.b", true),
            ("a.#.b", "a", false),
            ("a.#.b", "b.a.b", false),
            ("a.#.b", "a.b.c", false),
            ("#.a.#", "a", true),
            ("#.a.#", "x.a.y", true),
            ("#.a.#", "b.a", true),
            ("#.a.#", "a.a.a", true),
            ("#.a.#", "x.y", false),
            ("#.a.#", "", false),
            ("*.#", "", false),
            ("*.#", "a", true),
            ("*.#", "a.b.c", true),
            ("#.*", "", false),
            ("#.*", "a", true),
            ("#.*", "a.b", true),
            ("a.#", "a", true),
            ("a.#", "a.", true),
            ("a.#", "a.b.c", true),
            ("a.#", "b.a", false),
            // Empty words.
            ("a..b", "a..b", true),
            ("a..b", "a.b", false),
            ("a.*.b", "a..b", true),
            ("a.", "a.", true),
            ("a.", "a", false),
            ("a.*", "a.", true),
            (".", ".", true),
            (".", "", false),
            ("#.", "", false),
            ("#.", ".", true),
            ("#.", "a.", true),
            ("#.", "a", false),
            (".#", "", false),
            (".#", ".a.b", true),
            // Wildcards only as whole words in the binding key; keys are case-sensitive.
            ("a", "*", false),
            ("a.b", "a.*", false),
            ("a.*", "a.*", true),
            ("a*b", "a*b", true),
            ("a*b", "axb", false),
            ("a#", "a.b", false),
            ("a", "A", false),
        ];
        for &(bk, rk, want) in cases {
            assert_eq!(matches(bk, rk), want, "binding {bk:?}, routing {rk:?}");
            assert_eq!(ref_match(&ref_words(bk), &ref_words(rk)), want, "reference: {bk:?} {rk:?}");
        }
    }

    #[test]
    fn rabbitmq_tutorial_example() {
        let mut r = TopicRouter::default();
        let none = FieldTable::new();
        assert!(r.bind(&q("Q1"), "*.orange.*", &none));
        assert!(r.bind(&q("Q2"), "*.*.rabbit", &none));
        assert!(r.bind(&q("Q2"), "lazy.#", &none));
        let cases: &[(&str, &[&str])] = &[
            ("quick.orange.rabbit", &["Q1", "Q2"]),
            ("lazy.orange.elephant", &["Q1", "Q2"]),
            ("quick.orange.fox", &["Q1"]),
            ("lazy.brown.fox", &["Q2"]),
            ("lazy.pink.rabbit", &["Q2"]),
            ("quick.brown.fox", &[]),
            ("orange", &[]),
            ("quick.orange.male.rabbit", &[]),
            ("lazy.orange.male.rabbit", &["Q2"]),
        ];
        for &(key, want) in cases {
            let want: Vec<_> = want.iter().map(|n| q(n)).collect();
            assert_eq!(routed(&r, key), want, "routing key {key:?}");
        }
        // Two matching bindings, one delivery; destinations already in `out` are not repeated.
        let mut out = vec![q("Q2")];
        r.route("lazy.pink.rabbit", None, &mut out);
        assert_eq!(out, vec![q("Q2")]);
    }

    #[test]
    fn many_hashes_stay_linear() {
        let mut r = TopicRouter::default();
        let none = FieldTable::new();
        r.bind(&q("a"), "#.#.#.#.#.#.#.#.#.#.#.#.a", &none);
        r.bind(&q("b"), "#.*.#.*.#.*.#.*.#.*.#.*.#.b", &none);
        r.bind(&q("c"), "#.#.#.#.#.#.#.#.#.#.#.#", &none);
        let key = vec!["x"; 120].join(".");
        // Without deduplication this would take C(131, 12) steps.
        assert_eq!(routed(&r, &key), vec![q("c")]);
        let key_a = format!("{key}.a");
        assert_eq!(routed(&r, &key_a), vec![q("a"), q("c")]);
        assert_eq!(routed(&r, &format!("{key}.b")), vec![q("b"), q("c")]);
    }

    #[test]
    fn bind_unbind_and_pruning() {
        let mut r = TopicRouter::default();
        let none = FieldTable::new();
        let other = FieldTable::new().with("x", true);
        let e = Destination::Exchange("e".into());
        assert!(r.bind(&q("a"), "a.*.#", &none));
        assert!(!r.bind(&q("a"), "a.*.#", &none), "duplicate binding");
        assert!(r.bind(&q("a"), "a.*.#", &other), "same key, other args");
        assert!(r.bind(&e, "a.b", &none));
        assert!(r.bind(&q("b"), "", &none));
        assert_eq!(r.len(), 4);
        assert_eq!(routed(&r, "a.b"), vec![q("a"), e.clone()]);
        assert!(!r.unbind(&q("a"), "a.*", &none), "no binding at a prefix");
        assert!(!r.unbind(&q("a"), "a.*.#.c", &none), "no binding past the end");
        assert!(!r.unbind(&q("b"), "a.*.#", &none), "other destination");
        assert!(r.unbind(&q("a"), "a.*.#", &none));
        assert!(r.has_destination(&q("a")), "one binding left");
        assert_eq!(r.remove_destination(&q("a")), 1);
        assert!(!r.has_destination(&q("a")));
        assert_eq!(r.remove_destination(&q("a")), 0);
        assert!(r.root.words.get("a").is_some_and(|n| n.star.is_none()), "a.* pruned");
        assert!(r.unbind(&e, "a.b", &none));
        assert!(r.root.words.is_empty(), "whole path pruned");
        assert!(r.unbind(&q("b"), "", &none));
        assert!(r.is_empty() && r.root.is_empty() && r.per_dest.is_empty());
    }

    fn word() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "", "*", "#"])
    }

    fn key() -> impl Strategy<Value = String> {
        prop::collection::vec(word(), 0..6).prop_map(|w| w.join("."))
    }

    fn check_against_reference(r: &TopicRouter, binds: &[(u8, String)], keys: &[String]) {
        for rk in keys {
            let mut want: Vec<Destination> = binds
                .iter()
                .filter(|(_, bk)| ref_match(&ref_words(bk), &ref_words(rk)))
                .map(|(d, _)| q(&d.to_string()))
                .collect();
            want.sort();
            want.dedup();
            assert_eq!(routed(r, rk), want, "routing key {rk:?}, bindings {binds:?}");
        }
    }

    proptest! {
        #[test]
        fn trie_agrees_with_reference(
            binds in prop::collection::vec((0u8..4, key()), 0..10),
            keys in prop::collection::vec(key(), 1..12),
            drop_mask in any::<u16>(),
        ) {
            let mut r = TopicRouter::default();
            let none = FieldTable::new();
            let mut live: Vec<(u8, String)> = Vec::new();
            for (d, bk) in &binds {
                let fresh = !live.contains(&(*d, bk.clone()));
                prop_assert_eq!(r.bind(&q(&d.to_string()), bk, &none), fresh);
                if fresh {
                    live.push((*d, bk.clone()));
                }
            }
            prop_assert_eq!(r.len(), live.len());
            check_against_reference(&r, &live, &keys);

            // Unbind some, then check again.
            let (gone, kept): (Vec<_>, Vec<_>) = live
                .iter()
                .cloned()
                .enumerate()
                .partition(|(i, _)| drop_mask & (1 << i) != 0);
            for (_, (d, bk)) in &gone {
                prop_assert!(r.unbind(&q(&d.to_string()), bk, &none));
                prop_assert!(!r.unbind(&q(&d.to_string()), bk, &none));
            }
            let kept: Vec<(u8, String)> = kept.into_iter().map(|(_, b)| b).collect();
            prop_assert_eq!(r.len(), kept.len());
            check_against_reference(&r, &kept, &keys);
            for d in 0u8..4 {
                let has = kept.iter().any(|(k, _)| *k == d);
                prop_assert_eq!(r.has_destination(&q(&d.to_string())), has);
            }

            // Removing everything gives all the memory back.
            for (d, bk) in &kept {
                prop_assert!(r.unbind(&q(&d.to_string()), bk, &none));
            }
            prop_assert!(r.is_empty() && r.root.is_empty() && r.per_dest.is_empty());
        }
    }
}
