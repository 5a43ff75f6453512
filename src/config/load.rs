//! Reading the TOML file and applying overrides before the typed structs are built.

use std::path::Path;

use toml::{Table, Value};

use super::{Config, ConfigError, Plan};

/// Environment variables `LAKESTREAM__KAFKA__BROKERS=...` override `kafka.brokers`.
pub(super) const ENV_PREFIX: &str = "LAKESTREAM__";

/// Maps of free-form options: the rest of an override path is one key, kept verbatim,
/// because librdkafka property names contain dots themselves.
const OPTION_MAPS: [&str; 4] = [
    "kafka.options",
    "storage.options",
    "storage.options_env",
    "storage.options_file",
];

/// Load `path` (a missing file is an error), then the environment, then `--set` overrides.
pub fn load(
    path: &Path,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &[String],
) -> Result<Plan, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
        path: path.display().to_string(),
        cause,
    })?;
    load_str(&text, &path.display().to_string(), env, overrides)
}

/// As [`load`], from text already read (`origin` names it in errors).
pub fn load_str(
    text: &str,
    origin: &str,
    env: impl IntoIterator<Item = (String, String)>,
    overrides: &[String],
) -> Result<Plan, ConfigError> {
    let mut table: Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
    for (name, value) in env {
        if let Some(path) = env_key_to_path(&name) {
            apply_override(&mut table, &format!("{path}={value}"))?;
        }
    }
    for text in overrides {
        apply_override(&mut table, text)?;
    }
    let config: Config = serde_path_to_error::deserialize(Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::key(key, e.into_inner().to_string())
    })?;
    Plan::compile(config)
}

/// `LAKESTREAM__PIPELINES__CALLS__TABLE` -> `pipelines.calls.table`. Inside
/// `kafka.options` underscores become dots (`FETCH_WAIT_MAX_MS` -> `fetch.wait.max.ms`).
fn env_key_to_path(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let parts: Vec<String> = rest.split("__").map(str::to_lowercase).collect();
    if parts.iter().any(String::is_empty) {
        return None;
    }
    if parts.len() > 2 && parts[0] == "kafka" && parts[1] == "options" {
        let key = parts[2..].join("_").replace('_', ".");
        return Some(format!("kafka.options.{key}"));
    }
    Some(parts.join("."))
}

/// Apply one `dotted.key=value` override to the raw TOML table. The value is read as
/// TOML when it parses (numbers, booleans, arrays) unless the key already holds a
/// string, and as a plain string otherwise.
pub(super) fn apply_override(table: &mut Table, text: &str) -> Result<(), ConfigError> {
    let bad = |message: &str| ConfigError::Override {
        text: text.to_string(),
        message: message.to_string(),
    };
    let (path, raw) = text
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE, e.g. kafka.brokers=host:9092"))?;
    let segments = split_path(path.trim());
    if segments.iter().any(String::is_empty) {
        return Err(bad("empty segment in key"));
    }
    let (last, parents) = segments.split_last().ok_or_else(|| bad("empty key"))?;
    let mut node = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = node
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        node = entry.as_table_mut().ok_or_else(|| {
            bad(&format!(
                "'{}' is a value, not a section",
                parents[..=depth].join(".")
            ))
        })?;
    }
    let in_option_map = OPTION_MAPS.iter().any(|m| path.trim().starts_with(m));
    let keep_string = in_option_map || matches!(node.get(last), Some(Value::String(_)));
    node.insert(last.clone(), parse_value(raw.trim(), keep_string));
    Ok(())
}

fn split_path(path: &str) -> Vec<String> {
    for map in OPTION_MAPS {
        if let Some(key) = path.strip_prefix(map).and_then(|r| r.strip_prefix('.')) {
            let mut parts: Vec<String> = map.split('.').map(String::from).collect();
            parts.push(key.to_string());
            return parts;
        }
    }
    path.split('.').map(String::from).collect()
}

fn parse_value(raw: &str, keep_string: bool) -> Value {
    if !keep_string {
        if let Ok(mut doc) = format!("v = {raw}").parse::<Table>() {
            if let Some(value) = doc.remove("v") {
                return value;
            }
        }
    }
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    Value::String(unquoted.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_map_to_paths() {
        assert_eq!(
            env_key_to_path("LAKESTREAM__PIPELINES__CALLS__MAX_OFFSETS_PER_TRIGGER").as_deref(),
            Some("pipelines.calls.max_offsets_per_trigger")
        );
        assert_eq!(
            env_key_to_path("LAKESTREAM__KAFKA__OPTIONS__FETCH_WAIT_MAX_MS").as_deref(),
            Some("kafka.options.fetch.wait.max.ms")
        );
        assert_eq!(env_key_to_path("LAKESTREAM_CONFIG"), None);
        assert_eq!(env_key_to_path("LAKESTREAM__A____B"), None);
    }

    #[test]
    fn overrides_type_values_and_keep_option_keys_whole() {
        let mut t: Table = "[kafka]\nbrokers = \"a:1\"\n".parse().unwrap();
        apply_override(&mut t, "kafka.brokers=9092").unwrap();
        apply_override(&mut t, "kafka.options.fetch.wait.max.ms=5").unwrap();
        apply_override(&mut t, "pipelines.calls.max_offsets_per_trigger=500").unwrap();
        assert_eq!(t["kafka"]["brokers"].as_str(), Some("9092"));
        assert_eq!(
            t["kafka"]["options"]["fetch.wait.max.ms"].as_str(),
            Some("5")
        );
        assert_eq!(
            t["pipelines"]["calls"]["max_offsets_per_trigger"].as_integer(),
            Some(500)
        );
    }

    #[test]
    fn malformed_overrides_are_rejected() {
        let mut t = Table::new();
        assert!(apply_override(&mut t, "no-equals-sign").is_err());
        assert!(apply_override(&mut t, "a..b=1").is_err());
        apply_override(&mut t, "a=1").unwrap();
        let err = apply_override(&mut t, "a.b=2").unwrap_err().to_string();
        assert!(err.contains("'a' is a value"), "{err}");
    }

    /// Every example config loads and validates, so none can rot.
    #[test]
    fn example_configs_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
        let mut loaded = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                load(&path, [], &[]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                loaded += 1;
            }
        }
        assert!(loaded >= 3, "{loaded} example configs");
    }

    #[test]
    fn start_positions_parse_and_name_their_errors() {
        use super::super::{Start, StartingOffsets};
        let base = "[kafka]\nstarting_offsets = ";
        let parse = |v: &str| {
            load_str(&format!("{base}{v}\n"), "t", [], &[]).map(|c| c.kafka.starting_offsets)
        };
        assert_eq!(
            parse("\"latest\"").unwrap(),
            StartingOffsets::all(Start::Latest)
        );
        let time = StartingOffsets::all(Start::Time(1_709_251_200_000));
        assert_eq!(parse("\"2024-03-01T00:00:00Z\"").unwrap(), time);
        assert_eq!(
            parse("2024-03-01T00:00:00Z").unwrap(),
            time,
            "a bare TOML date-time"
        );
        let map = parse("{ \"0\" = 12, \"*\" = \"latest\" }").unwrap();
        assert_eq!(map.for_partition(0), Start::Offset(12));
        assert_eq!(map.for_partition(3), Start::Latest);
        let err = parse("\"yesterday\"").unwrap_err().to_string();
        assert!(
            err.contains("kafka.starting_offsets") && err.contains("RFC 3339"),
            "{err}"
        );
        let err = parse("{ \"x\" = 1 }").unwrap_err().to_string();
        assert!(err.contains("partition number"), "{err}");
        // The command line takes a time, and a map, too (over a string in the file).
        let set = ["kafka.starting_offsets=2024-03-01T00:00:00Z".to_string()];
        let config = load_str("", "t", [], &set).unwrap();
        assert_eq!(config.kafka.starting_offsets, time);
        let set = [r#"kafka.starting_offsets={ "1" = 5 }"#.to_string()];
        let file = "[kafka]\nstarting_offsets = \"earliest\"\n";
        let config = load_str(file, "t", [], &set).unwrap();
        assert_eq!(
            config.kafka.starting_offsets.for_partition(1),
            Start::Offset(5)
        );
    }

    #[test]
    fn memory_limit_takes_sizes_and_names_the_key() {
        let limit = |set: &str| {
            load_str("", "t", [], &[format!("memory_limit={set}")]).map(|p| p.memory_limit)
        };
        assert_eq!(load_str("", "t", [], &[]).unwrap().memory_limit, 256 << 20);
        assert_eq!(limit("1GiB").unwrap(), 1 << 30);
        assert_eq!(limit("\"512 MiB\"").unwrap(), 512 << 20);
        assert_eq!(limit("300000000").unwrap(), 300_000_000);
        let env = [("LAKESTREAM__MEMORY_LIMIT".to_string(), "64MiB".to_string())];
        assert_eq!(load_str("", "t", env, &[]).unwrap().memory_limit, 64 << 20);
        for (bad, says) in [("lots", "not a size"), ("8MiB", "at least 16MiB")] {
            let err = limit(bad).unwrap_err().to_string();
            assert!(err.contains("memory_limit") && err.contains(says), "{err}");
        }
    }

    #[test]
    fn topics_that_name_one_per_topic_table_collide() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/many-topics.toml");
        let config = load(&path, [], &[]).unwrap();
        let topics = ["sf-a", "sf_a", "sf.b"].map(String::from);
        let collisions = config.topic_collisions("feeds", &topics);
        assert_eq!(collisions.len(), 1);
        assert_eq!(collisions["calls_sf_a"], ["sf-a", "sf_a"]);
        let list = [r#"sources.feeds.topics=["sf-a", "sf_a"]"#.to_string()];
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("topic_pattern", "# ");
        let err = load_str(&text, "t", [], &list).unwrap_err().to_string();
        assert!(
            err.contains("sources.feeds.topics") && err.contains("calls_sf_a"),
            "{err}"
        );
    }

    #[test]
    fn a_topic_of_a_multi_topic_source_gets_its_own_tables_and_group() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/many-topics.toml");
        let config = load(&path, [], &[]).unwrap();
        let source = config.sources["feeds"].for_topic("sf.north-2");
        assert_eq!(source.topic(), "sf.north-2");
        let per = config.pipelines["per_topic"].for_topic("sf.north-2");
        assert_eq!(per.table, "calls_sf_north_2");
        assert_eq!(per.dead_letter_table, "calls_sf_north_2_dead_letters");
        assert!(
            !per.commit.shared_by_topics,
            "a per-topic table is its topic's alone"
        );
        let all = config.pipelines["all"].for_topic("sf.north-2");
        assert!(
            all.commit.shared_by_topics && !all.commit.adopt,
            "the shared table takes every topic of its pipeline, no other writer"
        );
        assert_eq!(all.table, "calls_all");
        assert_eq!(source.group_prefix, "lakestream-many.sf_north_2");
        assert_eq!(
            per.group_id(&source),
            "lakestream-many.sf_north_2.per_topic"
        );
        assert!(config.is_table("calls_sf_north_2") && config.is_table("calls_all"));
        assert!(!config.is_table("calls_") && !config.is_table("other"));
        assert_eq!(per.partition_by, ["call_date_time_date"]);
        let err = load(
            &path,
            [],
            &[r#"pipelines.all.partition_by=["date(crime_id)"]"#.to_string()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("TIMESTAMP"), "{err}");

        // {topic} needs a source of several topics; a source names exactly one kind.
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/lakestream.toml");
        let err = load(
            &shipped,
            [],
            &["pipelines.calls.table=raw_{topic}".to_string()],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("several topics"), "{err}");
        let err = load(&path, [], &["sources.feeds.topic=x".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("exactly one of topic"), "{err}");
        let err = load(&path, [], &["sources.feeds.topic_pattern=(".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("topic_pattern"), "{err}");
    }
}
