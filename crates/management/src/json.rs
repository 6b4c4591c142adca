//! AMQP field tables as JSON and back, as RabbitMQ's API writes and reads arguments, headers
//! and policy definitions: integers and floats as numbers, strings, booleans, arrays,
//! nested tables as objects, void as null.

use serde_json::Value;
use warren_core::AmqpError;
use warren_wire::{FieldTable, FieldValue};

/// A JSON value as a field value (integers as signed 64-bit, other numbers as doubles).
pub fn json_value(v: &Value) -> FieldValue {
    match v {
        Value::Null => FieldValue::Void,
        Value::Bool(b) => FieldValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => FieldValue::I64(i),
            None => FieldValue::F64(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => FieldValue::from(s.as_str()),
        Value::Array(a) => FieldValue::Array(a.iter().map(json_value).collect()),
        Value::Object(o) => {
            let mut t = FieldTable::new();
            for (k, v) in o {
                t.insert(k.as_str(), json_value(v));
            }
            FieldValue::Table(t)
        }
    }
}

/// A JSON object as a field table; 406 with RabbitMQ's validation wording otherwise.
pub fn json_table(text: &str) -> Result<FieldTable, AmqpError> {
    let bad = |e: String| AmqpError::precondition_failed(format!("Validation failed\n\n{e}"));
    let value: Value =
        serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON definition: {e}")))?;
    object_table(&value).ok_or_else(|| {
        bad("the definition must be a JSON object with keys of at most 255 bytes".into())
    })
}

/// A JSON object (or null) as a field table; `None` if it is not one, or if it would not
/// encode on the wire (a key longer than 255 bytes): such a table could not be saved in the
/// definitions nor sent to a client.
pub fn object_table(v: &Value) -> Option<FieldTable> {
    let t = match v {
        Value::Null => FieldTable::new(),
        Value::Object(_) => match json_value(v) {
            FieldValue::Table(t) => t,
            _ => return None,
        },
        _ => return None,
    };
    t.encode(&mut bytes::BytesMut::new()).ok().map(|()| t)
}

/// A field value as JSON.
pub fn value_json(v: &FieldValue) -> Value {
    match v {
        FieldValue::Bool(b) => Value::Bool(*b),
        FieldValue::F32(f) => serde_json::json!(f),
        FieldValue::F64(f) => serde_json::json!(f),
        FieldValue::Array(a) => Value::Array(a.iter().map(value_json).collect()),
        FieldValue::Table(t) => table_json(t),
        FieldValue::Void => Value::Null,
        other => match (other.as_i64(), other.as_str()) {
            (Some(n), _) => serde_json::json!(n),
            (_, Some(s)) => Value::String(s.to_string()),
            _ => Value::String(format!("{other:?}")),
        },
    }
}

/// A field table as a JSON object.
pub fn table_json(t: &FieldTable) -> Value {
    Value::Object(t.iter().map(|(k, v)| (k.to_string(), value_json(v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_round_trip_through_json() {
        let text = r#"{"a":1,"b":"x","c":[true,null],"d":{"e":1.5}}"#;
        let t = json_table(text).unwrap();
        assert_eq!(table_json(&t).to_string(), text);
        assert_eq!(t.get("a"), Some(&FieldValue::I64(1)));
        assert_eq!(t.get("b").and_then(FieldValue::as_str), Some("x"));
        assert_eq!(json_table("[1]").unwrap_err().code, 406);
        assert_eq!(json_table("{").unwrap_err().code, 406);
        let long = serde_json::json!({ "k".repeat(256): 1 });
        assert_eq!(object_table(&long), None, "a key the wire cannot carry");
    }
}
