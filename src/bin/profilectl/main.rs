//! `profilectl`: the command-line client of profiled's Unix socket.
//!
//! Exit status: 0 success; 1 the daemon refused, or what was asked ran and
//! failed (its message on stderr); 2 usage; 3 the daemon could not be
//! reached. With `--json` an error is a JSON object on stderr:
//! `{"error": {"code", "status", "detail"}}` (docs/OPERATIONS.md).

// Every print goes through render::emit, which escapes control characters.
#![deny(clippy::print_stdout, clippy::print_stderr)]

#[macro_use]
mod render;
mod agent;
mod args;
mod creds;
mod events;
mod knowledge;
mod manual;

use std::io::Read;
use std::process::ExitCode;

use clap::Parser;
use hyper::Method;
use profiled::api::{Me, NewToken, ProfileChange, ProfileRow, TokenInfo};
use profiled::client::{self, Client};
use profiled::store::{Memory, Page, Persona, Task, TaskStatus};
use serde_json::{Value, json};

use args::{
    Args, Command, MemoryCommand, PersonaCommand, ProfileCommand, TaskCommand, TokenCommand,
};

/// What a command failed with.
enum Failure {
    /// The daemon or the connection.
    Client(client::Error),
    /// The user's input (exit 2).
    Usage(String),
    /// What was asked for ran and failed (exit 1), e.g. an agent run.
    Failed(String),
}

impl From<client::Error> for Failure {
    fn from(e: client::Error) -> Self {
        Failure::Client(e)
    }
}

/// The exit status for a daemon that could not be reached.
const UNREACHABLE: u8 = 3;

fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("profilectl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let failure = match runtime.block_on(run(args)) {
        Ok(()) => return ExitCode::SUCCESS,
        Err(f) => f,
    };
    let (code, status, detail, exit) = match failure {
        Failure::Client(client::Error::Api {
            status,
            code,
            detail,
        }) => (code, Some(status), detail, 1),
        Failure::Client(e) if e.is_unreachable() => {
            ("unreachable".to_owned(), None, e.to_string(), UNREACHABLE)
        }
        Failure::Client(e) => ("client_error".to_owned(), None, e.to_string(), 1),
        Failure::Failed(msg) => ("failed".to_owned(), None, msg, 1),
        Failure::Usage(msg) => ("usage".to_owned(), None, msg, 2),
    };
    if json {
        let error = json!({"error": {"code": code, "status": status, "detail": detail}});
        errln!("{error}");
    } else {
        errln!("profilectl: {detail}");
    }
    ExitCode::from(exit)
}

async fn run(args: Args) -> Result<(), Failure> {
    let client = Client::new(&args.socket, args.user.clone());
    let out = render::Output { json: args.json };
    match args.command {
        Command::Status { check } => {
            let me = client.get::<Me>("/v1/me").await?;
            out.me(&me);
            if check && !me.problems.is_empty() {
                return Err(Failure::Failed(match me.problems.len() {
                    1 => "1 problem in your profile needs fixing (above)".to_owned(),
                    n => format!("{n} problems in your profile need fixing (above)"),
                }));
            }
        }
        Command::Capture { text, tags } => {
            let text = if text == "-" { read_stdin()? } else { text };
            let m: Memory = client
                .send(
                    Method::POST,
                    "/v1/memories",
                    &json!({"text": text, "tags": tags, "source": "profilectl"}),
                )
                .await?;
            out.created(&m.id, &m);
        }
        Command::Memories(page) | Command::Memory(MemoryCommand::List(page)) => {
            let mut path = format!("/v1/memories?limit={}", page.limit);
            if let Some(b) = page.before {
                path.push_str(&format!("&before={}", client::encode(&b)));
            }
            out.memories(&client.get::<Page<Memory>>(&path).await?);
        }
        Command::Remember { query, limit } => out.hits(&client.search(&query, limit).await?),
        Command::Memory(MemoryCommand::Show { id }) => {
            out.memory(&client.get::<Memory>(&record_path("memories", &id)).await?)
        }
        Command::Memory(MemoryCommand::Rm { id }) => {
            delete(&client, &record_path("memories", &id)).await?;
            out.done(&format!("removed {id}"));
        }
        Command::Task(TaskCommand::Add { title, due, tags }) => {
            let t: Task = client
                .send(
                    Method::POST,
                    "/v1/tasks",
                    &json!({"title": title, "due": due, "tags": tags}),
                )
                .await?;
            out.created(&t.id, &t);
        }
        Command::Task(TaskCommand::List {
            status,
            limit,
            before,
        }) => {
            let mut path = format!("/v1/tasks?limit={limit}");
            if let Some(s) = status {
                let status = profiled::store::TaskStatus::from(s);
                path.push_str(&format!("&status={}", status.as_str()));
            }
            if let Some(b) = before {
                path.push_str(&format!("&before={}", client::encode(&b)));
            }
            out.tasks(&client.get::<Page<Task>>(&path).await?);
        }
        Command::Task(TaskCommand::Start { id }) => {
            let patch = json!({"status": TaskStatus::InProgress});
            out.task_line(&patch_task(&client, &id, &patch).await?);
        }
        Command::Task(TaskCommand::Done { id }) => {
            let patch = json!({"status": TaskStatus::Done});
            out.task_line(&patch_task(&client, &id, &patch).await?);
        }
        Command::Task(TaskCommand::Cancel { id }) => {
            let patch = json!({"status": TaskStatus::Cancelled});
            out.task_line(&patch_task(&client, &id, &patch).await?);
        }
        Command::Task(TaskCommand::Edit {
            id,
            title,
            notes,
            due,
            tags,
        }) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in [("title", title), ("notes", notes), ("due", due)] {
                if let Some(v) = value {
                    patch.insert(key.to_owned(), Value::String(v));
                }
            }
            if let Some(tags) = tags {
                patch.insert("tags".to_owned(), json!(tags));
            }
            if patch.is_empty() {
                return Err(Failure::Usage(
                    "task edit: nothing to change; give --title, --notes, --due or --tag".into(),
                ));
            }
            out.task_line(&patch_task(&client, &id, &Value::Object(patch)).await?);
        }
        Command::Task(TaskCommand::Rm { id }) => {
            delete(&client, &record_path("tasks", &id)).await?;
            out.done(&format!("removed {id}"));
        }
        Command::Persona {
            command: None | Some(PersonaCommand::Show),
        } => out.persona(&client.get::<Persona>("/v1/persona").await?),
        Command::Persona {
            command: Some(PersonaCommand::Set { key, value }),
        } => {
            check_persona_key(&key)?;
            let current: Value = client.get("/v1/persona").await?;
            let updated = set_persona_key(current, &key, &value);
            let p: Persona = client.send(Method::PUT, "/v1/persona", &updated).await?;
            out.persona(&p);
        }
        Command::Profile(ProfileCommand::List) => {
            out.profiles(&client.get::<Vec<ProfileRow>>("/v1/profiles").await?)
        }
        Command::Profile(ProfileCommand::Create { name }) => {
            let c: ProfileChange = client
                .send(Method::POST, "/v1/profiles", &json!({"user": name}))
                .await?;
            out.profile_change(&c);
        }
        Command::Profile(ProfileCommand::Adopt { name }) => {
            let path = format!("/v1/profiles/{}/adopt", client::encode(&name));
            let c: ProfileChange = client.send(Method::POST, &path, &json!({})).await?;
            out.profile_change(&c);
        }
        Command::Token(TokenCommand::Create { name, days }) => {
            let t: NewToken = client
                .send(
                    Method::POST,
                    "/v1/tokens",
                    &json!({"name": name, "expires_in_days": days}),
                )
                .await?;
            out.new_token(&t);
        }
        Command::Token(TokenCommand::List) => {
            out.tokens(&client.get::<Vec<TokenInfo>>("/v1/tokens").await?)
        }
        Command::Token(TokenCommand::Revoke { id, all }) => match (id, all) {
            (_, true) => {
                let resp = client.call(Method::DELETE, "/v1/tokens", None).await?;
                let v: Value = resp.json()?;
                out.done(&format!("revoked {}", v["revoked"]));
            }
            (Some(id), false) => {
                delete(&client, &record_path("tokens", &id)).await?;
                out.done(&format!("revoked {id}"));
            }
            (None, false) => return Err(Failure::Usage("name a token id or --all".into())),
        },
        Command::Creds(cmd) => creds::run(&client, &out, cmd).await?,
        Command::Agent(cmd) => agent::run(&client, &out, cmd).await?,
        Command::Events { last_event_id } => events::follow(&client, &out, last_event_id).await?,
        Command::Knowledge(cmd) => knowledge::run(&client, args.user.as_deref(), &out, cmd).await?,
        Command::Settings => knowledge::settings(&client, &out).await?,
        Command::Completions { shell } => manual::completions(shell)?,
        Command::ManPages { dir } => manual::man_pages(&dir)?,
        Command::Api { method, path, body } => {
            // clap allows only the five methods the API uses.
            let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                .map_err(|_| Failure::Usage(format!("{method:?} is not an HTTP method")))?;
            let body = body
                .map(|b| serde_json::from_str::<Value>(&b))
                .transpose()
                .map_err(|e| Failure::Usage(format!("the body is not JSON: {e}")))?;
            let resp = client.call(method, &path, body.as_ref()).await?;
            out.raw(&resp.body);
            resp.ok()?;
        }
    }
    Ok(())
}

fn record_path(kind: &str, id: &str) -> String {
    format!("/v1/{kind}/{}", client::encode(id))
}

async fn delete(client: &Client, path: &str) -> Result<(), Failure> {
    Ok(client.call(Method::DELETE, path, None).await?.ok()?)
}

fn read_stdin() -> Result<String, Failure> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| Failure::Usage(format!("cannot read standard input: {e}")))?;
    Ok(s)
}

/// Refuses a persona key the daemon would refuse, before asking it.
fn check_persona_key(key: &str) -> Result<(), Failure> {
    if Persona::KEYS.contains(&key) {
        Ok(())
    } else {
        Err(Failure::Usage(format!(
            "unknown persona key {key:?}; use one of: {}",
            Persona::KEYS.join(", ")
        )))
    }
}

/// Sets `key` in the persona JSON `current`; `values` takes a
/// comma-separated list, an empty value removes the key.
fn set_persona_key(mut current: Value, key: &str, value: &str) -> Value {
    let new = if key == "values" {
        Value::from(
            value
                .split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .collect::<Vec<_>>(),
        )
    } else if value.is_empty() {
        Value::Null
    } else {
        Value::from(value)
    };
    if let Some(obj) = current.as_object_mut() {
        if new.is_null() {
            obj.remove(key);
        } else {
            obj.insert(key.to_owned(), new);
        }
    }
    current
}

/// Changes task `id` with `patch` (PATCH /v1/tasks/{id}).
async fn patch_task(client: &Client, id: &str, patch: &Value) -> Result<Task, Failure> {
    Ok(client
        .send(Method::PATCH, &record_path("tasks", id), patch)
        .await?)
}
