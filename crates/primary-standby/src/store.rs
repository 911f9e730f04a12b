//! The map itself and the table that makes a retried write apply once.

use std::collections::{BTreeMap, HashMap};

use proto::{ClientSession, Entry, Write};

/// The key-value map as of entry `applied`, and each client's last applied write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Store {
    map: BTreeMap<String, String>,
    sessions: HashMap<u64, ClientSession>,
    applied: u64,
    applied_epoch: u64,
}

impl Store {
    /// A store rebuilt from a snapshot taken at entry (`seq`, `epoch`).
    pub fn from_snapshot(
        seq: u64,
        epoch: u64,
        pairs: impl IntoIterator<Item = (String, String)>,
        sessions: impl IntoIterator<Item = ClientSession>,
    ) -> Store {
        Store {
            map: pairs.into_iter().collect(),
            sessions: sessions.into_iter().map(|s| (s.client, s)).collect(),
            applied: seq,
            applied_epoch: epoch,
        }
    }

    /// Applies the next entry. Entries come in log order, each once.
    pub fn apply(&mut self, entry: &Entry) {
        debug_assert_eq!(entry.seq, self.applied + 1, "entries apply in order");
        match &entry.write {
            Write::Set { key, value } => {
                self.map.insert(key.clone(), value.clone());
            }
            Write::Delete { key } => {
                self.map.remove(key);
            }
            Write::Update { pairs } => {
                for (key, value) in pairs {
                    self.map.insert(key.clone(), value.clone());
                }
            }
        }
        self.sessions.insert(
            entry.client,
            ClientSession {
                client: entry.client,
                request: entry.request,
                seq: entry.seq,
            },
        );
        self.applied = entry.seq;
        self.applied_epoch = entry.epoch;
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.map.get(key)
    }

    pub fn pairs(&self) -> impl Iterator<Item = (&String, &String)> {
        self.map.iter()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn applied(&self) -> u64 {
        self.applied
    }

    pub fn applied_epoch(&self) -> u64 {
        self.applied_epoch
    }

    pub fn session(&self, client: u64) -> Option<ClientSession> {
        self.sessions.get(&client).copied()
    }

    pub fn sessions(&self) -> impl Iterator<Item = &ClientSession> {
        self.sessions.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, client: u64, request: u64, write: Write) -> Entry {
        Entry {
            seq,
            epoch: 1,
            client,
            request,
            write,
        }
    }

    #[test]
    fn entries_set_delete_and_update_and_remember_the_client() {
        let mut store = Store::default();
        store.apply(&entry(
            1,
            7,
            1,
            Write::Set {
                key: "a".into(),
                value: "1".into(),
            },
        ));
        store.apply(&entry(
            2,
            7,
            2,
            Write::Update {
                pairs: vec![("b".into(), "2".into()), ("a".into(), "3".into())],
            },
        ));
        store.apply(&entry(3, 8, 1, Write::Delete { key: "b".into() }));
        assert_eq!(store.get("a").map(String::as_str), Some("3"));
        assert_eq!(store.get("b"), None);
        assert_eq!(store.applied(), 3);
        assert_eq!(store.session(7).map(|s| (s.request, s.seq)), Some((2, 2)));
        assert_eq!(store.session(8).map(|s| (s.request, s.seq)), Some((1, 3)));
    }
}
