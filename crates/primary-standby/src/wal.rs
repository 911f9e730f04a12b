//! The data dir: an append-only log of checksummed records, a snapshot, and the node's id.
//!
//! A record is `u32` length + `u32` CRC-32 (both big-endian) + the payload (an [`Entry`] as
//! proto encodes it). On start the log is read back: a record cut short at the end of the file
//! (a crash mid-write) is truncated away; a bad record with good data after it is corruption in
//! the middle, which stops the node with the record's number and offset — never skipped, since
//! what follows it could not be trusted to be the log.
//!
//! Compaction keeps the log short: the applied state is written as the snapshot
//! ([`write_snapshot`]), then the records it holds are cut off the front of the log
//! ([`Wal::cut_log`]: the rest is copied into a new log that is renamed into place). A crash in
//! between leaves the new snapshot and the old log, whose records up to the snapshot are
//! skipped on start.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

use proto::{ClientSession, Entry, StoreNodeId, decode_value, encode_value};
use serde::{Deserialize, Serialize};

use crate::store::Store;

const LOG: &str = "log";
const SNAPSHOT: &str = "snapshot";
const ID: &str = "node.id";
const RECORD_HEADER: usize = 8;
/// No record is larger: a length above it is damage, not data.
const MAX_RECORD: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "{path}: record {record} at byte {offset} is corrupt ({why}) and the log goes on after it; \
         refusing to start on a damaged log. Move the data dir aside: the node then starts empty \
         and copies the primary's state"
    )]
    Corrupt {
        path: PathBuf,
        record: u64,
        offset: u64,
        why: String,
    },
    #[error("{path}: entry {found} follows entry {previous}: the log has a gap")]
    Gap {
        path: PathBuf,
        previous: u64,
        found: u64,
    },
    #[error("{path} belongs to node {saved}, not {id}: give each node its own --data-dir")]
    WrongNode {
        path: PathBuf,
        saved: StoreNodeId,
        id: StoreNodeId,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What is on disk: the snapshot's store and the log entries after it.
#[derive(Debug, Default)]
pub struct Recovered {
    pub store: Store,
    pub entries: Vec<Entry>,
    /// Bytes of a torn last record cut off the log.
    pub truncated_bytes: u64,
    /// The data dir is new (or was emptied): it holds nothing this node ever acknowledged.
    pub fresh: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct SnapshotFile {
    seq: u64,
    epoch: u64,
    pairs: Vec<(String, String)>,
    sessions: Vec<ClientSession>,
}

/// The open data dir. Appends go to the end of the log; [`Wal::sync`] makes them durable.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    log: File,
    /// Each record in the log: its entry's seq and where it starts (compaction cuts at one).
    records: Vec<(u64, u64)>,
    /// The log's length in bytes.
    len: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    pub records_dropped: usize,
    pub bytes_dropped: u64,
}

impl Wal {
    /// Opens (creating) `dir` for node `id` and reads back what it holds.
    pub fn open(dir: &Path, id: StoreNodeId) -> Result<(Wal, Recovered), WalError> {
        fs::create_dir_all(dir).map_err(io_at(dir))?;
        let fresh = check_id(dir, id)?;
        let mut recovered = Recovered {
            store: read_snapshot(dir)?,
            fresh,
            ..Recovered::default()
        };
        let log_path = dir.join(LOG);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(io_at(&log_path))?;
        let mut bytes = Vec::new();
        log.read_to_end(&mut bytes).map_err(io_at(&log_path))?;
        let (records, good_len) = read_records(&bytes, &log_path)?;
        let mut index = Vec::with_capacity(records.len());
        if good_len < bytes.len() {
            recovered.truncated_bytes = (bytes.len() - good_len) as u64;
            log.set_len(good_len as u64).map_err(io_at(&log_path))?;
            log.sync_all().map_err(io_at(&log_path))?;
        }
        let mut previous = recovered.store.applied();
        for (number, (offset, payload)) in records.into_iter().enumerate() {
            let entry: Entry = decode_value(payload).map_err(|e| WalError::Corrupt {
                path: log_path.clone(),
                record: number as u64,
                offset: offset as u64,
                why: format!("checksum good but the entry does not decode: {e}"),
            })?;
            index.push((entry.seq, offset as u64));
            if entry.seq <= previous && recovered.entries.is_empty() {
                // Written before the snapshot was taken: already in it.
                continue;
            }
            if entry.seq != previous + 1 {
                return Err(WalError::Gap {
                    path: log_path,
                    previous,
                    found: entry.seq,
                });
            }
            previous = entry.seq;
            recovered.entries.push(entry);
        }
        Ok((
            Wal {
                dir: dir.to_path_buf(),
                log,
                records: index,
                len: good_len as u64,
            },
            recovered,
        ))
    }

    /// Appends entries to the log (buffered by the OS until [`Wal::sync`]).
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        let mut buf = Vec::with_capacity(entries.len() * 64);
        let mut starts = Vec::with_capacity(entries.len());
        for entry in entries {
            let payload = encode_value(entry).map_err(|e| WalError::Io {
                path: self.log_path(),
                source: io::Error::other(e),
            })?;
            starts.push((entry.seq, self.len + buf.len() as u64));
            push_record(&mut buf, &payload);
        }
        let path = self.log_path();
        self.log.write_all(&buf).map_err(io_at(&path))?;
        self.records.extend(starts);
        self.len += buf.len() as u64;
        Ok(())
    }

    /// Everything appended so far is on disk when this returns.
    pub fn sync(&mut self) -> Result<(), WalError> {
        let path = self.log_path();
        self.log.sync_data().map_err(io_at(&path))
    }

    /// Replaces the whole state with `store` (a snapshot from the primary) and empties the log:
    /// the snapshot is written aside, synced and renamed into place before the log is cut, so
    /// a crash in between leaves either the old state or the new one.
    pub fn install_snapshot(&mut self, store: &Store) -> Result<(), WalError> {
        write_snapshot(&self.dir, store)?;
        let path = self.log_path();
        self.log.set_len(0).map_err(io_at(&path))?;
        self.records.clear();
        self.len = 0;
        self.log.sync_all().map_err(io_at(&path))
    }

    /// Cuts the records up to entry `seq` off the log, once a snapshot holding them is on
    /// disk ([`write_snapshot`]): the records after it are copied into a new log, which is
    /// synced and renamed into place. Everything appended is durable when this returns.
    pub fn cut_log(&mut self, seq: u64) -> Result<Compacted, WalError> {
        let dropped = self.records.iter().take_while(|(s, _)| *s <= seq).count();
        let cut = self.records.get(dropped).map_or(self.len, |(_, at)| *at);
        let path = self.log_path();
        let mut rest = Vec::with_capacity((self.len - cut) as usize);
        self.log
            .seek(SeekFrom::Start(cut))
            .and_then(|_| self.log.read_to_end(&mut rest))
            .map_err(io_at(&path))?;
        write_atomically(&self.dir, LOG, &rest)?;
        self.log = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_at(&path))?;
        self.records.drain(..dropped);
        for (_, at) in &mut self.records {
            *at -= cut;
        }
        self.len -= cut;
        Ok(Compacted {
            records_dropped: dropped,
            bytes_dropped: cut,
        })
    }

    /// Marks a new data dir as node `id`'s (see `check_id`).
    pub fn mark(&self, id: StoreNodeId) -> Result<(), WalError> {
        write_atomically(&self.dir, ID, format!("{id}\n").as_bytes())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join(LOG)
    }
}

/// Writes `store` as the data dir's snapshot (aside, synced, renamed into place); returns its
/// size. A compaction calls it from a thread of its own, so the log goes on being written
/// meanwhile, and then [`Wal::cut_log`].
pub fn write_snapshot(dir: &Path, store: &Store) -> Result<u64, WalError> {
    let snapshot = SnapshotFile {
        seq: store.applied(),
        epoch: store.applied_epoch(),
        pairs: store.pairs().map(|(k, v)| (k.clone(), v.clone())).collect(),
        sessions: store.sessions().copied().collect(),
    };
    let payload = encode_value(&snapshot).map_err(|e| WalError::Io {
        path: dir.join(SNAPSHOT),
        source: io::Error::other(e),
    })?;
    let mut record = Vec::with_capacity(payload.len() + RECORD_HEADER);
    push_record(&mut record, &payload);
    write_atomically(dir, SNAPSHOT, &record)?;
    Ok(record.len() as u64)
}

/// Appends one record (`len + CRC-32 + payload`) to `buf`.
fn push_record(buf: &mut Vec<u8>, payload: &[u8]) {
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    buf.extend_from_slice(payload);
}

/// Splits `bytes` into records (offset, payload); returns them and the length of the good
/// prefix. A bad record that reaches the end of the file is a torn write (the caller truncates it); one with
/// data after it is corruption.
type Records<'a> = Vec<(usize, &'a [u8])>;

fn read_records<'a>(bytes: &'a [u8], path: &Path) -> Result<(Records<'a>, usize), WalError> {
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let corrupt = |why: String| WalError::Corrupt {
            path: path.to_path_buf(),
            record: records.len() as u64,
            offset: offset as u64,
            why,
        };
        if rest.len() < RECORD_HEADER {
            break; // torn header
        }
        let len = u32::from_be_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_be_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_RECORD {
            return Err(corrupt(format!("a length of {len} bytes")));
        }
        let end = RECORD_HEADER + len;
        if rest.len() < end {
            break; // torn body
        }
        let payload = &rest[RECORD_HEADER..end];
        if crc32fast::hash(payload) != crc {
            if rest.len() == end {
                break; // the last record, written only in part
            }
            return Err(corrupt("checksum mismatch".into()));
        }
        records.push((offset, payload));
        offset += end;
    }
    Ok((records, offset))
}

fn read_snapshot(dir: &Path) -> Result<Store, WalError> {
    let path = dir.join(SNAPSHOT);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Store::default()),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let corrupt = |why: String| WalError::Corrupt {
        path: path.clone(),
        record: 0,
        offset: 0,
        why,
    };
    let (records, good) = read_records(&bytes, &path)?;
    // The snapshot is renamed into place whole: anything short of one good record is damage.
    let [(_, payload)] = records.as_slice() else {
        return Err(corrupt(format!("{} records", records.len())));
    };
    if good != bytes.len() {
        return Err(corrupt("bytes after the snapshot record".into()));
    }
    let snapshot: SnapshotFile = decode_value(payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(Store::from_snapshot(
        snapshot.seq,
        snapshot.epoch,
        snapshot.pairs,
        snapshot.sessions,
    ))
}

/// The data dir remembers whose it is: a dir mounted on the wrong node would otherwise pass
/// another node's log off as this one's. True if the dir has no id yet: it is new, and holds
/// nothing the node acknowledged (the id is written only once the witness does not count the
/// node for more than this dir holds: [`Wal::mark`]).
fn check_id(dir: &Path, id: StoreNodeId) -> Result<bool, WalError> {
    let path = dir.join(ID);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let saved = text
                .trim()
                .parse::<StoreNodeId>()
                .map_err(|e| WalError::Corrupt {
                    path: path.clone(),
                    record: 0,
                    offset: 0,
                    why: format!("not a node id: {e}"),
                })?;
            if saved != id {
                return Err(WalError::WrongNode { path, saved, id });
            }
            Ok(false)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// Temp file + fsync + rename + directory fsync.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), WalError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let target = dir.join(name);
    let mut file = File::create(&tmp).map_err(io_at(&tmp))?;
    file.write_all(bytes).map_err(io_at(&tmp))?;
    file.sync_all().map_err(io_at(&tmp))?;
    fs::rename(&tmp, &target).map_err(io_at(&target))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_at(dir))
}

#[cfg(test)]
mod tests {
    use proto::Write;

    use super::*;

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            epoch: 1,
            client: 9,
            request: seq,
            write: Write::Set {
                key: format!("k{seq}"),
                value: "v".repeat(seq as usize),
            },
        }
    }

    fn write_log(dir: &Path, entries: &[Entry]) {
        let (mut wal, _) = Wal::open(dir, 1).unwrap();
        wal.mark(1).unwrap();
        wal.append(entries).unwrap();
        wal.sync().unwrap();
    }

    #[test]
    fn entries_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Wal::open(dir.path(), 1).unwrap().1.fresh);
        assert!(
            Wal::open(dir.path(), 1).unwrap().1.fresh,
            "new until marked"
        );
        write_log(dir.path(), &[entry(1), entry(2)]);
        write_log(dir.path(), &[entry(3)]);
        let (_, recovered) = Wal::open(dir.path(), 1).unwrap();
        assert!(!recovered.fresh);
        assert_eq!(recovered.entries, [entry(1), entry(2), entry(3)]);
        assert_eq!(recovered.truncated_bytes, 0);
    }

    #[test]
    fn a_torn_last_record_is_truncated_and_appends_go_on_after_it() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[entry(1), entry(2)]);
        let log = dir.path().join(LOG);
        let full = fs::metadata(&log).unwrap().len();
        for cut in [1, 5, 9, 12] {
            let copy = tempfile::tempdir().unwrap();
            fs::copy(dir.path().join(ID), copy.path().join(ID)).unwrap();
            let bytes = fs::read(&log).unwrap();
            fs::write(copy.path().join(LOG), &bytes[..(full - cut) as usize]).unwrap();
            let (mut wal, recovered) = Wal::open(copy.path(), 1).unwrap();
            assert_eq!(recovered.entries, [entry(1)], "cut {cut}");
            assert!(recovered.truncated_bytes > 0);
            wal.append(&[entry(2)]).unwrap();
            wal.sync().unwrap();
            drop(wal);
            let (_, again) = Wal::open(copy.path(), 1).unwrap();
            assert_eq!(again.entries, [entry(1), entry(2)]);
        }
        // A last record whose bytes are all there but wrong: torn as well.
        let mut bytes = fs::read(&log).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&log, &bytes).unwrap();
        let (_, recovered) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(recovered.entries, [entry(1)]);
    }

    #[test]
    fn a_corrupt_record_in_the_middle_stops_the_node_with_its_position() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[entry(1), entry(2), entry(3)]);
        let log = dir.path().join(LOG);
        let mut bytes = fs::read(&log).unwrap();
        bytes[RECORD_HEADER + 2] ^= 0x55; // inside record 0's payload
        fs::write(&log, &bytes).unwrap();
        let err = Wal::open(dir.path(), 1).unwrap_err().to_string();
        assert!(
            err.contains("record 0 at byte 0 is corrupt (checksum mismatch)"),
            "{err}"
        );
        assert!(err.contains("refusing to start"), "{err}");
        // Nothing was cut: the damaged log is left for the operator to look at.
        assert_eq!(fs::read(&log).unwrap(), bytes);
    }

    #[test]
    fn a_snapshot_replaces_the_log_and_later_entries_follow_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1).unwrap();
        wal.append(&[entry(1), entry(2)]).unwrap();
        let mut store = Store::default();
        store.apply(&entry(1));
        store.apply(&entry(2));
        wal.install_snapshot(&store).unwrap();
        wal.append(&[entry(3)]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        let (_, recovered) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(recovered.store, store);
        assert_eq!(recovered.entries, [entry(3)]);
    }

    #[test]
    fn compaction_cuts_the_snapshotted_records_off_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1).unwrap();
        let entries: Vec<Entry> = (1..=5).map(entry).collect();
        wal.append(&entries).unwrap();
        let mut store = Store::default();
        for e in &entries[..3] {
            store.apply(e);
        }
        let before = fs::read(dir.path().join(LOG)).unwrap();
        write_snapshot(dir.path(), &store).unwrap();
        let compacted = wal.cut_log(store.applied()).unwrap();
        assert_eq!(compacted.records_dropped, 3);
        let after = fs::read(dir.path().join(LOG)).unwrap();
        assert_eq!(after, before[compacted.bytes_dropped as usize..]);
        wal.append(&[entry(6)]).unwrap();
        wal.sync().unwrap();
        let (mut wal, recovered) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(recovered.store, store);
        assert_eq!(recovered.entries, [entry(4), entry(5), entry(6)]);
        // Compacting again (the index was rebuilt on open) leaves only what follows.
        store.apply(&entry(4));
        store.apply(&entry(5));
        write_snapshot(dir.path(), &store).unwrap();
        assert_eq!(wal.cut_log(store.applied()).unwrap().records_dropped, 2);
        drop(wal);
        let (_, recovered) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(recovered.entries, [entry(6)]);
    }

    #[test]
    fn a_crash_between_the_snapshot_and_the_log_cut_skips_what_the_snapshot_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1).unwrap();
        wal.append(&[entry(1), entry(2), entry(3)]).unwrap();
        wal.sync().unwrap();
        let old_log = fs::read(dir.path().join(LOG)).unwrap();
        let mut store = Store::default();
        store.apply(&entry(1));
        store.apply(&entry(2));
        write_snapshot(dir.path(), &store).unwrap();
        wal.cut_log(store.applied()).unwrap();
        drop(wal);
        fs::write(dir.path().join(LOG), old_log).unwrap();
        let (_, recovered) = Wal::open(dir.path(), 1).unwrap();
        assert_eq!(recovered.store, store);
        assert_eq!(recovered.entries, [entry(3)]);
    }

    #[test]
    fn a_full_disk_is_an_error_naming_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut wal, _) = Wal::open(dir.path(), 1).unwrap();
        // /dev/full answers every write with ENOSPC, as a full volume does.
        wal.log = OpenOptions::new().write(true).open("/dev/full").unwrap();
        let err = wal.append(&[entry(1)]).unwrap_err().to_string();
        assert!(err.contains("/log: No space left on device"), "{err}");
    }

    #[test]
    fn a_data_dir_of_another_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_log(dir.path(), &[entry(1)]);
        let err = Wal::open(dir.path(), 2).unwrap_err().to_string();
        assert!(err.contains("belongs to node 1, not 2"), "{err}");
    }

    #[test]
    fn an_unwritable_data_dir_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"x").unwrap();
        let err = Wal::open(&file.join("data"), 1).unwrap_err().to_string();
        assert!(err.contains("not-a-dir/data"), "{err}");
    }
}
