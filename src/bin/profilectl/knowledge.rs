//! `profilectl knowledge …`: the team's shared knowledge hub, and
//! `profilectl settings`: the settings in force.

use clap::Subcommand;
use hyper::Method;
use profiled::api::SettingsReport;
use profiled::client::{self, Client};
use profiled::store::{KnowledgeEntry, Page};
use serde::Serialize;
use serde_json::json;

use crate::Failure;
use crate::render::Output;

#[derive(Subcommand)]
pub enum KnowledgeCommand {
    /// Add an entry, written as a file you own (you may edit it in place
    /// afterwards; nobody else may).
    Add {
        /// A one-line title.
        title: String,
        /// The text, or `-` to read it from standard input.
        text: String,
        /// A tag (repeatable).
        #[arg(long = "tag", short)]
        tags: Vec<String>,
    },
    /// List entries, newest first.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Start after this cursor (the `next` of a previous page).
        #[arg(long)]
        before: Option<String>,
    },
    /// Show one entry.
    Show {
        /// Its id.
        id: String,
    },
    /// Remove an entry (yours; admins: anyone's, audited).
    Rm {
        /// Its id.
        id: String,
    },
}

/// Runs a knowledge command. The hub is shared, so `--user` does not apply.
pub async fn run(
    client: &Client,
    user: Option<&str>,
    out: &Output,
    cmd: KnowledgeCommand,
) -> Result<(), Failure> {
    if user.is_some() {
        return Err(Failure::Usage(
            "knowledge is shared by everyone; --user does not apply to it".into(),
        ));
    }
    match cmd {
        KnowledgeCommand::Add { title, text, tags } => {
            let text = if text == "-" {
                crate::read_stdin()?
            } else {
                text
            };
            let e: KnowledgeEntry = client
                .send(
                    Method::POST,
                    "/v1/knowledge",
                    &json!({"title": title, "text": text, "tags": tags}),
                )
                .await?;
            out.created(&e.id, &e);
        }
        KnowledgeCommand::List { limit, before } => {
            let mut path = format!("/v1/knowledge?limit={limit}");
            if let Some(b) = before {
                path.push_str(&format!("&before={}", client::encode(&b)));
            }
            let page: Page<KnowledgeEntry> = client.get(&path).await?;
            if out.json {
                return print(&page);
            }
            for e in &page.items {
                outln!(
                    "{}  {}  {:<12}  {}",
                    e.id,
                    e.created.as_deref().unwrap_or("-"),
                    e.author,
                    e.title
                );
            }
            if let Some(next) = &page.next {
                outln!("(more: --before {next})");
            }
            for p in &page.problems {
                errln!("not served: {p}");
            }
        }
        KnowledgeCommand::Show { id } => {
            let e: KnowledgeEntry = client.get(&entry_path(&id)).await?;
            if out.json {
                return print(&e);
            }
            outln!(
                "{}  by {}  {}",
                e.id,
                e.author,
                e.created.as_deref().unwrap_or("-")
            );
            outln!("# {}", e.title);
            if !e.tags.is_empty() {
                outln!("tags: {}", e.tags.join(", "));
            }
            outln!();
            out!("{}", e.text);
        }
        KnowledgeCommand::Rm { id } => {
            client
                .call(Method::DELETE, &entry_path(&id), None)
                .await?
                .ok()?;
            out.done(&format!("removed {id}"));
        }
    }
    Ok(())
}

/// Prints the settings in force and, when profile.toml is broken, why
/// (exit status 0: the settings shown are the ones that apply).
pub async fn settings(client: &Client, out: &Output) -> Result<(), Failure> {
    let r: SettingsReport = client.get("/v1/settings").await?;
    if out.json {
        return print(&r);
    }
    let s = &r.settings;
    let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    outln!("display_name: {}", show(&s.display_name));
    outln!("timezone:     {}", show(&s.timezone));
    match &s.model {
        Some(m) => outln!(
            "model:        {} at {} (key: {})",
            show(&m.name),
            show(&m.base_url),
            show(&m.provider)
        ),
        None => outln!("model:        -"),
    }
    outln!(
        "agents:       {}",
        if s.agents.is_empty() {
            "-".to_owned()
        } else {
            s.agents.join(", ")
        }
    );
    if let Some(p) = &r.problem {
        errln!("profile.toml is not in force: {p}");
        errln!("(the settings above are the last valid ones; fix the file to apply it)");
    }
    Ok(())
}

fn entry_path(id: &str) -> String {
    format!("/v1/knowledge/{}", client::encode(id))
}

fn print<T: Serialize>(v: &T) -> Result<(), Failure> {
    outln!(
        "{}",
        serde_json::to_string_pretty(v).map_err(|e| Failure::Usage(e.to_string()))?
    );
    Ok(())
}
