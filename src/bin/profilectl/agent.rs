//! `profilectl agent …`: the agents that run for you, running one now, and
//! its run log.

use clap::Subcommand;
use hyper::Method;
use profiled::client::{self, Client};
use serde_json::{Value, json};

use crate::Failure;
use crate::render::Output;

#[derive(Subcommand)]
pub enum AgentCommand {
    /// The agents that run for you: schedule, last run, next run.
    List,
    /// Run an agent for yourself now and wait for it (admins: `--all`
    /// runs a whole cycle over every user).
    Run {
        /// The agent's name.
        name: String,
        /// A whole cycle (admins).
        #[arg(long)]
        all: bool,
    },
    /// Your runs of an agent, newest first.
    Logs {
        /// The agent's name.
        name: String,
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
}

pub async fn run(client: &Client, out: &Output, cmd: AgentCommand) -> Result<(), Failure> {
    match cmd {
        AgentCommand::List => {
            let v: Value = client.get("/v1/agents").await?;
            if out.json {
                return print(&v);
            }
            for a in v["agents"].as_array().into_iter().flatten() {
                let last = &a["last_run"];
                outln!(
                    "{:<20} {:<6} {:<28} last: {} {}  next: {}",
                    s(&a["name"]),
                    s(&a["declared_by"]),
                    s(&a["schedule"]),
                    s(&last["status"]),
                    s(&last["end"]),
                    s(&a["next_run"]),
                );
            }
            for p in v["problems"].as_array().into_iter().flatten() {
                errln!("problem: {}", s(p));
            }
            Ok(())
        }
        AgentCommand::Run { name, all } => {
            let mut path = format!("/v1/agents/{}/run", client::encode(&name));
            if all {
                path.push_str("?all=true");
            }
            let v: Value = client.send(Method::POST, &path, &json!({})).await?;
            if out.json {
                return print(&v);
            }
            if all {
                outln!("{}: {} ({} users)", name, s(&v["result"]), v["users"]);
            } else {
                print_run(&v);
            }
            if v["status"].as_str().is_some_and(|st| st != "ok") {
                return Err(Failure::Failed(format!(
                    "the run ended {}: {}",
                    s(&v["status"]),
                    s(&v["error"])
                )));
            }
            Ok(())
        }
        AgentCommand::Logs { name, limit } => {
            let path = format!("/v1/agents/{}/runs?limit={limit}", client::encode(&name));
            let v: Value = client.get(&path).await?;
            if out.json {
                return print(&v);
            }
            for r in v.as_array().into_iter().flatten() {
                print_run(r);
            }
            Ok(())
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn print_run(r: &Value) {
    outln!(
        "{}  {}  {}  {}ms  {}{}",
        s(&r["start"]),
        s(&r["run_id"]),
        s(&r["status"]),
        r["duration_ms"],
        s(&r["trigger"]),
        r["error"]
            .as_str()
            .map(|e| format!("  ({e})"))
            .unwrap_or_default()
    );
    for note in r["notes"].as_array().into_iter().flatten() {
        outln!("  note: {}", s(note));
    }
    let output = r["output"].as_str().unwrap_or("");
    for line in output.lines() {
        outln!("    {line}");
    }
}

fn print(v: &Value) -> Result<(), Failure> {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| Failure::Usage(e.to_string()))?
    );
    Ok(())
}
