//! The hosts (and paths) egress refused lately for want of a route: what the agent could ask
//! a person for. Bounded, newest first; served on the admin port as `/refused`, where the
//! supervise sidecar reads it for `current_policy`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How many distinct hosts are remembered.
pub const CAPACITY: usize = 32;
/// How many distinct refused paths are remembered per host.
const PATHS: usize = 8;

/// One refused host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedHost {
    /// The host.
    pub host: String,
    /// Paths refused on a host that has routes, newest first (empty: the host has none).
    pub paths: Vec<String>,
    /// Refusals counted.
    pub count: u64,
    /// The last one, Unix seconds.
    pub last: u64,
}

/// The recorder.
#[derive(Debug, Default)]
pub struct RefusedHosts {
    hosts: Mutex<VecDeque<RefusedHost>>,
}

impl RefusedHosts {
    /// Records a refusal of `host` (at `path`, when the host has routes but not that path).
    pub fn record(&self, host: &str, path: Option<&str>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut hosts = self.hosts.lock().expect("refused hosts lock");
        let mut entry = match hosts.iter().position(|h| h.host == host) {
            Some(i) => hosts.remove(i).expect("position is in range"),
            None => RefusedHost {
                host: host.to_string(),
                paths: Vec::new(),
                count: 0,
                last: 0,
            },
        };
        entry.count += 1;
        entry.last = now;
        if let Some(p) = path {
            entry.paths.retain(|q| q != p);
            entry.paths.insert(0, p.to_string());
            entry.paths.truncate(PATHS);
        }
        hosts.push_front(entry);
        hosts.truncate(CAPACITY);
    }

    /// Newest first.
    pub fn snapshot(&self) -> Vec<RefusedHost> {
        self.hosts
            .lock()
            .expect("refused hosts lock")
            .iter()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_one_entry_per_host_and_bounded() {
        let r = RefusedHosts::default();
        r.record("a.example", None);
        r.record("b.example", Some("/x"));
        r.record("b.example", Some("/y"));
        r.record("a.example", None);
        let s = r.snapshot();
        assert_eq!(
            s.iter().map(|h| h.host.as_str()).collect::<Vec<_>>(),
            ["a.example", "b.example"]
        );
        assert_eq!(s[0].count, 2);
        assert_eq!(s[1].paths, ["/y", "/x"]);
        for i in 0..(CAPACITY + 5) {
            r.record(&format!("h{i}.example"), None);
        }
        let s = r.snapshot();
        assert_eq!(s.len(), CAPACITY);
        assert_eq!(s[0].host, format!("h{}.example", CAPACITY + 4));
        assert!(s.iter().all(|h| h.host != "a.example"), "the oldest went");
    }
}
