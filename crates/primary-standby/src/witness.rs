//! The witness: seed 003's "communications folder", made safe. A directory on a volume every
//! node mounts holds
//!
//! - `state.<version>`: the epoch, the primary (its id and addresses) and the in-sync standbys.
//!   Versions are never rewritten: a change creates the next version with a hard link, which
//!   fails if it exists, so of two nodes changing the same version exactly one wins
//!   (compare-and-swap without a lock that a paused process could hold forever);
//! - `slot.<id>`: the wall-clock millisecond at which node `id` last visited, renewed in place
//!   on every visit (the primary's lease is counted from it).
//!
//! A visit writes the visitor's slot *before* it reads the state. That order is what lets a
//! standby that promoted trust what it reads afterwards: an old primary that saw its own epoch
//! still current had already renewed its slot, so the new primary sees that renewal and waits
//! for the lease it grants to run out (see `node`).

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use proto::StoreNodeId;

/// Old versions kept for someone reading the history by hand.
const KEEP_VERSIONS: u64 = 16;

/// The `primary` of a record that names nobody: the primary's data dir was emptied, and it
/// resigned (see `rules::leave_witness`). Node ids start at 1.
pub const NOBODY: StoreNodeId = 0;

/// One version of the witness's record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WitnessState {
    pub version: u64,
    pub epoch: u64,
    pub primary: StoreNodeId,
    /// Where clients reach the primary.
    pub primary_addr: String,
    /// Where standbys replicate from it.
    pub primary_link: String,
    /// Standbys that hold every acknowledged write: only they may be promoted.
    pub in_sync: Vec<StoreNodeId>,
}

impl WitnessState {
    pub fn to_text(&self) -> String {
        let in_sync: Vec<String> = self.in_sync.iter().map(u64::to_string).collect();
        format!(
            "version={}\nepoch={}\nprimary={}\nprimary_addr={}\nprimary_link={}\nin_sync={}\n",
            self.version,
            self.epoch,
            self.primary,
            self.primary_addr,
            self.primary_link,
            in_sync.join(",")
        )
    }

    /// Parses [`WitnessState::to_text`]; a bad line is reported by number.
    pub fn parse(text: &str) -> Result<WitnessState, String> {
        let mut state = WitnessState::default();
        for (index, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("line {}: {why}: {line:?}", index + 1);
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| bad("expected key=value"))?;
            let number = || value.parse::<u64>().map_err(|_| bad("not a number"));
            match key {
                "version" => state.version = number()?,
                "epoch" => state.epoch = number()?,
                "primary" => state.primary = number()?,
                "primary_addr" => state.primary_addr = value.to_string(),
                "primary_link" => state.primary_link = value.to_string(),
                "in_sync" => {
                    state.in_sync = value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(|s| s.parse().map_err(|_| bad("not a list of node ids")))
                        .collect::<Result<_, _>>()?
                }
                _ => return Err(bad("unknown key")),
            }
        }
        Ok(state)
    }
}

/// What one visit saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visit {
    /// Wall-clock ms when the visit began: the visitor's slot holds this.
    pub started_ms: u64,
    /// The latest state (None: nobody has claimed the witness yet).
    pub state: Option<WitnessState>,
    /// Every node's slot, read after the state.
    pub slots: BTreeMap<StoreNodeId, u64>,
    /// The outcome of the change asked for, if one was.
    pub changed: Option<bool>,
}

/// A change: create version `expected + 1` holding `next`, if `expected` is still the latest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub expected: u64,
    pub next: WitnessState,
}

/// The witness directory.
#[derive(Debug, Clone)]
pub struct Witness {
    dir: PathBuf,
}

impl Witness {
    pub fn new(dir: impl Into<PathBuf>) -> Witness {
        Witness { dir: dir.into() }
    }

    /// Renews `me`'s slot (unless `renew` is false), reads the state, makes `change` if asked,
    /// and reads every slot.
    pub fn visit(
        &self,
        me: StoreNodeId,
        change: Option<&Change>,
        renew: bool,
    ) -> io::Result<Visit> {
        let started_ms = wall_ms();
        if renew {
            self.write_slot(me, started_ms)?;
        }
        let mut latest = self.latest()?;
        let changed = match change {
            None => None,
            Some(change) => {
                let current = latest.as_ref().map_or(0, |(v, _)| *v);
                let made = current == change.expected && self.create(change)?;
                if made {
                    latest = self.latest()?;
                }
                Some(made)
            }
        };
        let slots = self.slots()?;
        if let Some((version, _)) = &latest {
            self.prune(*version);
        }
        Ok(Visit {
            started_ms,
            state: latest.map(|(_, state)| state),
            slots,
            changed,
        })
    }

    fn write_slot(&self, me: StoreNodeId, ms: u64) -> io::Result<()> {
        // Overwritten in place, no rename and no fsync: a rename over a file makes ext4 flush
        // its data first (waiting behind every fsync of the logs: visits of 100+ ms were seen),
        // and slots are read by processes on this host through the page cache; a slot lost in
        // a host crash only delays a failover.
        use std::os::unix::fs::FileExt;
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.dir.join(format!("slot.{me}")))?;
        file.write_all_at(&slot_record(ms), 0)
    }

    /// The highest version and its state.
    fn latest(&self) -> io::Result<Option<(u64, WitnessState)>> {
        let Some(version) = self.versions()?.into_iter().max() else {
            return Ok(None);
        };
        let path = self.state_path(version);
        let text = fs::read_to_string(&path)?;
        let state = WitnessState::parse(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        })?;
        Ok(Some((version, state)))
    }

    fn versions(&self) -> io::Result<Vec<u64>> {
        let mut versions = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(v) = name.to_str().and_then(|n| n.strip_prefix("state.")) {
                if let Ok(v) = v.parse() {
                    versions.push(v);
                }
            }
        }
        Ok(versions)
    }

    /// Writes the next version aside, syncs it, and links it into place: the link fails if
    /// another node made that version first.
    fn create(&self, change: &Change) -> io::Result<bool> {
        let version = change.expected + 1;
        let next = WitnessState {
            version,
            ..change.next.clone()
        };
        let tmp = self
            .dir
            .join(format!(".state.{version}.{}.tmp", rand::random::<u64>()));
        let mut file = File::create(&tmp)?;
        file.write_all(next.to_text().as_bytes())?;
        file.sync_all()?;
        let linked = fs::hard_link(&tmp, self.state_path(version));
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                File::open(&self.dir)?.sync_all()?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn slots(&self) -> io::Result<BTreeMap<StoreNodeId, u64>> {
        let mut slots = BTreeMap::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_prefix("slot.")) else {
                continue;
            };
            let Ok(id) = id.parse() else { continue };
            // A slot removed between listing and reading is simply not there.
            if let Ok(bytes) = fs::read(entry.path()) {
                slots.insert(id, read_slot(&bytes, wall_ms()));
            }
        }
        Ok(slots)
    }

    fn prune(&self, latest: u64) {
        let Ok(versions) = self.versions() else {
            return;
        };
        for version in versions {
            if version + KEEP_VERSIONS < latest {
                let _ = fs::remove_file(self.state_path(version));
            }
        }
    }

    fn state_path(&self, version: u64) -> PathBuf {
        self.dir.join(format!("state.{version:020}"))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A slot holds its time twice, fixed width, so that a read racing a write is recognised.
const SLOT_LEN: usize = 42;

fn slot_record(ms: u64) -> [u8; SLOT_LEN] {
    let text = format!("{ms:020} {ms:020}\n");
    text.as_bytes()
        .try_into()
        .expect("two 20-digit numbers, a space and a newline")
}

/// The time a slot holds. One that does not read back whole (a write under way, damage) counts
/// as renewed just now (`now_ms`): that can delay a failover by a visit, but never makes a live
/// primary look dead.
fn read_slot(bytes: &[u8], now_ms: u64) -> u64 {
    let text = std::str::from_utf8(bytes).unwrap_or("");
    let mut numbers = text.split_whitespace().map(str::parse::<u64>);
    match (numbers.next(), numbers.next(), numbers.next()) {
        (Some(Ok(a)), Some(Ok(b)), None) if a == b && bytes.len() == SLOT_LEN => a,
        _ => now_ms,
    }
}

pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(epoch: u64, primary: StoreNodeId, in_sync: &[StoreNodeId]) -> WitnessState {
        WitnessState {
            version: 0,
            epoch,
            primary,
            primary_addr: format!("store{primary}:7300"),
            primary_link: format!("store{primary}-link:7301"),
            in_sync: in_sync.to_vec(),
        }
    }

    #[test]
    fn the_state_reads_back_and_a_bad_line_is_named() {
        let s = WitnessState {
            version: 4,
            ..state(3, 2, &[1, 3])
        };
        assert_eq!(WitnessState::parse(&s.to_text()), Ok(s));
        let err = WitnessState::parse("version=1\nepoch=x\n").unwrap_err();
        assert!(err.starts_with("line 2: not a number"), "{err}");
    }

    #[test]
    fn of_two_changes_to_the_same_version_exactly_one_wins() {
        let dir = tempfile::tempdir().unwrap();
        let witness = Witness::new(dir.path());
        let first = witness.visit(1, None, true).unwrap();
        assert_eq!(first.state, None);
        let claim = |id| Change {
            expected: 0,
            next: state(1, id, &[]),
        };
        let one = witness.visit(1, Some(&claim(1)), true).unwrap();
        let two = witness.visit(2, Some(&claim(2)), true).unwrap();
        assert_eq!(one.changed, Some(true));
        assert_eq!(two.changed, Some(false));
        let current = two.state.unwrap();
        assert_eq!((current.version, current.primary), (1, 1));
        assert_eq!(two.slots.keys().copied().collect::<Vec<_>>(), [1, 2]);
        // A change made against the version it read goes through.
        let add = Change {
            expected: 1,
            next: state(1, 1, &[2]),
        };
        let after = witness.visit(1, Some(&add), true).unwrap();
        assert_eq!(after.changed, Some(true));
        assert_eq!(after.state.unwrap().in_sync, [2]);
    }

    #[test]
    fn a_visit_renews_the_visitors_slot_first() {
        let dir = tempfile::tempdir().unwrap();
        let witness = Witness::new(dir.path());
        let visit = witness.visit(7, None, true).unwrap();
        assert_eq!(visit.slots.get(&7), Some(&visit.started_ms));
    }

    #[test]
    fn a_slot_that_does_not_read_back_whole_counts_as_fresh() {
        let record = slot_record(1_234);
        assert_eq!(read_slot(&record, 9_999), 1_234);
        let mut torn = record;
        torn[5] = b'7';
        assert_eq!(read_slot(&torn, 9_999), 9_999);
        assert_eq!(read_slot(b"", 9_999), 9_999);
        assert_eq!(read_slot(&record[..30], 9_999), 9_999);
    }

    #[test]
    fn old_versions_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let witness = Witness::new(dir.path());
        for version in 0..40 {
            let change = Change {
                expected: version,
                next: state(version + 1, 1, &[]),
            };
            assert_eq!(
                witness.visit(1, Some(&change), true).unwrap().changed,
                Some(true)
            );
        }
        let versions = witness.versions().unwrap();
        assert!(versions.len() <= KEEP_VERSIONS as usize + 1, "{versions:?}");
        assert_eq!(versions.iter().max(), Some(&40));
    }
}
