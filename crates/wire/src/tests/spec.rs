//! The hand-written method table and constants checked against `amqp-rabbitmq-0.9.1.json`.

use serde_json::Value;

use crate::constants;
use crate::method::METHODS;

fn spec() -> Value {
    let text = include_str!("../../tests/data/amqp-rabbitmq-0.9.1.json");
    serde_json::from_str(text).expect("spec json")
}

fn rust_name(spec_name: &str) -> String {
    match spec_name {
        "type" => "kind".to_string(),
        other => other.replace('-', "_"),
    }
}

#[test]
fn every_spec_method_is_in_the_table_with_its_fields() {
    let spec = spec();
    let mut seen = 0;
    for class in spec["classes"].as_array().unwrap() {
        let class_id = class["id"].as_u64().unwrap() as u16;
        let class_name = class["name"].as_str().unwrap();
        for m in class["methods"].as_array().unwrap() {
            let method_id = m["id"].as_u64().unwrap() as u16;
            let name = format!("{class_name}.{}", m["name"].as_str().unwrap());
            let info = METHODS
                .iter()
                .find(|i| i.class_id == class_id && i.method_id == method_id)
                .unwrap_or_else(|| panic!("{name} ({class_id}/{method_id}) missing"));
            assert_eq!(info.name, name);
            let fields: Vec<String> = m["arguments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| rust_name(a["name"].as_str().unwrap()))
                .collect();
            assert_eq!(info.fields, fields, "{name} fields");
            assert_eq!(info.content, m["content"].as_bool().unwrap_or(false), "{name} content");
            seen += 1;
        }
    }
    assert_eq!(seen, METHODS.len(), "table has methods the spec lacks");
}

#[test]
fn argument_types_match_the_spec_domains() {
    let spec = spec();
    let domains: std::collections::HashMap<&str, &str> = spec["domains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d[0].as_str().unwrap(), d[1].as_str().unwrap()))
        .collect();
    for class in spec["classes"].as_array().unwrap() {
        let class_id = class["id"].as_u64().unwrap() as u16;
        for m in class["methods"].as_array().unwrap() {
            let method_id = m["id"].as_u64().unwrap() as u16;
            let info = METHODS
                .iter()
                .find(|i| i.class_id == class_id && i.method_id == method_id)
                .unwrap();
            let spec_types: Vec<&str> = m["arguments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| match a.get("type").and_then(Value::as_str) {
                    Some(t) => t,
                    None => domains[a["domain"].as_str().unwrap()],
                })
                .map(|t| match t {
                    "octet" => "u8",
                    "short" => "u16",
                    "long" => "u32",
                    "longlong" | "timestamp" => "u64",
                    "bit" => "bool",
                    "shortstr" => "ShortStr",
                    "longstr" => "LongStr",
                    "table" => "FieldTable",
                    other => panic!("unknown spec type {other}"),
                })
                .collect();
            assert_eq!(info.types, spec_types, "{} argument types", info.name);
        }
    }
}

#[test]
fn constants_match_the_spec() {
    let spec = spec();
    for c in spec["constants"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let value = c["value"].as_u64().unwrap();
        let ours: u64 = match name {
            "FRAME-METHOD" => constants::FRAME_METHOD.into(),
            "FRAME-HEADER" => constants::FRAME_HEADER.into(),
            "FRAME-BODY" => constants::FRAME_BODY.into(),
            "FRAME-HEARTBEAT" => constants::FRAME_HEARTBEAT.into(),
            "FRAME-MIN-SIZE" => constants::FRAME_MIN_SIZE.into(),
            "FRAME-END" => constants::FRAME_END.into(),
            reply_name => {
                let code = value as u16;
                let ours = constants::reply::name(code).replace('_', "-");
                let expected = reply_name;
                assert_eq!(ours, expected, "reply code {code}");
                code.into()
            }
        };
        assert_eq!(ours, value, "{name}");
    }
}
