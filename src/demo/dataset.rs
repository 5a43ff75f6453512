//! Reading calls from a file in the SF dataset format: one JSON array of objects or
//! NDJSON, optionally bzip2-compressed. The file is streamed once into a compact spill
//! file plus a small in-memory index, so a replay can follow event-time order (the
//! dataset is newest first) without holding the records in memory.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde_json::{Map, Value};

use crate::source::SourceError;

/// Order in which records are replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayOrder {
    /// Oldest event first, as a live feed would deliver them.
    EventTime,
    /// As they stand in the file.
    File,
}

/// What the replay needs of each record: where its other fields are, and its id, key
/// and event time.
#[derive(Debug)]
struct Entry {
    time: Option<String>,
    id: Option<String>,
    key: Option<String>,
    offset: u64,
    len: u32,
}

/// A loaded dataset, ready to replay.
pub struct Dataset {
    spill: File,
    entries: Vec<Entry>,
    id_field: String,
    key_is_id: bool,
}

pub struct DatasetOptions<'a> {
    pub id_field: &'a str,
    pub key_field: &'a str,
    pub time_field: &'a str,
    pub order: ReplayOrder,
}

impl Dataset {
    /// Stream `path` into a spill file; `.bz2` files are decompressed on the fly.
    pub fn load(path: &Path, opts: &DatasetOptions<'_>) -> Result<Self, SourceError> {
        let fail = |message: String| SourceError::Input {
            path: path.display().to_string(),
            message,
        };
        let file = File::open(path).map_err(|e| fail(e.to_string()))?;
        let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "bz2") {
            Box::new(bzip2::read::MultiBzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(file)
        };
        let spill = tempfile::tempfile().map_err(|e| fail(format!("spill file: {e}")))?;
        let mut writer = BufWriter::new(spill.try_clone().map_err(|e| fail(e.to_string()))?);
        let mut entries = Vec::new();
        let mut offset = 0u64;
        split_objects(BufReader::with_capacity(1 << 20, reader), |object| {
            let mut map: Map<String, Value> = serde_json::from_slice(object)
                .map_err(|e| invalid(format!("record {}: {e}", entries.len() + 1)))?;
            let field = |map: &Map<String, Value>, name: &str| {
                map.get(name).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            };
            let time = field(&map, opts.time_field);
            let key = field(&map, opts.key_field);
            let id = map.remove(opts.id_field).map(|v| match v {
                Value::String(s) => s,
                other => other.to_string(),
            });
            let rest = serde_json::to_vec(&map)?;
            // Keep the fields between the braces; the id is put back in front on replay.
            let inner = &rest[1..rest.len() - 1];
            writer.write_all(inner)?;
            entries.push(Entry {
                time,
                id,
                key,
                offset,
                len: inner.len() as u32,
            });
            offset += inner.len() as u64;
            Ok(())
        })
        .map_err(|e| fail(e.to_string()))?;
        writer.flush().map_err(|e| fail(e.to_string()))?;
        drop(writer);
        if opts.order == ReplayOrder::EventTime {
            entries.sort_by(|a, b| a.time.cmp(&b.time));
        }
        Ok(Self {
            spill,
            entries,
            id_field: opts.id_field.to_string(),
            key_is_id: opts.key_field == opts.id_field,
        })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Record `i` of replay round `round` (0-based) as (key, compact JSON). Rounds after
    /// the first get fresh ids: numeric ids are shifted by `round * 10^9`, others suffixed.
    pub fn record(&self, round: usize, i: usize) -> std::io::Result<(Option<String>, Vec<u8>)> {
        let e = &self.entries[i];
        let mut inner = vec![0u8; e.len as usize];
        self.spill.read_exact_at(&mut inner, e.offset)?;
        let id = e.id.as_ref().map(|id| fresh_id(id, round));
        let mut out = Vec::with_capacity(inner.len() + 48);
        out.push(b'{');
        if let Some(id) = &id {
            serde_json::to_writer(&mut out, &self.id_field)?;
            out.push(b':');
            serde_json::to_writer(&mut out, id)?;
            if !inner.is_empty() {
                out.push(b',');
            }
        }
        out.extend_from_slice(&inner);
        out.push(b'}');
        let key = if self.key_is_id { id } else { e.key.clone() };
        Ok((key, out))
    }
}

pub fn fresh_id(id: &str, round: usize) -> String {
    if round == 0 {
        return id.to_string();
    }
    match id.parse::<u64>() {
        Ok(n) => (n + round as u64 * 1_000_000_000).to_string(),
        Err(_) => format!("{id}-r{round}"),
    }
}

/// Call `each` with the bytes of every top-level JSON object in `reader`, which holds
/// either one array of objects or objects one after another (NDJSON). Strings and
/// nesting are tracked byte by byte, so a brace inside a string is not a boundary.
fn split_objects<R: Read>(
    mut reader: R,
    mut each: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut object: Vec<u8> = Vec::with_capacity(4096);
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    let mut position = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for &b in &buf[..n] {
            position += 1;
            if depth == 0 {
                match b {
                    b'{' => {
                        depth = 1;
                        object.clear();
                        object.push(b);
                    }
                    b'[' | b']' | b',' => {}
                    b if b.is_ascii_whitespace() => {}
                    other => {
                        return Err(invalid(format!(
                            "unexpected '{}' at byte {position}: expected an object",
                            other as char
                        )))
                    }
                }
                continue;
            }
            object.push(b);
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        each(&object)?;
                    }
                }
                _ => {}
            }
        }
    }
    if depth != 0 {
        return Err(invalid("the file ends inside an object (truncated?)"));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        split_objects(text.as_bytes(), |o| {
            out.push(String::from_utf8(o.to_vec()).unwrap());
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn splits_arrays_and_ndjson() {
        let a = objects("[\n {\"a\": \"}{\\\"\"},\n {\"b\": [1, {\"c\": 2}]}\n]\n");
        assert_eq!(a, vec!["{\"a\": \"}{\\\"\"}", "{\"b\": [1, {\"c\": 2}]}"]);
        assert_eq!(objects("{\"a\":1}\n{\"a\":2}\n").len(), 2);
        assert!(split_objects("[{\"a\":1".as_bytes(), |_| Ok(())).is_err());
        assert!(split_objects("[1]".as_bytes(), |_| Ok(())).is_err());
    }

    #[test]
    fn replays_in_event_time_with_fresh_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.json");
        std::fs::write(
            &path,
            r#"[{"crime_id":"2","t":"2018-01-02","x":"b"},{"crime_id":"1","t":"2018-01-01","x":"a"}]"#,
        )
        .unwrap();
        let opts = DatasetOptions {
            id_field: "crime_id",
            key_field: "crime_id",
            time_field: "t",
            order: ReplayOrder::EventTime,
        };
        let d = Dataset::load(&path, &opts).unwrap();
        let (key, json) = d.record(0, 0).unwrap();
        assert_eq!(key.as_deref(), Some("1"));
        assert_eq!(
            String::from_utf8(json).unwrap(),
            r#"{"crime_id":"1","t":"2018-01-01","x":"a"}"#
        );
        let (key, json) = d.record(2, 1).unwrap();
        assert_eq!(key.as_deref(), Some("2000000002"));
        assert!(String::from_utf8(json)
            .unwrap()
            .starts_with(r#"{"crime_id":"2000000002","#));
        assert_eq!(fresh_id("abc", 1), "abc-r1");
    }
}
