//! What a client may write: sizes checked before anything is logged, and seed 001's update file
//! (`key=value` lines) parsed as a whole, so that a bad line changes nothing.

use proto::Write;

/// Size limits on keys, values and updates. Every write is checked against them before the
/// primary logs it; the defaults keep the largest update well inside one 1 MiB frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_update_pairs: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: 256,
            max_value_bytes: 16 * 1024,
            max_update_pairs: 32,
        }
    }
}

impl Limits {
    /// Why `write` is refused, or Ok.
    pub fn check(&self, write: &Write) -> Result<(), String> {
        match write {
            Write::Set { key, value } => {
                self.check_key(key)?;
                self.check_value(key, value)
            }
            Write::Delete { key } => self.check_key(key),
            Write::Update { pairs } => {
                if pairs.is_empty() {
                    return Err("an update needs at least one key=value pair".into());
                }
                if pairs.len() > self.max_update_pairs {
                    return Err(format!(
                        "an update holds at most {} pairs (got {})",
                        self.max_update_pairs,
                        pairs.len()
                    ));
                }
                pairs.iter().try_for_each(|(key, value)| {
                    self.check_key(key)?;
                    self.check_value(key, value)
                })
            }
        }
    }

    pub fn check_key(&self, key: &str) -> Result<(), String> {
        if key.is_empty() {
            return Err("the key is empty".into());
        }
        if key.len() > self.max_key_bytes {
            return Err(format!(
                "key of {} bytes is over the limit of {} bytes",
                key.len(),
                self.max_key_bytes
            ));
        }
        Ok(())
    }

    fn check_value(&self, key: &str, value: &str) -> Result<(), String> {
        if value.len() > self.max_value_bytes {
            return Err(format!(
                "value of {key:?} has {} bytes, over the limit of {} bytes",
                value.len(),
                self.max_value_bytes
            ));
        }
        Ok(())
    }
}

/// Seed 001's update file: one `key=value` per line (the value is everything after the first
/// `=`); blank lines and lines starting with `#` are skipped. The first bad line is the error,
/// by number, and then nothing of the file is used.
pub fn parse_update(text: &str, limits: &Limits) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {number}: expected key=value, got {line:?}"));
        };
        let key = key.trim();
        limits
            .check_key(key)
            .and_then(|()| limits.check_value(key, value))
            .map_err(|reason| format!("line {number}: {reason}"))?;
        pairs.push((key.to_string(), value.to_string()));
    }
    let update = Write::Update { pairs };
    limits.check(&update)?;
    let Write::Update { pairs } = update else {
        unreachable!("built as an update just above")
    };
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_update_file_is_parsed_into_pairs() {
        let text = "id=999\r\n\n# a comment\nname=Paola\nurl=http://x/?a=b\n";
        let pairs = parse_update(text, &Limits::default()).unwrap();
        assert_eq!(
            pairs,
            [
                ("id".into(), "999".into()),
                ("name".into(), "Paola".into()),
                ("url".into(), "http://x/?a=b".into())
            ]
        );
    }

    #[test]
    fn a_bad_line_is_reported_by_number() {
        let limits = Limits::default();
        let err = parse_update("a=1\nb=2\nno equals sign\nc=3\n", &limits).unwrap_err();
        assert!(err.starts_with("line 3: expected key=value"), "{err}");
        let err = parse_update("a=1\n=2\n", &limits).unwrap_err();
        assert!(err.starts_with("line 2: the key is empty"), "{err}");
        let long = format!("a=1\nk={}\n", "v".repeat(limits.max_value_bytes + 1));
        assert!(
            parse_update(&long, &limits)
                .unwrap_err()
                .starts_with("line 2: value of \"k\"")
        );
    }

    #[test]
    fn an_empty_or_too_long_update_is_refused() {
        let limits = Limits {
            max_update_pairs: 2,
            ..Limits::default()
        };
        assert!(parse_update("# nothing\n", &limits).is_err());
        assert!(
            parse_update("a=1\nb=2\nc=3\n", &limits)
                .unwrap_err()
                .contains("at most 2")
        );
    }

    #[test]
    fn writes_past_the_limits_are_refused_with_the_reason() {
        let limits = Limits::default();
        let key = "k".repeat(limits.max_key_bytes + 1);
        let set = Write::Set {
            key,
            value: "v".into(),
        };
        assert!(
            limits
                .check(&set)
                .unwrap_err()
                .contains("over the limit of 256 bytes")
        );
        let ok = Write::Set {
            key: "k".into(),
            value: "v".repeat(limits.max_value_bytes),
        };
        assert_eq!(limits.check(&ok), Ok(()));
    }
}
