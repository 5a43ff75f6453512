//! The status server as a client sees it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;

use super::TestEnv;

/// (status code, body) of `GET path`.
pub(crate) fn get(port: u16, path: &str) -> (u16, String) {
    request(port, "GET", path, "")
}

/// (status code, body) of one request; the reply is read to EOF (HTTP/1.1 keeps
/// connections open unless asked not to).
pub(crate) fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("read");
    let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    (code, body.to_string())
}

/// Samples of an OpenMetrics text exposition (what Prometheus scrapes), checked line by
/// line: `name{labels}` -> value.
pub(crate) fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            typed.insert(parts.next().expect("name").to_string());
            let kind = parts.next().expect("type");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            continue;
        }
        if line.starts_with("# HELP ") || line.starts_with("# UNIT ") {
            continue;
        }
        if line == "# EOF" {
            break;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line: {line}"));
        let name = series.split('{').next().expect("name");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            if !labels.is_empty() {
                assert!(
                    labels.starts_with('{') && labels.ends_with('}'),
                    "bad labels: {line}"
                );
                for pair in labels[1..labels.len() - 1].split("\",") {
                    let (k, v) = pair
                        .split_once("=\"")
                        .unwrap_or_else(|| panic!("bad label: {line}"));
                    assert!(!k.is_empty() && !v.contains('\n'), "bad label: {line}");
                }
            }
        }
        let base = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|b| typed.contains(*b))
            .unwrap_or(name);
        assert!(typed.contains(base), "{name} has no # TYPE line");
        samples.insert(series.to_string(), value.parse().expect("a number"));
    }
    samples
}

fn port_from_log(env: &TestEnv, log: &str) -> Option<u16> {
    let log = std::fs::read_to_string(env.dir.path().join(log)).ok()?;
    let at = log.find("status page on http://127.0.0.1:")?;
    let rest = &log[at + "status page on http://127.0.0.1:".len()..];
    rest.split('/').next()?.parse().ok()
}

/// The port `run` logged its status page on (it listens on port 0 in tests).
pub(crate) async fn status_port(env: &TestEnv, log: &str) -> u16 {
    let mut port = None;
    super::wait_until(
        std::time::Duration::from_secs(60),
        "the status page's address",
        || {
            port = port_from_log(env, log);
            std::future::ready(port.is_some())
        },
    )
    .await;
    port.expect("port")
}
