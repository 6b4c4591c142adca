//! Headers exchange: a message goes to the bindings whose arguments match its headers table;
//! the routing key plays no part in matching. Also the check of a binding's `x-match`.
//!
//! Semantics are those of RabbitMQ 3.13 and later (`rabbit_exchange_type_headers`, reading the
//! message through `mc_amqpl:routing_headers/2`):
//!
//! - `x-match` is `all` (the default, and what any unrecognised value falls back to), `any`,
//!   `all-with-x` or `any-with-x`. With `all`/`any`, binding arguments whose key starts with
//!   `x-` are ignored; with the `-with-x` forms only `x-match` itself is.
//! - An argument of type void (`V`) asks only that the header be present; any other argument
//!   asks for the header with an equal value. `all` with nothing left to test matches every
//!   message, `any` with nothing left matches none. No headers property means an empty table.
//! - Headers are looked up as a map built in wire order, so if a key repeats, its last value
//!   counts.
//! - Values are compared as Erlang's `=:=` compares the decoded terms: type letters are
//!   dropped at the top level, so integers of any width compare by value (`b` 1 equals `l` 1),
//!   `S` and `x` compare as bytes, but an integer never equals a float (`I` 1 is not `d` 1.0)
//!   and `f` and `d` compare after widening to 64 bits. Inside nested tables and arrays the
//!   type letters count (as Erlang type atoms, so `l` and `L` are the same), and so does the
//!   order of a nested table's entries. An empty array equals an empty table (both are `[]`).
//! - A timestamp (`T`) header is read in milliseconds (`routing_value(timestamp, V) -> V * 1000`)
//!   while binding arguments stay as sent: a `T` argument of 5 matches an integer header of 5
//!   and a `T` header of 5 matches an integer argument of 5000, but equal `T`s match only at 0.

use std::fmt::Write as _;

use warren_wire::value::tables_equivalent;
use warren_wire::{Decimal, FieldTable, FieldValue};

use super::{Destination, Router};

/// The four `x-match` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XMatch {
    All,
    Any,
    AllWithX,
    AnyWithX,
}

impl XMatch {
    /// The mode a binding's arguments ask for; anything unrecognised is `all`, as in RabbitMQ.
    fn of(args: &FieldTable) -> XMatch {
        match args.get("x-match") {
            Some(FieldValue::LongStr(s)) => match &s[..] {
                b"any" => XMatch::Any,
                b"all-with-x" => XMatch::AllWithX,
                b"any-with-x" => XMatch::AnyWithX,
                _ => XMatch::All,
            },
            _ => XMatch::All,
        }
    }
}

/// One binding, with its `x-match` mode read once at bind time.
#[derive(Debug)]
struct Binding {
    dest: Destination,
    key: String,
    args: FieldTable,
    x_match: XMatch,
}

/// All bindings, in bind order; each message is tested against each binding.
#[derive(Debug, Default)]
pub struct HeadersRouter {
    bindings: Vec<Binding>,
}

/// Checks a binding's `x-match` argument as RabbitMQ's `validate_binding/2` does: absent, or a
/// long string `all`, `any`, `all-with-x` or `any-with-x`. The error text is RabbitMQ's, to be
/// sent with reply code 406 PRECONDITION_FAILED on `queue.bind` / `exchange.bind`.
pub fn validate_x_match(args: &FieldTable) -> Result<(), String> {
    match args.get("x-match") {
        None => Ok(()),
        Some(FieldValue::LongStr(s))
            if matches!(&s[..], b"all" | b"any" | b"all-with-x" | b"any-with-x") =>
        {
            Ok(())
        }
        Some(FieldValue::LongStr(s)) => Err(format!(
            "Invalid x-match field value {}; expected all, any, all-with-x, or any-with-x",
            erl_binary(s)
        )),
        Some(other) => Err(format!(
            "Invalid x-match field type {} (value {}); expected longstr",
            FieldValue::rabbit_type(other),
            erl_value(other)
        )),
    }
}

/// Whether a message with these headers matches a binding with these arguments.
fn binding_matches(args: &FieldTable, x_match: XMatch, headers: &FieldTable) -> bool {
    let with_x = matches!(x_match, XMatch::AllWithX | XMatch::AnyWithX);
    let mut tests = args
        .iter()
        .filter(|(k, _)| if with_x { *k != "x-match" } else { !k.starts_with("x-") })
        .map(|(k, want)| arg_matches(k, want, headers));
    match x_match {
        XMatch::All | XMatch::AllWithX => tests.all(|m| m),
        XMatch::Any | XMatch::AnyWithX => tests.any(|m| m),
    }
}

/// One binding argument against the headers: void asks for presence, anything else for an
/// equal value. The last header with the key counts, as in RabbitMQ's headers map.
fn arg_matches(key: &str, want: &FieldValue, headers: &FieldTable) -> bool {
    match headers.0.iter().rev().find(|(k, _)| &**k == key) {
        None => false,
        Some(_) if matches!(want, FieldValue::Void) => true,
        Some((_, have)) => Term::of(want, false) == Term::of(have, true),
    }
}

/// A top-level value as RabbitMQ holds it for matching: the value without its type letter.
#[derive(Debug)]
enum Term<'a> {
    Int(i128),
    Float(f64),
    Bool(bool),
    Binary(&'a [u8]),
    Decimal(Decimal),
    Undefined,
    Array(&'a [FieldValue]),
    Table(&'a FieldTable),
}

impl<'a> Term<'a> {
    /// `header` applies RabbitMQ's reading of a timestamp header in milliseconds.
    fn of(v: &'a FieldValue, header: bool) -> Term<'a> {
        match v {
            FieldValue::Bool(b) => Term::Bool(*b),
            FieldValue::I8(n) => Term::Int((*n).into()),
            FieldValue::U8(n) => Term::Int((*n).into()),
            FieldValue::I16(n) | FieldValue::I16U(n) => Term::Int((*n).into()),
            FieldValue::U16(n) => Term::Int((*n).into()),
            FieldValue::I32(n) => Term::Int((*n).into()),
            FieldValue::U32(n) => Term::Int((*n).into()),
            FieldValue::I64(n) | FieldValue::I64L(n) => Term::Int((*n).into()),
            FieldValue::Timestamp(n) => Term::Int(i128::from(*n) * if header { 1000 } else { 1 }),
            FieldValue::F32(f) => Term::Float((*f).into()),
            FieldValue::F64(f) => Term::Float(*f),
            FieldValue::Decimal(d) => Term::Decimal(*d),
            FieldValue::LongStr(b) | FieldValue::Bytes(b) => Term::Binary(b),
            FieldValue::Array(a) => Term::Array(a),
            FieldValue::Table(t) => Term::Table(t),
            FieldValue::Void => Term::Undefined,
        }
    }
}

impl PartialEq for Term<'_> {
    /// Erlang's `=:=` on the decoded terms.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Term::Int(a), Term::Int(b)) => a == b,
            (Term::Float(a), Term::Float(b)) => a == b,
            (Term::Bool(a), Term::Bool(b)) => a == b,
            (Term::Binary(a), Term::Binary(b)) => a == b,
            (Term::Decimal(a), Term::Decimal(b)) => a == b,
            (Term::Undefined, Term::Undefined) => true,
            (Term::Array(a), Term::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| typed_eq(x, y))
            }
            (Term::Table(a), Term::Table(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b.iter())
                        .all(|((ka, va), (kb, vb))| ka == kb && typed_eq(va, vb))
            }
            // Both decode to the empty list.
            (Term::Array(a), Term::Table(t)) | (Term::Table(t), Term::Array(a)) => {
                a.is_empty() && t.is_empty()
            }
            _ => false,
        }
    }
}

/// Equality of values nested in a table or array, where RabbitMQ keeps `{Type, Value}`.
fn typed_eq(a: &FieldValue, b: &FieldValue) -> bool {
    FieldValue::rabbit_type(a) == FieldValue::rabbit_type(b)
        && Term::of(a, false) == Term::of(b, false)
}

/// A decoded value as Erlang's `~tp` prints it (for error texts; floats approximately).
fn erl_value(v: &FieldValue) -> String {
    match v {
        FieldValue::Bool(b) => b.to_string(),
        FieldValue::I8(n) => n.to_string(),
        FieldValue::U8(n) => n.to_string(),
        FieldValue::I16(n) | FieldValue::I16U(n) => n.to_string(),
        FieldValue::U16(n) => n.to_string(),
        FieldValue::I32(n) => n.to_string(),
        FieldValue::U32(n) => n.to_string(),
        FieldValue::I64(n) | FieldValue::I64L(n) => n.to_string(),
        FieldValue::Timestamp(n) => n.to_string(),
        FieldValue::F32(f) => format!("{:?}", f64::from(*f)),
        FieldValue::F64(f) => format!("{f:?}"),
        FieldValue::Decimal(d) => format!("{{{},{}}}", d.scale, d.value),
        FieldValue::LongStr(b) | FieldValue::Bytes(b) => erl_binary(b),
        FieldValue::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|v| format!("{{{},{}}}", FieldValue::rabbit_type(v), erl_value(v)))
                .collect();
            format!("[{}]", items.join(","))
        }
        FieldValue::Table(t) => {
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{{{},{},{}}}",
                        erl_binary(k.as_bytes()),
                        FieldValue::rabbit_type(v),
                        erl_value(v)
                    )
                })
                .collect();
            format!("[{}]", items.join(","))
        }
        FieldValue::Void => "undefined".to_string(),
    }
}

/// A binary as `~tp` prints it: `<<"text">>`, `<<"text"/utf8>>` or `<<1,2,3>>`.
fn erl_binary(b: &[u8]) -> String {
    if b.is_empty() {
        return "<<>>".to_string();
    }
    let printable = |c: char| {
        !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\u{b}' | '\u{8}' | '\u{c}' | '\u{1b}')
    };
    match std::str::from_utf8(b) {
        Ok(s) if s.chars().all(printable) => {
            let mut out = String::from("<<\"");
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    '\u{b}' => out.push_str("\\v"),
                    '\u{8}' => out.push_str("\\b"),
                    '\u{c}' => out.push_str("\\f"),
                    '\u{1b}' => out.push_str("\\e"),
                    c => out.push(c),
                }
            }
            out.push('"');
            if !s.is_ascii() {
                out.push_str("/utf8");
            }
            out.push_str(">>");
            out
        }
        _ => {
            let mut out = String::from("<<");
            for (i, byte) in b.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{byte}");
            }
            out.push_str(">>");
            out
        }
    }
}

impl Router for HeadersRouter {
    fn bind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        if self
            .bindings
            .iter()
            .any(|b| b.dest == *dest && b.key == routing_key && tables_equivalent(&b.args, args))
        {
            return false;
        }
        self.bindings.push(Binding {
            dest: dest.clone(),
            key: routing_key.to_string(),
            args: args.clone(),
            x_match: XMatch::of(args),
        });
        true
    }

    fn unbind(&mut self, dest: &Destination, routing_key: &str, args: &FieldTable) -> bool {
        let Some(pos) = self.bindings.iter().position(|b| {
            b.dest == *dest && b.key == routing_key && tables_equivalent(&b.args, args)
        }) else {
            return false;
        };
        self.bindings.remove(pos);
        true
    }

    fn remove_destination(&mut self, dest: &Destination) -> usize {
        let before = self.bindings.len();
        self.bindings.retain(|b| b.dest != *dest);
        before - self.bindings.len()
    }

    fn route(&self, _routing_key: &str, headers: Option<&FieldTable>, out: &mut Vec<Destination>) {
        let empty = FieldTable::new();
        let headers = headers.unwrap_or(&empty);
        for b in &self.bindings {
            if !out[..].contains(&b.dest) && binding_matches(&b.args, b.x_match, headers) {
                out.push(b.dest.clone());
            }
        }
    }

    fn has_destination(&self, dest: &Destination) -> bool {
        self.bindings.iter().any(|b| b.dest == *dest)
    }

    fn len(&self) -> usize {
        self.bindings.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(name: &str) -> Destination {
        Destination::Queue(name.into())
    }

    fn table(entries: Vec<(&str, FieldValue)>) -> FieldTable {
        FieldTable(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// Whether one binding with `args` routes a message with `headers`.
    fn hits(args: Vec<(&str, FieldValue)>, headers: Option<Vec<(&str, FieldValue)>>) -> bool {
        let mut r = HeadersRouter::default();
        assert!(r.bind(&q("q"), "", &table(args)));
        let headers = headers.map(table);
        let mut out = Vec::new();
        r.route("ignored", headers.as_ref(), &mut out);
        !out.is_empty()
    }

    fn s(v: &str) -> FieldValue {
        FieldValue::from(v)
    }

    fn any() -> (&'static str, FieldValue) {
        ("x-match", s("any"))
    }

    #[test]
    fn all_and_any() {
        use FieldValue::*;
        let args = || vec![("a", I32(1)), ("b", s("x"))];
        assert!(hits(args(), Some(vec![("b", s("x")), ("a", I32(1)), ("c", Bool(true))])));
        assert!(!hits(args(), Some(vec![("a", I32(1))])), "all: b missing");
        assert!(!hits(args(), Some(vec![("a", I32(1)), ("b", s("y"))])), "all: b differs");
        let explicit_all = vec![("x-match", s("all")), ("a", I32(1))];
        assert!(hits(explicit_all, Some(vec![("a", I32(1))])));

        let any_args = || vec![any(), ("a", I32(1)), ("b", s("x"))];
        assert!(hits(any_args(), Some(vec![("b", s("x"))])));
        assert!(hits(any_args(), Some(vec![("a", I32(1)), ("b", s("nope"))])));
        assert!(!hits(any_args(), Some(vec![("a", I32(2)), ("c", s("x"))])));
        assert!(!hits(any_args(), None));
    }

    #[test]
    fn nothing_to_test() {
        use FieldValue::*;
        assert!(hits(vec![], None), "all with no arguments matches everything");
        assert!(hits(vec![], Some(vec![("a", I8(1))])));
        assert!(hits(vec![("x-foo", s("bar"))], None), "x- arguments are not tested");
        assert!(!hits(vec![any()], Some(vec![("a", I8(1))])), "any with nothing matches nothing");
        assert!(!hits(vec![any(), ("x-foo", s("bar"))], Some(vec![("x-foo", s("bar"))])));
        assert!(hits(vec![("x-match", s("all-with-x"))], None));
        assert!(!hits(
            vec![("x-match", s("any-with-x"))],
            Some(vec![("x-match", s("any-with-x"))])
        ));
    }

    #[test]
    fn x_keys() {
        use FieldValue::*;
        let h = || Some(vec![("a", I32(1)), ("x-foo", s("bar"))]);
        // Plain all/any ignore x- arguments...
        assert!(hits(vec![("a", I32(1)), ("x-foo", s("other"))], h()));
        assert!(hits(vec![("a", I32(1)), ("x-other", s("bar"))], h()));
        assert!(!hits(vec![any(), ("x-foo", s("bar"))], h()));
        // ...the -with-x forms test them (but never x-match itself).
        let all_x = |v: &str| vec![("x-match", s("all-with-x")), ("a", I32(1)), ("x-foo", s(v))];
        assert!(hits(all_x("bar"), h()));
        assert!(!hits(all_x("other"), h()));
        let any_x = |v: &str| vec![("x-match", s("any-with-x")), ("x-foo", s(v))];
        assert!(hits(any_x("bar"), h()));
        assert!(!hits(any_x("other"), h()));
        // The x- prefix is case-sensitive: X-foo is an ordinary argument.
        assert!(!hits(vec![("X-foo", s("bar"))], h()));
    }

    #[test]
    fn integer_widths_compare_by_value() {
        use FieldValue::*;
        let ones = [I8(1), U8(1), I16(1), I16U(1), U16(1), I32(1), U32(1), I64(1), I64L(1)];
        for a in &ones {
            for h in &ones {
                assert!(hits(vec![("n", a.clone())], Some(vec![("n", h.clone())])), "{a:?} {h:?}");
            }
        }
        assert!(!hits(vec![("n", I8(-1))], Some(vec![("n", U8(255))])));
        assert!(hits(vec![("n", I64(-1))], Some(vec![("n", I8(-1))])));
        assert!(hits(vec![("n", U32(u32::MAX))], Some(vec![("n", I64(u32::MAX.into()))])));
        assert!(!hits(vec![("n", I32(1))], Some(vec![("n", I32(2))])));
    }

    #[test]
    fn floats_strings_booleans() {
        use FieldValue::*;
        let one = |v: FieldValue, h: FieldValue| hits(vec![("k", v)], Some(vec![("k", h)]));
        assert!(!one(I32(1), F64(1.0)), "=:= : an integer is never a float");
        assert!(!one(F32(1.0), I8(1)));
        assert!(one(F32(1.5), F64(1.5)), "floats widen to doubles");
        assert!(!one(F32(0.1), F64(0.1)));
        assert!(one(F64(0.25), F64(0.25)));
        assert!(one(s("abc"), s("abc")));
        assert!(!one(s("abc"), s("ABC")));
        assert!(
            one(s("abc"), Bytes(bytes::Bytes::from_static(b"abc"))),
            "S and x are both binaries"
        );
        assert!(!one(s("1"), I32(1)));
        assert!(one(Bool(true), Bool(true)));
        assert!(!one(Bool(true), Bool(false)));
        assert!(!one(Bool(true), U8(1)));
        let dec = |scale, value| Decimal(warren_wire::Decimal { scale, value });
        assert!(one(dec(2, 150), dec(2, 150)));
        assert!(!one(dec(2, 150), dec(1, 15)), "decimals compare as {{Scale, Value}}");
    }

    #[test]
    fn void_means_presence() {
        use FieldValue::*;
        assert!(hits(vec![("k", Void)], Some(vec![("k", s("anything"))])));
        assert!(hits(vec![("k", Void)], Some(vec![("k", Void)])));
        assert!(hits(vec![("k", Void)], Some(vec![("k", Table(FieldTable::new()))])));
        assert!(!hits(vec![("k", Void)], Some(vec![("other", Void)])));
        assert!(!hits(vec![("k", Void)], None));
        assert!(!hits(vec![("k", s(""))], Some(vec![("k", Void)])), "a void header has no value");
        assert!(hits(vec![any(), ("k", Void), ("j", I8(1))], Some(vec![("k", I8(9))])));
    }

    #[test]
    fn nested_values_compare_with_types_and_order() {
        use FieldValue::*;
        let one = |v: FieldValue, h: FieldValue| hits(vec![("k", v)], Some(vec![("k", h)]));
        let t = |e: Vec<(&str, FieldValue)>| Table(table(e));
        assert!(one(t(vec![("a", I32(1))]), t(vec![("a", I32(1))])));
        assert!(!one(t(vec![("a", I32(1))]), t(vec![("a", I64(1))])), "nested type counts");
        assert!(one(t(vec![("a", I64(1))]), t(vec![("a", I64L(1))])), "l and L are both long");
        assert!(!one(t(vec![("a", I8(1)), ("b", I8(2))]), t(vec![("b", I8(2)), ("a", I8(1))])));
        assert!(!one(t(vec![("a", I8(1))]), t(vec![("a", I8(1)), ("b", I8(2))])));
        assert!(!one(
            t(vec![("a", s("x"))]),
            t(vec![("a", Bytes(bytes::Bytes::from_static(b"x")))])
        ));
        assert!(one(Array(vec![I32(1), s("x")]), Array(vec![I32(1), s("x")])));
        assert!(!one(Array(vec![I32(1)]), Array(vec![I64(1)])));
        assert!(!one(Array(vec![I32(1)]), Array(vec![I32(1), I32(1)])));
        assert!(one(Array(vec![]), t(vec![])), "both decode to []");
        assert!(!one(Array(vec![I32(1)]), t(vec![("a", I32(1))])));
        let nested = || t(vec![("in", Array(vec![t(vec![("z", Timestamp(5))])]))]);
        assert!(one(nested(), nested()), "no millisecond scaling below the top level");
    }

    #[test]
    fn timestamp_headers_are_read_in_milliseconds() {
        use FieldValue::*;
        let one = |v: FieldValue, h: FieldValue| hits(vec![("k", v)], Some(vec![("k", h)]));
        assert!(one(I64(5000), Timestamp(5)));
        assert!(one(Timestamp(5), I64(5)));
        assert!(!one(Timestamp(5), Timestamp(5)));
        assert!(one(Timestamp(0), Timestamp(0)));
        assert!(!one(U8(0), Timestamp(u64::MAX)), "no overflow");
    }

    #[test]
    fn last_header_of_a_repeated_key_counts() {
        use FieldValue::*;
        let h = || Some(vec![("k", I8(1)), ("k", I8(2))]);
        assert!(hits(vec![("k", I8(2))], h()));
        assert!(!hits(vec![("k", I8(1))], h()));
    }

    #[test]
    fn unknown_x_match_falls_back_to_all() {
        use FieldValue::*;
        let args = |m: FieldValue| vec![("x-match", m), ("a", I8(1)), ("b", I8(2))];
        let h = || Some(vec![("a", I8(1))]);
        assert!(!hits(args(s("ANY")), h()));
        assert!(!hits(args(I8(1)), h()));
        assert!(hits(args(s("ANY")), Some(vec![("a", I8(1)), ("b", I8(2))])));
    }

    #[test]
    fn validates_x_match_like_rabbitmq() {
        use FieldValue::*;
        for ok in ["all", "any", "all-with-x", "any-with-x"] {
            assert_eq!(validate_x_match(&table(vec![("x-match", s(ok))])), Ok(()));
        }
        assert_eq!(validate_x_match(&FieldTable::new()), Ok(()));
        assert_eq!(validate_x_match(&table(vec![("a", s("whatever"))])), Ok(()));
        assert_eq!(
            validate_x_match(&table(vec![("x-match", s("foo"))])),
            Err("Invalid x-match field value <<\"foo\">>; \
                 expected all, any, all-with-x, or any-with-x"
                .to_string())
        );
        assert_eq!(
            validate_x_match(&table(vec![("x-match", s("All"))])).map_err(|e| e.contains("All")),
            Err(true),
            "case-sensitive"
        );
        assert_eq!(
            validate_x_match(&table(vec![("x-match", s("é\"\n"))])),
            Err("Invalid x-match field value <<\"é\\\"\\n\"/utf8>>; \
                 expected all, any, all-with-x, or any-with-x"
                .to_string())
        );
        assert_eq!(
            validate_x_match(&table(vec![("x-match", I32(1))])),
            Err("Invalid x-match field type signedint (value 1); expected longstr".to_string())
        );
        assert_eq!(
            validate_x_match(&table(vec![("x-match", Bytes(bytes::Bytes::from_static(b"all")))])),
            Err("Invalid x-match field type binary (value <<\"all\">>); expected longstr"
                .to_string())
        );
        assert_eq!(
            validate_x_match(&table(vec![(
                "x-match",
                Bytes(bytes::Bytes::from_static(&[0, 255]))
            )])),
            Err("Invalid x-match field type binary (value <<0,255>>); expected longstr".to_string())
        );
        assert_eq!(
            validate_x_match(&table(vec![(
                "x-match",
                Table(table(vec![("a", Array(vec![Bool(true), Void]))]))
            )])),
            Err("Invalid x-match field type table (value [{<<\"a\">>,array,[{bool,true},\
                 {void,undefined}]}]); expected longstr"
                .to_string())
        );
    }

    #[test]
    fn router_bookkeeping_and_single_delivery() {
        use FieldValue::*;
        let mut r = HeadersRouter::default();
        let a1 = table(vec![("a", I8(1))]);
        let a1_reordered = table(vec![("x-match", s("all")), ("a", I8(1))]);
        let b = table(vec![any(), ("b", I8(2)), ("a", I8(1))]);
        let e = Destination::Exchange("e".into());
        assert!(r.bind(&q("q"), "", &a1));
        assert!(!r.bind(&q("q"), "", &a1), "duplicate");
        assert!(r.bind(&q("q"), "other key", &a1), "routing key is part of the identity");
        assert!(r.bind(&q("q"), "", &a1_reordered), "other arguments");
        assert!(r.bind(&e, "", &b));
        assert_eq!(r.len(), 4);
        let mut out = Vec::new();
        r.route("", Some(&table(vec![("a", I8(1))])), &mut out);
        assert_eq!(out, vec![q("q"), e.clone()], "q once although three bindings match");
        assert!(r.unbind(&q("q"), "other key", &a1));
        assert!(!r.unbind(&q("q"), "other key", &a1));
        assert_eq!(r.remove_destination(&q("q")), 2);
        assert!(!r.has_destination(&q("q")) && r.has_destination(&e));
        assert!(r.unbind(&e, "", &table(vec![("a", I8(1)), ("b", I8(2)), any()])));
        assert!(r.is_empty());
    }
}
