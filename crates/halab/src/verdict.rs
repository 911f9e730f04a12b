//! The checks of a history: per key, every read returns a value some write wrote; the final
//! read after the run holds the last acknowledged write; and the whole key's history is
//! linearizable. A failing key's history is shrunk to a small one that still fails, and named
//! by what it shows (a stale read, a lost write).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::history::{Operation, Outcome};
use crate::linearizable::{Step, linearizable};

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "anomaly", rename_all = "kebab-case")]
pub enum Anomaly {
    /// A read returned a value no write of that key ever wrote.
    ValueFromNowhere { key: String, read: Operation },
    /// The read after the run did not see an acknowledged write, nor anything after it.
    LostWrite {
        key: String,
        write: Operation,
        final_read: Operation,
    },
    /// No order of the key's operations explains what the reads saw; `history` is a smallest
    /// part of it found that still fails, `stale_read` whether it holds a read of a value
    /// overwritten before the read began (what a fenced primary would serve).
    NotLinearizable {
        key: String,
        stale_read: bool,
        history: Vec<Operation>,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub operations: usize,
    pub keys: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    pub anomalies: Vec<Anomaly>,
    pub check_ms: u64,
}

impl Report {
    pub fn valid(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// How long shrinking one failing key may take: the failure is certain before it starts.
const SHRINK_BUDGET: Duration = Duration::from_secs(10);

pub fn check(history: &[Operation]) -> Report {
    let began = Instant::now();
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.call.key()).or_default().push(op);
    }
    let mut anomalies = Vec::new();
    for (key, ops) in &by_key {
        anomalies.extend(values_from_nowhere(key, ops));
        anomalies.extend(lost_write(key, ops));
        if !linearizable(&steps(ops)) {
            let history = shrink(ops);
            anomalies.push(Anomaly::NotLinearizable {
                key: key.to_string(),
                stale_read: holds_stale_read(&history),
                history: history.into_iter().cloned().collect(),
            });
        }
    }
    let count = |f: fn(&Outcome) -> bool| history.iter().filter(|op| f(&op.outcome)).count();
    Report {
        operations: history.len(),
        keys: by_key.len(),
        ok: count(|o| matches!(o, Outcome::Ok { .. })),
        failed: count(|o| matches!(o, Outcome::Failed)),
        unknown: count(|o| matches!(o, Outcome::Unknown)),
        anomalies,
        check_ms: began.elapsed().as_millis() as u64,
    }
}

/// The register steps of one key: refused operations never happened, and a read without an
/// answer says nothing.
fn steps<'a>(ops: &[&'a Operation]) -> Vec<Step> {
    let mut values: HashMap<&'a str, u32> = HashMap::new();
    let mut intern = |v: Option<&'a str>| match v {
        None => 0,
        Some(v) => {
            let next = values.len() as u32 + 1;
            *values.entry(v).or_insert(next)
        }
    };
    ops.iter()
        .filter(|op| match op.outcome {
            Outcome::Failed => false,
            Outcome::Unknown => !op.is_read(),
            Outcome::Ok { .. } => true,
        })
        .map(|op| Step {
            read: op.is_read(),
            value: intern(op.value()),
            invoked: op.invoked_ns,
            completed: op.completed_ns.unwrap_or(u64::MAX),
        })
        .collect()
}

fn is_acked_write(op: &Operation) -> bool {
    !op.is_read() && matches!(op.outcome, Outcome::Ok { .. })
}

fn values_from_nowhere(key: &str, ops: &[&Operation]) -> Vec<Anomaly> {
    ops.iter()
        .filter(|op| op.is_read())
        .filter(|read| {
            read.value().is_some_and(|v| {
                !ops.iter().any(|w| {
                    !w.is_read() && w.value() == Some(v) && !matches!(w.outcome, Outcome::Failed)
                })
            })
        })
        .map(|read| Anomaly::ValueFromNowhere {
            key: key.to_string(),
            read: (*read).clone(),
        })
        .collect()
}

/// The write that wrote `value` (None: the key's absence), if any.
fn writer_of<'a>(ops: &[&'a Operation], value: Option<&str>) -> Option<&'a Operation> {
    value.and_then(|v| {
        ops.iter()
            .copied()
            .find(|w| !w.is_read() && w.value() == Some(v))
    })
}

/// The final read: one invoked after every other operation of the key completed. It must see
/// the last acknowledged write or something after it: a write it returns is *overwritten* when
/// an acknowledged write began after it completed (or, for no value, when there was any).
fn lost_write(key: &str, ops: &[&Operation]) -> Option<Anomaly> {
    let (last, others) = ops.split_last()?;
    let all_done_before = others
        .iter()
        .all(|op| op.completed_ns.is_some_and(|c| c < last.invoked_ns));
    if !last.is_read() || !matches!(last.outcome, Outcome::Ok { .. }) || !all_done_before {
        return None;
    }
    let seen = writer_of(others, last.value());
    let overwritten_by = others
        .iter()
        .filter(|w| is_acked_write(w) && began_after(w, seen))
        .max_by_key(|w| w.completed_ns)?;
    Some(Anomaly::LostWrite {
        key: key.to_string(),
        write: (*overwritten_by).clone(),
        final_read: (*last).clone(),
    })
}

/// Whether a read returned a value that an acknowledged write had overwritten before the
/// read was invoked.
fn holds_stale_read(ops: &[&Operation]) -> bool {
    ops.iter()
        .filter(|r| r.is_read() && matches!(r.outcome, Outcome::Ok { .. }))
        .any(|read| {
            let seen = writer_of(ops, read.value());
            ops.iter().any(|w| {
                is_acked_write(w)
                    && began_after(w, seen)
                    && w.completed_ns.is_some_and(|c| c < read.invoked_ns)
            })
        })
}

/// Whether `w` began after the write `seen` completed: it overwrote it for certain. Every
/// write overwrites the key's absence (`seen` None); nothing certainly overwrites a write
/// whose outcome is unknown (it may take effect late).
fn began_after(w: &Operation, seen: Option<&Operation>) -> bool {
    match seen {
        None => true,
        Some(seen) => seen.completed_ns.is_some_and(|done| w.invoked_ns > done),
    }
}

/// Delta debugging: drop ever smaller runs of operations while the rest still fails. A write
/// whose value a remaining read returned stays: without it the read would fail for nothing.
fn shrink<'a>(ops: &[&'a Operation]) -> Vec<&'a Operation> {
    let deadline = Instant::now() + SHRINK_BUDGET;
    let keeps_writers = |candidate: &[&Operation]| {
        candidate.iter().filter(|r| r.is_read()).all(|read| {
            writer_of(ops, read.value())
                .is_none_or(|w| candidate.iter().any(|c| std::ptr::eq(*c, w)))
        })
    };
    let fails =
        |candidate: &[&Operation]| keeps_writers(candidate) && !linearizable(&steps(candidate));
    let mut current: Vec<&Operation> = ops.to_vec();
    let mut chunk = current.len() / 2;
    while chunk >= 1 && Instant::now() < deadline {
        let mut start = 0;
        while start < current.len() && Instant::now() < deadline {
            let end = (start + chunk).min(current.len());
            let candidate: Vec<&Operation> = current[..start]
                .iter()
                .chain(&current[end..])
                .copied()
                .collect();
            if fails(&candidate) {
                current = candidate;
            } else {
                start = end;
            }
        }
        chunk /= 2;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Call;

    fn op(process: u32, call: Call, span: (u64, Option<u64>), outcome: Outcome) -> Operation {
        Operation {
            process,
            call,
            invoked_ns: span.0,
            completed_ns: span.1,
            outcome,
        }
    }

    fn write(p: u32, value: &str, from: u64, to: u64) -> Operation {
        let call = Call::Write {
            key: "k".into(),
            value: value.into(),
        };
        op(p, call, (from, Some(to)), Outcome::Ok { value: None })
    }

    fn read(p: u32, value: Option<&str>, from: u64, to: u64) -> Operation {
        let call = Call::Read { key: "k".into() };
        let outcome = Outcome::Ok {
            value: value.map(str::to_string),
        };
        op(p, call, (from, Some(to)), outcome)
    }

    #[test]
    fn a_valid_history_passes() {
        let unknown = Operation {
            completed_ns: None,
            outcome: Outcome::Unknown,
            ..write(3, "c", 12, 0)
        };
        let refused = Operation {
            outcome: Outcome::Failed,
            ..write(4, "z", 1, 2)
        };
        let history = [
            read(1, None, 0, 1),
            write(1, "a", 2, 5),
            write(2, "b", 3, 8),
            read(1, Some("b"), 9, 10),
            unknown,
            refused,
            read(2, Some("c"), 20, 21),
        ];
        let report = check(&history);
        assert!(report.valid(), "{:?}", report.anomalies);
        assert_eq!((report.ok, report.failed, report.unknown), (5, 1, 1));
    }

    #[test]
    fn a_stale_read_after_a_failover_fails_and_is_named() {
        // The old primary, fenced but still answering, serves "a" after "b" was acknowledged.
        let mut history = vec![write(1, "a", 0, 1), write(1, "b", 2, 3)];
        for i in 0..20 {
            history.push(read(2, Some("b"), 10 + i * 2, 11 + i * 2));
        }
        history.push(read(3, Some("a"), 60, 61));
        history.push(write(1, "c", 70, 71));
        let report = check(&history);
        let [
            Anomaly::NotLinearizable {
                stale_read,
                history: smallest,
                ..
            },
        ] = &report.anomalies[..]
        else {
            panic!("one anomaly: {:?}", report.anomalies);
        };
        assert!(stale_read);
        // Shrunk to the two writes and the stale read: the reads of "b" and "c" are not needed.
        let values: Vec<_> = smallest
            .iter()
            .map(|op| (op.is_read(), op.value()))
            .collect();
        assert_eq!(
            values,
            [(false, Some("a")), (false, Some("b")), (true, Some("a"))]
        );
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let history = [
            write(1, "a", 0, 1),
            write(2, "b", 2, 3),
            read(1, Some("a"), 10, 11),
        ];
        let report = check(&history);
        assert!(
            report.anomalies.iter().any(|a| matches!(
                a,
                Anomaly::LostWrite { write, .. } if write.value() == Some("b")
            )),
            "{:?}",
            report.anomalies
        );
        // A key read back as missing after an acknowledged write: lost as well.
        let report = check(&[write(1, "a", 0, 1), read(1, None, 5, 6)]);
        assert!(matches!(report.anomalies[0], Anomaly::LostWrite { .. }));
    }

    #[test]
    fn a_value_from_nowhere_fails() {
        let refused = Operation {
            outcome: Outcome::Failed,
            ..write(1, "x", 0, 1)
        };
        let report = check(&[refused, read(2, Some("x"), 5, 6)]);
        assert!(
            matches!(&report.anomalies[0], Anomaly::ValueFromNowhere { read, .. } if read.value() == Some("x")),
            "{:?}",
            report.anomalies
        );
        assert!(!report.valid());
    }

    #[test]
    fn ten_thousand_operations_over_many_keys_check_in_seconds() {
        // Eight clients on 16 keys, each client's operations back to back, overlapping the
        // others'; every read returns the latest value written to its key before it began,
        // every write is acknowledged.
        let mut history = Vec::new();
        let mut latest: HashMap<String, String> = HashMap::new();
        for i in 0..10_000u64 {
            let key = format!("k{}", i % 16);
            let process = (i % 8) as u32;
            let at = i * 10;
            let call = if i % 3 == 0 {
                let value = format!("v{i}");
                latest.insert(key.clone(), value.clone());
                Call::Write { key, value }
            } else {
                Call::Read { key: key.clone() }
            };
            let outcome = Outcome::Ok {
                value: match &call {
                    Call::Read { key } => latest.get(key).cloned(),
                    Call::Write { .. } => None,
                },
            };
            history.push(op(process, call, (at, Some(at + 5)), outcome));
        }
        let report = check(&history);
        assert!(report.valid(), "{:?}", report.anomalies);
        assert_eq!(report.operations, 10_000);
        assert!(report.check_ms < 5_000, "{} ms", report.check_ms);
    }
}
