//! The node's state file: what Raft persists (term, vote, the agreed membership) plus the
//! node's id, so that a restarted node neither votes twice in a term nor forgets the
//! membership its majorities are counted over, and keeps its id when its address changes.
//!
//! A few `key=value` lines, readable with `cat`. Written whole to a temporary file, fsync'd,
//! renamed over the old one and the directory fsync'd: a crash leaves the old state or the
//! new one, never half of either.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use proto::NodeId;

use crate::node::{AgreedView, Durable};

/// A node's id and durable state, as written to its state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    pub id: NodeId,
    pub durable: Durable,
}

/// The state file of one node; remembers what it last wrote so unchanged state is not
/// written again.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    written: Option<Saved>,
}

impl StateFile {
    /// Opens `path`, reading what an earlier run saved there (`None` for a first start).
    pub fn open(path: &Path) -> anyhow::Result<(StateFile, Option<Saved>)> {
        let saved = match fs::read_to_string(path) {
            Ok(text) => {
                Some(parse(&text).with_context(|| format!("state file {}", path.display()))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let file = StateFile {
            path: path.to_path_buf(),
            written: saved.clone(),
        };
        Ok((file, saved))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `saved` durably unless it is what the file already holds.
    pub fn save(&mut self, saved: &Saved) -> anyhow::Result<()> {
        if self.written.as_ref() == Some(saved) {
            return Ok(());
        }
        write_atomically(&self.path, &render(saved))
            .with_context(|| format!("cannot write the state file {}", self.path.display()))?;
        self.written = Some(saved.clone());
        Ok(())
    }
}

fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = dir.join(name);
    let mut file = File::create(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is.
    File::open(dir)?.sync_all()
}

fn render(saved: &Saved) -> String {
    let Durable { term, voted, view } = &saved.durable;
    let mut text = format!(
        "# halab election node state: written by the node on every change; delete it only\n\
         # together with removing the node from the membership (leader-election remove-member)\n\
         id={}\nterm={term}\n",
        saved.id
    );
    if let Some((term, candidate)) = voted {
        text += &format!("voted={term} {candidate}\n");
    }
    if let Some(view) = view {
        let members: Vec<String> = view.membership.iter().map(|m| m.to_string()).collect();
        text += &format!(
            "view_term={}\nversion={}\nmembership={}\n",
            view.term,
            view.version,
            members.join(",")
        );
    }
    text
}

fn parse(text: &str) -> anyhow::Result<Saved> {
    let (mut id, mut term, mut voted) = (None, None, None);
    let (mut view_term, mut version, mut membership) = (None, None, None);
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            bail!("line {number}: expected key=value, got {line:?}");
        };
        let int = |v: &str| {
            v.trim()
                .parse::<u64>()
                .with_context(|| format!("line {number}: {key} is not a number: {v:?}"))
        };
        match key.trim() {
            "id" => id = Some(int(value)?),
            "term" => term = Some(int(value)?),
            "voted" => {
                let Some((t, c)) = value.trim().split_once(' ') else {
                    bail!("line {number}: voted needs a term and a node id, got {value:?}");
                };
                voted = Some((int(t)?, int(c)?));
            }
            "view_term" => view_term = Some(int(value)?),
            "version" => version = Some(int(value)?),
            "membership" => {
                let members = value
                    .split(',')
                    .filter(|m| !m.trim().is_empty())
                    .map(int)
                    .collect::<anyhow::Result<BTreeSet<NodeId>>>()?;
                membership = Some(members);
            }
            other => bail!("line {number}: unknown key {other:?}"),
        }
    }
    let view = match (view_term, version, membership) {
        (Some(term), Some(version), Some(membership)) if !membership.is_empty() => {
            Some(AgreedView {
                term,
                version,
                membership,
            })
        }
        (None, None, None) => None,
        _ => bail!("view_term, version and a non-empty membership go together"),
    };
    Ok(Saved {
        id: id.context("no id line")?,
        durable: Durable {
            term: term.context("no term line")?,
            voted,
            view,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn saved() -> Saved {
        Saved {
            id: 7,
            durable: Durable {
                term: 4,
                voted: Some((4, 9)),
                view: Some(AgreedView {
                    term: 3,
                    version: 12,
                    membership: [1, 7, 9].into(),
                }),
            },
        }
    }

    #[test]
    fn what_is_saved_is_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("election.state");
        let (mut file, before) = StateFile::open(&path).unwrap();
        assert_eq!(before, None, "a first start has no state");
        file.save(&saved()).unwrap();
        let (_, after) = StateFile::open(&path).unwrap();
        assert_eq!(after, Some(saved()));

        let fresh = Saved {
            id: 2,
            durable: Durable::default(),
        };
        file.save(&fresh).unwrap();
        assert_eq!(StateFile::open(&path).unwrap().1, Some(fresh));
        assert!(!dir.path().join("sub/election.state.tmp").exists());
    }

    #[test]
    fn a_bad_line_is_reported_by_its_number() {
        let text = render(&saved()).replace("term=4", "term=four");
        let error = format!("{:#}", parse(&text).unwrap_err());
        assert!(error.contains("line 4: term is not a number"), "{error}");

        let error = format!("{:#}", parse("id=1\nterm=2\nfoo\n").unwrap_err());
        assert!(error.contains("line 3: expected key=value"), "{error}");

        let error = format!("{:#}", parse("id=1\nterm=2\nversion=3\n").unwrap_err());
        assert!(error.contains("go together"), "{error}");
    }
}
