//! One module per command group.

pub mod cluster;
pub mod data;
pub mod lab;
pub mod network;
pub mod node;
pub mod service;
pub mod spec_flags;
pub mod stack;

use std::collections::HashMap;

/// A `label=KEY` or `label=KEY=VALUE` filter (`ls -f`) against an object's labels.
pub fn label_filter(labels: &HashMap<String, String>, value: &str) -> bool {
    match value.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(value),
    }
}
