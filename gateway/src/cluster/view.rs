//! The cluster as etcd shows it, for `tandem status` and `GET /v1/volumes` (`cluster`): the
//! registered nodes and whether their leases live, every coordinated volume's leader, epoch
//! and in-sync set, and, for the volumes this node leads, how far its standby is behind.
//!
//! The etcd agent refreshes it every round ([`ClusterCell::set`]); when etcd cannot be read
//! the last view stays, marked unreachable with its age, so an operator sees what the node
//! last knew and since when.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The cluster section of the status document.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDoc {
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// The key prefix.
    pub prefix: String,
    /// This node's id.
    pub node_id: String,
    /// The last round could read etcd.
    pub reachable: bool,
    /// How long ago etcd was last read successfully, milliseconds (none: never).
    pub read_ms_ago: Option<u64>,
    /// The lease TTL, seconds.
    pub lease_ttl_s: u64,
    /// How long this node may still serve as a primary without a renewal, milliseconds
    /// (none: it holds no confirmed lease; 0: it fenced itself).
    pub serve_left_ms: Option<u64>,
    /// Every node etcd knows of (registered, or named by a volume's keys).
    pub nodes: Vec<ClusterNode>,
    /// Every volume this node coordinates.
    pub volumes: Vec<ClusterVolume>,
}

/// A node as etcd shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Its id.
    pub node_id: String,
    /// Its replication listener, as it registered it.
    pub replication: Option<String>,
    /// Registered under a live lease (its key disappears when the lease ends).
    pub alive: bool,
}

/// A volume's keys in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterVolume {
    /// The volume's name.
    pub name: String,
    /// The node holding the leader key (none: no primary; a standby in sync may take it).
    pub leader: Option<String>,
    /// The epoch in etcd.
    pub epoch: u64,
    /// The nodes holding every acknowledged write.
    pub in_sync: Vec<String>,
    /// Records this node (the leader) wrote that its standby does not hold durably yet
    /// (none where this node does not lead).
    pub lag_records: Option<u64>,
}

/// Where the agent keeps the view between rounds.
#[derive(Debug, Default)]
pub struct ClusterCell {
    st: Mutex<Stored>,
}

#[derive(Debug, Default)]
struct Stored {
    doc: ClusterDoc,
    read_at: Option<Instant>,
    deadline: Option<Instant>,
}

impl ClusterCell {
    /// Stores a round's view: `read`: etcd was read now (the lists are new); otherwise only
    /// the reachability and the serving deadline change.
    pub fn set(&self, doc: ClusterDoc, read: bool, deadline: Option<Instant>) {
        let mut st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        if read {
            st.doc = doc;
            st.read_at = Some(Instant::now());
        } else {
            st.doc.reachable = false;
            st.doc.etcd = doc.etcd;
            st.doc.node_id = doc.node_id;
            st.doc.prefix = doc.prefix;
            st.doc.lease_ttl_s = doc.lease_ttl_s;
        }
        st.deadline = deadline;
    }

    /// The view now.
    pub fn get(&self) -> ClusterDoc {
        let st = self.st.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut d = st.doc.clone();
        d.read_ms_ago = st
            .read_at
            .map(|t| now.saturating_duration_since(t).as_millis() as u64);
        d.serve_left_ms = st
            .deadline
            .map(|t| t.saturating_duration_since(now).as_millis() as u64);
        d
    }
}

/// The lines `tandem status` prints about the cluster.
pub fn table(c: &ClusterDoc) -> String {
    let mut out = String::new();
    let read = match (c.reachable, c.read_ms_ago) {
        (true, _) => "reachable".to_string(),
        (false, Some(ms)) => format!(
            "UNREACHABLE (last read {:.1} s ago; what follows is what this node last knew)",
            ms as f64 / 1000.0
        ),
        (false, None) => "UNREACHABLE (never read)".to_string(),
    };
    let serve = match c.serve_left_ms {
        Some(0) => "lease lapsed: a primary here serves nothing".to_string(),
        Some(ms) => format!("a primary here may serve {:.1} s more", ms as f64 / 1000.0),
        None => "no lease".to_string(),
    };
    out.push_str(&format!(
        "cluster: etcd {} {}  prefix {}  this node {}  lease TTL {} s, {}\n",
        c.etcd.join(","),
        read,
        c.prefix,
        short(&c.node_id),
        c.lease_ttl_s,
        serve
    ));
    for n in &c.nodes {
        out.push_str(&format!(
            "  node {}  {}  replication {}{}\n",
            short(&n.node_id),
            if n.alive { "alive" } else { "DOWN (no lease)" },
            n.replication.as_deref().unwrap_or("-"),
            if n.node_id == c.node_id {
                "  (this node)"
            } else {
                ""
            }
        ));
    }
    for v in &c.volumes {
        let in_sync: Vec<&str> = v.in_sync.iter().map(|n| short(n)).collect();
        out.push_str(&format!(
            "  volume {}  primary {}  epoch {}  in sync [{}]{}\n",
            v.name,
            v.leader
                .as_deref()
                .map_or("NONE (no leader key)".to_string(), |l| short(l).to_string()),
            v.epoch,
            in_sync.join(", "),
            v.lag_records
                .map_or(String::new(), |l| format!("  standby lag {l} records"))
        ));
    }
    out
}

/// The first 8 hex digits of a node id (enough to tell nodes apart in a table).
fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_nodes_volumes_and_what_is_down() {
        let c = ClusterDoc {
            etcd: vec!["http://10.0.0.5:2379".into()],
            prefix: "/tandem".into(),
            node_id: "aaaaaaaa11".into(),
            reachable: true,
            read_ms_ago: Some(10),
            lease_ttl_s: 10,
            serve_left_ms: Some(7500),
            nodes: vec![
                ClusterNode {
                    node_id: "aaaaaaaa11".into(),
                    replication: Some("10.0.0.1:9750".into()),
                    alive: true,
                },
                ClusterNode {
                    node_id: "bbbbbbbb22".into(),
                    replication: None,
                    alive: false,
                },
            ],
            volumes: vec![ClusterVolume {
                name: "db".into(),
                leader: Some("aaaaaaaa11".into()),
                epoch: 4,
                in_sync: vec!["aaaaaaaa11".into()],
                lag_records: Some(12),
            }],
        };
        let t = table(&c);
        assert!(t.contains("reachable"), "{t}");
        assert!(t.contains("node aaaaaaaa  alive  replication 10.0.0.1:9750  (this node)"));
        assert!(t.contains("node bbbbbbbb  DOWN (no lease)"));
        assert!(t.contains(
            "volume db  primary aaaaaaaa  epoch 4  in sync [aaaaaaaa]  standby lag 12 records"
        ));
        assert!(t.contains("may serve 7.5 s more"));
        let cell = ClusterCell::default();
        cell.set(c.clone(), true, None);
        cell.set(ClusterDoc::default(), false, None);
        let g = cell.get();
        assert!(!g.reachable);
        assert_eq!(g.volumes, c.volumes, "the last view stays");
        assert!(table(&g).contains("UNREACHABLE"));
    }
}
