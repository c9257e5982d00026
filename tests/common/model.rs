//! A tiny OpenAI-compatible chat server on loopback, the only thing the
//! tests fake (a remote LLM): it records every request it receives and
//! answers tags and usage, 401 for one key, or a fixed error.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request the server received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub authorization: String,
    pub body: String,
}

/// How the server answers.
#[derive(Clone)]
enum Answer {
    /// Tags and usage; 401 for the key `rejected`.
    Tags { rejected: String },
    /// This status line and body, always.
    Fixed { status: String, body: String },
}

/// The server; it runs until the test process ends.
pub struct FakeModel {
    /// Its base URL, `http://127.0.0.1:<port>/v1`.
    pub url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeModel {
    /// Answers tags and usage, or 401 for the key `rejected`.
    pub fn start(rejected: String) -> FakeModel {
        FakeModel::serve(Answer::Tags { rejected })
    }

    /// Answers every request with `status` (e.g. `"500 Internal Server
    /// Error"`) and `body`.
    pub fn failing(status: &str, body: &str) -> FakeModel {
        FakeModel::serve(Answer::Fixed {
            status: status.to_owned(),
            body: body.to_owned(),
        })
    }

    fn serve(answer: Answer) -> FakeModel {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/v1", listener.local_addr().expect("addr"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let Some(req) = read_request(&mut stream) else {
                    continue;
                };
                let (status, body) = match &answer {
                    Answer::Tags { rejected }
                        if req.authorization == format!("Bearer {rejected}") =>
                    {
                        (
                            "401 Unauthorized".to_owned(),
                            r#"{"error":{"message":"bad key"}}"#.to_owned(),
                        )
                    }
                    Answer::Tags { .. } => (
                        "200 OK".to_owned(),
                        serde_json::json!({
                            "choices": [{"message": {"role": "assistant",
                                "content": "{\"tags\": [\"Fake\", \"organized\"]}"}}],
                            "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37}
                        })
                        .to_string(),
                    ),
                    Answer::Fixed { status, body } => (status.clone(), body.clone()),
                };
                log.lock().expect("log").push(req);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        FakeModel { url, seen }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().expect("log").clone()
    }
}

fn read_request(stream: &mut std::net::TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut authorization = String::new();
    let mut length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if first {
            first = false;
            continue;
        }
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        match name.to_ascii_lowercase().as_str() {
            "authorization" => authorization = value.trim().to_owned(),
            "content-length" => length = value.trim().parse().ok()?,
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        authorization,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
