//! Query parameters: docker's `filters=` JSON and its booleans.

use std::collections::{BTreeMap, HashMap};

use crate::error::{ApiError, ApiResult};

/// The raw query of a request.
pub type Query = HashMap<String, String>;

/// `1`, `true` and `True` are true, as Go's `strconv.ParseBool` reads them.
pub fn flag(query: &Query, key: &str) -> bool {
    matches!(
        query.get(key).map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

/// `version=` of an update: the object's version the client read.
pub fn version(query: &Query) -> ApiResult<u64> {
    match query.get("version") {
        None => Err(ApiError::bad_request("invalid version: missing")),
        Some(v) => v
            .parse()
            .map_err(|_| ApiError::bad_request(format!("invalid version {v:?}"))),
    }
}

/// `filters=`: per key, the values asked for (any matches); keys all have to match.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Reads `{"key":{"value":true}}`, and the older `{"key":["value"]}`; refuses keys the
    /// route does not know with dockerd's message.
    pub fn parse(query: &Query, allowed: &[&str]) -> ApiResult<Filters> {
        let Some(raw) = query.get("filters").filter(|s| !s.is_empty()) else {
            return Ok(Filters::default());
        };
        let value: serde_json::Value = serde_json::from_str(raw)
            .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
        let serde_json::Value::Object(map) = value else {
            return Err(ApiError::bad_request("invalid filter: not a JSON object"));
        };
        let mut filters = BTreeMap::new();
        for (key, values) in map {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
            }
            let values: Vec<String> = match values {
                serde_json::Value::Object(m) => m
                    .into_iter()
                    .filter(|(_, on)| on.as_bool().unwrap_or(false))
                    .map(|(v, _)| v)
                    .collect(),
                serde_json::Value::Array(a) => a
                    .into_iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => return Err(ApiError::bad_request(format!("invalid filter '{key}'"))),
            };
            filters.insert(key, values);
        }
        Ok(Filters(filters))
    }

    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// True when the key is not filtered on, or when any of its values satisfies `f`.
    pub fn any(&self, key: &str, f: impl Fn(&str) -> bool) -> bool {
        let values = self.values(key);
        values.is_empty() || values.iter().any(|v| f(v))
    }

    /// `label=k` (present) and `label=k=v` (equal): every one has to match.
    pub fn labels(&self, key: &str, labels: &HashMap<String, String>) -> bool {
        self.values(key).iter().all(|f| match f.split_once('=') {
            Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
            None => labels.contains_key(f.as_str()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(filters: &str) -> Query {
        Query::from([("filters".to_string(), filters.to_string())])
    }

    #[test]
    fn reads_both_filter_forms_and_refuses_unknown_keys() {
        let f = Filters::parse(
            &query(r#"{"label":{"com.docker.stack.namespace=st":true},"name":{"web":true}}"#),
            &["label", "name"],
        )
        .expect("filters");
        assert_eq!(f.values("name"), ["web"]);
        let old = Filters::parse(&query(r#"{"label":["a=b"]}"#), &["label"]).expect("old form");
        assert_eq!(old.values("label"), ["a=b"]);
        let bad = Filters::parse(&query(r#"{"colour":{"red":true}}"#), &["label"])
            .expect_err("unknown key");
        assert_eq!(bad.message, "invalid filter 'colour'");
        assert_eq!(bad.status.as_u16(), 400);
        assert!(Filters::parse(&query("{not json"), &["label"]).is_err());
    }

    #[test]
    fn labels_all_match_and_values_of_a_key_any() {
        let f = Filters::parse(
            &query(r#"{"label":{"a":true,"b=2":true},"id":{"x":true,"y":true}}"#),
            &["label", "id"],
        )
        .expect("filters");
        let labels = HashMap::from([("a".to_string(), "1".to_string()), ("b".into(), "2".into())]);
        assert!(f.labels("label", &labels));
        let partial = HashMap::from([("a".to_string(), "1".to_string())]);
        assert!(!f.labels("label", &partial));
        assert!(f.any("id", |v| v == "y"));
        assert!(!f.any("id", |v| v == "z"));
        assert!(f.any("name", |_| false), "an absent key matches");
    }

    #[test]
    fn booleans_as_go_reads_them() {
        let q = Query::from([
            ("a".to_string(), "1".to_string()),
            ("b".into(), "true".into()),
            ("c".into(), "false".into()),
            ("d".into(), "0".into()),
        ]);
        assert!(flag(&q, "a") && flag(&q, "b"));
        assert!(!flag(&q, "c") && !flag(&q, "d") && !flag(&q, "e"));
    }
}
