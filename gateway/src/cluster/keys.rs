//! The key layout under the prefix, and the values' encodings.
//!
//! - `<prefix>/nodes/<node id>`: the node's registration (JSON [`NodeRecord`]), under its lease;
//! - `<prefix>/volumes/<name>/leader`: the primary's node id, under the primary's lease;
//! - `<prefix>/volumes/<name>/epoch`: the current term, a decimal number;
//! - `<prefix>/volumes/<name>/in_sync`: the nodes holding every acknowledged write, a JSON
//!   array of node ids (sorted).

/// What a node registers about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeRecord {
    /// The node's id (32 hex digits).
    pub node_id: String,
    /// Its replication listener.
    pub replication: String,
}

/// A node's registration key.
pub fn node(prefix: &str, node_id: &str) -> String {
    format!("{prefix}/nodes/{node_id}")
}

/// The prefix of a volume's keys (with the trailing slash).
pub fn volume(prefix: &str, name: &str) -> String {
    format!("{prefix}/volumes/{name}/")
}

/// A volume's leader key.
pub fn leader(prefix: &str, name: &str) -> String {
    format!("{}leader", volume(prefix, name))
}

/// A volume's epoch key.
pub fn epoch(prefix: &str, name: &str) -> String {
    format!("{}epoch", volume(prefix, name))
}

/// A volume's in-sync set key.
pub fn in_sync(prefix: &str, name: &str) -> String {
    format!("{}in_sync", volume(prefix, name))
}

/// Parses an epoch value; anything else than a decimal number is refused (never guessed).
pub fn parse_epoch(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Parses an in-sync set; a malformed value is `None` (treated as naming nobody).
pub fn parse_in_sync(v: &[u8]) -> Option<Vec<String>> {
    serde_json::from_slice(v).ok()
}

/// Encodes an in-sync set (sorted, so equal sets compare equal).
pub fn encode_in_sync(set: &[String]) -> String {
    let mut s = set.to_vec();
    s.sort();
    s.dedup();
    serde_json::to_string(&s).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_values() {
        assert_eq!(leader("/t", "db"), "/t/volumes/db/leader");
        assert_eq!(epoch("/t", "db"), "/t/volumes/db/epoch");
        assert_eq!(node("/t", "ab"), "/t/nodes/ab");
        assert_eq!(parse_epoch(b"17"), Some(17));
        assert_eq!(parse_epoch(b"-1"), None);
        assert_eq!(parse_epoch(b"x"), None);
        let s = encode_in_sync(&["b".into(), "a".into(), "b".into()]);
        assert_eq!(s, r#"["a","b"]"#);
        assert_eq!(
            parse_in_sync(s.as_bytes()),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_in_sync(b"{"), None);
    }
}
