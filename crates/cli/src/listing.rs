//! The `list_*` commands' output: the info keys rabbitmqctl takes as column arguments, read
//! from the management API's JSON, printed as rabbitmqctl prints them (a tab-separated table
//! with a header line, or `--formatter json`).

use serde_json::{Map, Value};

use crate::{Error, Options};

/// An info key and where its value is in the API's object (a dotted path).
pub(crate) type Key = (&'static str, &'static str);

pub(crate) const QUEUE_KEYS: &[Key] = &[
    ("name", "name"),
    ("vhost", "vhost"),
    ("durable", "durable"),
    ("auto_delete", "auto_delete"),
    ("arguments", "arguments"),
    ("policy", "policy"),
    ("exclusive", "exclusive"),
    ("messages_ready", "messages_ready"),
    ("messages_unacknowledged", "messages_unacknowledged"),
    ("messages", "messages"),
    ("message_bytes_ready", "message_bytes_ready"),
    ("consumers", "consumers"),
    ("state", "state"),
    ("type", "type"),
];

pub(crate) const EXCHANGE_KEYS: &[Key] = &[
    ("name", "name"),
    ("vhost", "vhost"),
    ("type", "type"),
    ("durable", "durable"),
    ("auto_delete", "auto_delete"),
    ("internal", "internal"),
    ("arguments", "arguments"),
    ("policy", "policy"),
];

pub(crate) const BINDING_KEYS: &[Key] = &[
    ("source_name", "source"),
    ("source_kind", "source_kind"),
    ("destination_name", "destination"),
    ("destination_kind", "destination_type"),
    ("routing_key", "routing_key"),
    ("arguments", "arguments"),
    ("vhost", "vhost"),
];

pub(crate) const CONNECTION_KEYS: &[Key] = &[
    ("name", "name"),
    ("user", "user"),
    ("vhost", "vhost"),
    ("peer_host", "peer_host"),
    ("peer_port", "peer_port"),
    ("host", "host"),
    ("port", "port"),
    ("state", "state"),
    ("channels", "channels"),
    ("protocol", "protocol"),
    ("ssl", "ssl"),
    ("timeout", "timeout"),
    ("frame_max", "frame_max"),
    ("channel_max", "channel_max"),
    ("client_properties", "client_properties"),
    ("connected_at", "connected_at"),
    ("user_provided_name", "user_provided_name"),
];

pub(crate) const CONSUMER_KEYS: &[Key] = &[
    ("queue_name", "queue.name"),
    ("channel_pid", "channel_details.name"),
    ("consumer_tag", "consumer_tag"),
    ("ack_required", "ack_required"),
    ("prefetch_count", "prefetch_count"),
    ("active", "active"),
    ("exclusive", "exclusive"),
    ("arguments", "arguments"),
];

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// A value as rabbitmqctl's table shows it.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) if a.is_empty() => "[]".into(),
        Some(Value::Object(o)) if o.is_empty() => "[]".into(),
        Some(other) => other.to_string(),
    }
}

/// The columns asked for (`wanted`, or `default`), checked against the keys known.
pub(crate) fn columns<'k>(
    keys: &'k [Key],
    wanted: &[String],
    default: &[&str],
) -> Result<Vec<&'k Key>, Error> {
    let names: Vec<&str> = if wanted.is_empty() {
        default.to_vec()
    } else {
        wanted.iter().map(String::as_str).collect()
    };
    let unknown: Vec<&str> =
        names.iter().copied().filter(|n| !keys.iter().any(|k| k.0 == *n)).collect();
    if !unknown.is_empty() {
        let valid: Vec<&str> = keys.iter().map(|k| k.0).collect();
        return Err(Error::Usage(format!(
            "Info key(s) {} are not supported. Valid keys are: {}",
            unknown.join(","),
            valid.join(", ")
        )));
    }
    Ok(names.iter().filter_map(|n| keys.iter().find(|k| k.0 == *n)).collect())
}

/// Prints `items` with the chosen columns.
pub(crate) fn print(opts: &Options, columns: &[&Key], items: &[Value]) {
    if opts.json {
        let rows: Vec<Value> = items
            .iter()
            .map(|i| {
                let mut o = Map::new();
                for (name, path) in columns {
                    o.insert(name.to_string(), at(i, path).cloned().unwrap_or(Value::Null));
                }
                Value::Object(o)
            })
            .collect();
        out!("{}", Value::Array(rows));
        return;
    }
    if opts.headers {
        let header: Vec<&str> = columns.iter().map(|k| k.0).collect();
        out!("{}", header.join("\t"));
    }
    for i in items {
        let row: Vec<String> = columns.iter().map(|(_, path)| cell(at(i, path))).collect();
        out!("{}", row.join("\t"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns_are_checked_and_cells_shown_as_rabbitmqctl() {
        let cols = columns(QUEUE_KEYS, &[], &["name", "messages"]).unwrap();
        assert_eq!(cols.iter().map(|k| k.0).collect::<Vec<_>>(), ["name", "messages"]);
        let e = columns(QUEUE_KEYS, &["nope".into()], &[]).unwrap_err();
        assert!(e.to_string().starts_with("Info key(s) nope are not supported"), "{e}");
        assert_eq!(cell(Some(&json!({}))), "[]");
        assert_eq!(cell(Some(&json!(true))), "true");
        assert_eq!(cell(at(&json!({"queue": {"name": "q"}}), "queue.name")), "q");
        assert_eq!(cell(None), "");
    }
}
