//! The listing parameters RabbitMQ's API takes: `columns` (comma-separated, dotted paths into
//! nested objects), `sort` (a dotted path) with `sort_reverse`, and pagination (`page`,
//! `page_size`, `name` with `use_regex`) answering `{filtered_count, item_count, items, page,
//! page_count, page_size, total_count}`.

use std::collections::HashMap;

use axum::Json;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The query string of a listing.
pub(crate) type Params = HashMap<String, String>;

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// Keeps only the listed columns of an item (a dotted path keeps its first-level key, as
/// RabbitMQ does).
fn pick(item: Value, columns: &[&str]) -> Value {
    let Value::Object(mut o) = item else { return item };
    let mut out = Map::new();
    for c in columns {
        let top = c.split('.').next().unwrap_or(c);
        if let Some(v) = o.remove(top) {
            out.insert(top.to_string(), v);
        }
    }
    Value::Object(out)
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64().partial_cmp(&y.as_f64()).unwrap_or(std::cmp::Ordering::Equal)
        }
        (Value::String(x), Value::String(y)) => x.cmp(y),
        (Value::Null, Value::Null) => std::cmp::Ordering::Equal,
        (Value::Null, _) => std::cmp::Ordering::Less,
        (_, Value::Null) => std::cmp::Ordering::Greater,
        _ => a.to_string().cmp(&b.to_string()),
    }
}

/// Applies sorting, filtering by name, pagination and columns to a listing.
pub(crate) fn listing(mut items: Vec<Value>, params: &Params) -> Result<Json<Value>, ApiError> {
    if let Some(key) = params.get("sort").filter(|k| !k.is_empty()) {
        items.sort_by(|a, b| {
            compare(at(a, key).unwrap_or(&Value::Null), at(b, key).unwrap_or(&Value::Null))
        });
        if params.get("sort_reverse").is_some_and(|r| r == "true") {
            items.reverse();
        }
    }
    let columns: Option<Vec<&str>> = params
        .get("columns")
        .filter(|c| !c.is_empty())
        .map(|c| c.split(',').map(str::trim).filter(|c| !c.is_empty()).collect());
    let columns_of = |items: Vec<Value>| -> Vec<Value> {
        match &columns {
            Some(c) => items.into_iter().map(|i| pick(i, c)).collect(),
            None => items,
        }
    };
    let Some(page) = params.get("page") else {
        return Ok(Json(Value::Array(columns_of(items))));
    };
    let bad = |what: &str| ApiError::BadRequest(format!("{what} must be a positive integer"));
    let page: usize = page.parse().ok().filter(|p| *p > 0).ok_or_else(|| bad("page"))?;
    let page_size: usize = match params.get("page_size") {
        Some(s) => {
            s.parse().ok().filter(|p| (1..=500).contains(p)).ok_or_else(|| bad("page_size"))?
        }
        None => 100,
    };
    let total = items.len();
    let name = params.get("name").filter(|n| !n.is_empty());
    if let Some(name) = name {
        let regex = params.get("use_regex").is_some_and(|r| r == "true");
        let matches: Box<dyn Fn(&str) -> bool> = if regex {
            let re = regex_lite::Regex::new(name)
                .map_err(|e| ApiError::BadRequest(format!("invalid regex: {e}")))?;
            Box::new(move |s| re.is_match(s))
        } else {
            let lower = name.to_lowercase();
            Box::new(move |s: &str| s.to_lowercase().contains(&lower))
        };
        items.retain(|i| i.get("name").and_then(Value::as_str).is_some_and(&matches));
    }
    let filtered = items.len();
    let page_count = filtered.div_ceil(page_size).max(1);
    if page > page_count {
        return Err(ApiError::PageOutOfRange(format!(
            "Page out of range, page: {page} page size: {page_size}, len: {filtered}"
        )));
    }
    let shown: Vec<Value> =
        items.into_iter().skip((page - 1) * page_size).take(page_size).collect();
    Ok(Json(serde_json::json!({
        "filtered_count": filtered,
        "item_count": shown.len(),
        "items": columns_of(shown),
        "page": page,
        "page_count": page_count,
        "page_size": page_size,
        "total_count": total,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn columns_sort_and_pages_as_rabbitmq() {
        let items: Vec<Value> = (1..=5)
            .map(|i| json!({"name": format!("q{i}"), "messages": 10 - i, "x": {"y": i}}))
            .collect();
        let out = listing(items.clone(), &params(&[("columns", "name,x.y"), ("sort", "messages")]))
            .unwrap()
            .0;
        assert_eq!(out[0], json!({"name": "q5", "x": {"y": 5}}));
        let out = listing(items.clone(), &params(&[("page", "2"), ("page_size", "2")])).unwrap().0;
        assert_eq!(out["items"].as_array().unwrap().len(), 2);
        assert_eq!((out["page_count"].clone(), out["total_count"].clone()), (json!(3), json!(5)));
        let out = listing(
            items.clone(),
            &params(&[("page", "1"), ("name", "^q[12]$"), ("use_regex", "true")]),
        )
        .unwrap()
        .0;
        assert_eq!(out["filtered_count"], json!(2));
        let e = listing(items, &params(&[("page", "99"), ("page_size", "2")])).unwrap_err();
        assert_eq!(
            e,
            ApiError::PageOutOfRange("Page out of range, page: 99 page size: 2, len: 5".into())
        );
    }
}
