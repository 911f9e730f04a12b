//! A history of store operations as a client saw them: when each was invoked, when (and how)
//! it completed. One JSON object per line, so a run's history can be kept and checked again.

use std::io::{BufRead, Write};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "lowercase")]
pub enum Call {
    Read { key: String },
    Write { key: String, value: String },
}

impl Call {
    pub fn key(&self) -> &str {
        match self {
            Call::Read { key } | Call::Write { key, .. } => key,
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    /// Acknowledged; a read's value (None: no such key).
    Ok { value: Option<String> },
    /// Refused: it certainly did not take effect.
    Failed,
    /// No answer: it may or may not have taken effect, at any time after its invocation.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// The client (one operation at a time each).
    pub process: u32,
    pub call: Call,
    /// Nanoseconds since the run began.
    pub invoked_ns: u64,
    /// None while unknown: it may still take effect.
    pub completed_ns: Option<u64>,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl Operation {
    pub fn is_read(&self) -> bool {
        matches!(self.call, Call::Read { .. })
    }

    /// The value a write wrote or a read returned.
    pub fn value(&self) -> Option<&str> {
        match (&self.call, &self.outcome) {
            (Call::Write { value, .. }, _) => Some(value),
            (Call::Read { .. }, Outcome::Ok { value }) => value.as_deref(),
            _ => None,
        }
    }
}

pub fn write_jsonl(ops: &[Operation], mut out: impl Write) -> anyhow::Result<()> {
    for op in ops {
        serde_json::to_writer(&mut out, op)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads a history; a bad line is reported by its number.
pub fn read_jsonl(input: impl BufRead) -> anyhow::Result<Vec<Operation>> {
    let mut ops = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let op = serde_json::from_str(&line)
            .with_context(|| format!("line {}: not an operation", index + 1))?;
        ops.push(op);
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_history_survives_its_file_and_a_bad_line_is_named() {
        let ops = vec![
            Operation {
                process: 1,
                call: Call::Write {
                    key: "k".into(),
                    value: "v".into(),
                },
                invoked_ns: 5,
                completed_ns: None,
                outcome: Outcome::Unknown,
            },
            Operation {
                process: 2,
                call: Call::Read { key: "k".into() },
                invoked_ns: 6,
                completed_ns: Some(9),
                outcome: Outcome::Ok { value: None },
            },
        ];
        let mut file = Vec::new();
        write_jsonl(&ops, &mut file).unwrap();
        assert_eq!(read_jsonl(&file[..]).unwrap(), ops);

        file.extend_from_slice(b"{\"process\": 3}\n");
        let error = read_jsonl(&file[..]).unwrap_err();
        assert!(format!("{error:#}").starts_with("line 3:"), "{error:#}");
    }
}
