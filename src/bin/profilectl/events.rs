//! `profilectl events`: follows `/v1/events`, printing each change as it
//! arrives, and reconnects with `Last-Event-ID` when the stream ends.

use std::time::Duration;

use http_body_util::BodyExt;
use profiled::client::{self, Client};
use serde_json::Value;

use crate::Failure;
use crate::render::Output;

/// How long to wait before reconnecting after the stream ended.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the stream until interrupted or refused.
pub async fn follow(client: &Client, out: &Output, mut last: Option<u64>) -> Result<(), Failure> {
    let mut connected_once = false;
    loop {
        let mut body = match client.open_stream("/v1/events", last).await {
            Ok(b) => b,
            // Before the first connection, or when refused, say why and stop.
            Err(e) if !connected_once || matches!(e, client::Error::Api { .. }) => {
                return Err(e.into());
            }
            Err(e) => {
                errln!("profilectl: {e}; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        connected_once = true;
        errln!("profilectl: watching for changes (Ctrl-C stops)");
        let mut parser = Parser::default();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Some(data) = frame.data_ref() else {
                continue;
            };
            for event in parser.push(data) {
                if let Some(id) = event.id {
                    last = Some(id);
                }
                print(out, &event);
            }
        }
        errln!("profilectl: the stream ended; reconnecting");
        tokio::time::sleep(RETRY).await;
    }
}

fn print(out: &Output, event: &SseEvent) {
    let line = if out.json {
        event.data.clone()
    } else {
        let v: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        if event.name == "resync" {
            "resync: events were missed; reload what you show".to_owned()
        } else if event.name.starts_with("agent.") {
            format!(
                "{} {} {} {} ({})",
                event.name,
                v["agent"].as_str().unwrap_or("-"),
                v["run_id"].as_str().unwrap_or("-"),
                v["status"].as_str().or(v["trigger"].as_str()).unwrap_or(""),
                v["user"].as_str().unwrap_or("")
            )
        } else if event.name.starts_with("knowledge.") {
            format!(
                "{} {} {} (by {})",
                event.name,
                v["record"].as_str().unwrap_or("-"),
                v["path"].as_str().unwrap_or(""),
                v["author"].as_str().unwrap_or("-")
            )
        } else {
            let user = v["user"].as_str().unwrap_or("");
            format!(
                "{} {} {}{}",
                event.name,
                v["record"].as_str().unwrap_or("-"),
                v["path"].as_str().unwrap_or(""),
                if user.is_empty() {
                    String::new()
                } else {
                    format!(" ({user})")
                }
            )
        }
    };
    // Stdout is line-buffered: scripts read each event as it comes.
    outln!("{line}");
}

/// One server-sent event.
#[derive(Debug, Default, PartialEq)]
struct SseEvent {
    id: Option<u64>,
    name: String,
    data: String,
}

/// Splits the stream into events (the text/event-stream format: fields
/// up to a blank line; comment lines, the heartbeats, start with `:`).
#[derive(Default)]
struct Parser {
    buf: Vec<u8>,
    current: SseEvent,
}

impl Parser {
    fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(bytes);
        let mut done = Vec::new();
        while let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                if !self.current.data.is_empty() || !self.current.name.is_empty() {
                    done.push(std::mem::take(&mut self.current));
                }
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => self.current.id = value.parse().ok(),
                "event" => self.current.name = value.to_owned(),
                "data" => {
                    if !self.current.data.is_empty() {
                        self.current.data.push('\n');
                    }
                    self.current.data.push_str(value);
                }
                _ => {}
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_heartbeats_are_skipped() {
        let mut p = Parser::default();
        assert!(p.push(b": heartbeat\n\nid: 7\nevent: memory.up").is_empty());
        let got = p.push(b"dated\ndata: {\"a\":1}\n\n");
        assert_eq!(
            got,
            vec![SseEvent {
                id: Some(7),
                name: "memory.updated".into(),
                data: "{\"a\":1}".into()
            }]
        );
    }
}
