//! `profilectl creds …`: the caller's provider keys, and the host's
//! (`--host`, admins).
//!
//! A secret is never taken from the command line (any user can read
//! another process's arguments in /proc): it comes from a prompt that does
//! not echo when standard input is a terminal, else from standard input.
//! The no-echo prompt uses rustix's termios, already a dependency, rather
//! than a crate such as rpassword: it is a dozen lines (clear ECHO, read a
//! line, restore), and the restore runs from a drop guard.

use std::io::{BufRead, Read, Write};
use std::os::fd::AsFd;

use clap::Subcommand;
use hyper::Method;
use profiled::client::{self, Client};
use profiled::creds::{EntryInfo, Listing, Secret, check_provider};
use rustix::termios::{LocalModes, OptionalActions, Termios};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::Failure;
use crate::render::Output;

#[derive(Subcommand)]
pub enum CredsCommand {
    /// Set a provider's key. The secret is read from a prompt that does not
    /// echo, or from standard input (`profilectl creds set openai < key.txt`);
    /// never from the command line.
    Set {
        /// The provider: openai, anthropic, openrouter, any name.
        provider: String,
        /// A note: which account or project the key belongs to.
        #[arg(long)]
        label: Option<String>,
        /// From when the key is no longer used: 2027-01-01 or 2027-01-01T09:00:00Z.
        #[arg(long, value_name = "DATE")]
        expires: Option<String>,
        /// Set the host's fallback key instead (admins).
        #[arg(long)]
        host: bool,
    },
    /// List keys: names and metadata, never the secrets.
    List {
        /// List the host's fallback keys instead (admins).
        #[arg(long)]
        host: bool,
    },
    /// Print one of your own keys (recorded in your audit log).
    Reveal {
        /// The provider.
        provider: String,
    },
    /// Remove a key.
    Rm {
        /// The provider.
        provider: String,
        /// Remove the host's fallback key instead (admins).
        #[arg(long)]
        host: bool,
    },
    /// Also encrypt your credentials.age to your own public key (age1… or
    /// ssh-ed25519 …, or a file holding one, such as ~/.ssh/id_ed25519.pub),
    /// so you can open it offline with `age -d -i`.
    AddRecipient {
        /// The public key, or a file that holds it.
        key: String,
    },
    /// Stop encrypting your credentials.age to one of your public keys.
    RmRecipient {
        /// The public key, or a file that holds it.
        key: String,
    },
    /// Move an unreadable credentials.age aside (to
    /// credentials.age.broken-<ID>, kept byte for byte) so keys can be set
    /// again.
    Reset,
}

/// Runs one `creds` command.
pub async fn run(client: &Client, out: &Output, cmd: CredsCommand) -> Result<(), Failure> {
    // Refuse a name the daemon would refuse (`recipients` is a route, not a
    // provider) before asking for a secret.
    if let CredsCommand::Set { provider, .. }
    | CredsCommand::Reveal { provider }
    | CredsCommand::Rm { provider, .. } = &cmd
    {
        check_provider(provider).map_err(|e| Failure::Usage(e.to_string()))?;
    }
    match cmd {
        CredsCommand::Set {
            provider,
            label,
            expires,
            host,
        } => {
            let secret = read_secret(&provider)?;
            let body = json!({"secret": secret.expose(), "label": label, "expires": expires});
            let info: EntryInfo = client
                .send(Method::PUT, &path(host, Some(&provider)), &body)
                .await?;
            drop(body);
            if out.json {
                print_json(&info);
            } else {
                outln!("{}: key set{}", info.provider, whose(host));
            }
        }
        CredsCommand::List { host } => {
            let listing: Listing = client.get(&path(host, None)).await?;
            if out.json {
                print_json(&listing);
            } else {
                print_listing(&listing, host);
            }
        }
        CredsCommand::Reveal { provider } => {
            let path = format!("/v1/credentials/{}/reveal", client::encode(&provider));
            let resp = client.call(Method::POST, &path, None).await?;
            resp.ok()?;
            let v: Zeroizing<Vec<u8>> = Zeroizing::new(resp.body.to_vec());
            if out.json {
                // Written as is, not through render::emit, so no copy of the
                // secret outlives the zeroized buffer; it is the caller's own
                // key, refused at `set` if it holds a control character, in
                // JSON, which escapes them anyway.
                std::io::stdout()
                    .write_all(&v)
                    .and_then(|()| std::io::stdout().write_all(b"\n"))
                    .map_err(|e| Failure::Usage(format!("cannot write: {e}")))?;
            } else {
                #[derive(serde::Deserialize)]
                struct Answer {
                    secret: Secret,
                }
                let a: Answer = serde_json::from_slice(&v).map_err(client::Error::Decode)?;
                outln!("{}", a.secret.expose());
            }
        }
        CredsCommand::Rm { provider, host } => {
            client
                .call(Method::DELETE, &path(host, Some(&provider)), None)
                .await?
                .ok()?;
            out.done(&format!("{provider}: key removed{}", whose(host)));
        }
        CredsCommand::AddRecipient { key } => {
            let key = public_key(&key)?;
            let listing: Listing = client.get("/v1/credentials").await?;
            let mut all = listing.recipients;
            all.push(key.clone());
            let v: Value = client
                .send(
                    Method::PUT,
                    "/v1/credentials/recipients",
                    &json!({"recipients": all}),
                )
                .await?;
            if out.json {
                print_json(&v);
            } else {
                outln!(
                    "credentials.age is now also encrypted to {key}; open it with \
                     `age -d -i YOUR_IDENTITY_FILE <your profile>/credentials.age`"
                );
            }
        }
        CredsCommand::RmRecipient { key } => {
            let key = public_key(&key)?;
            let listing: Listing = client.get("/v1/credentials").await?;
            let before = listing.recipients.len();
            let kept: Vec<String> = listing
                .recipients
                .into_iter()
                .filter(|r| !(key == *r || key.starts_with(&format!("{r} "))))
                .collect();
            if kept.len() == before {
                return Err(Failure::Usage(format!(
                    "{key} is not one of the recipients; `profilectl creds list` shows them"
                )));
            }
            let v: Value = client
                .send(
                    Method::PUT,
                    "/v1/credentials/recipients",
                    &json!({"recipients": kept}),
                )
                .await?;
            if out.json {
                print_json(&v);
            } else {
                outln!("credentials.age is no longer encrypted to {key}");
            }
        }
        CredsCommand::Reset => {
            let v: Value = client
                .call(Method::POST, "/v1/credentials/reset", None)
                .await?
                .json()?;
            if out.json {
                print_json(&v);
            } else {
                outln!(
                    "moved the unreadable file aside to {}; set your keys again with \
                     `profilectl creds set PROVIDER`",
                    v["moved_to"].as_str().unwrap_or("?")
                );
            }
        }
    }
    Ok(())
}

fn path(host: bool, provider: Option<&str>) -> String {
    let base = if host {
        "/v1/host/credentials"
    } else {
        "/v1/credentials"
    };
    match provider {
        Some(p) => format!("{base}/{}", client::encode(p)),
        None => base.to_owned(),
    }
}

fn whose(host: bool) -> &'static str {
    if host { " (host fallback)" } else { "" }
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => outln!("{s}"),
        Err(e) => errln!("profilectl: cannot print JSON: {e}"),
    }
}

fn print_listing(listing: &Listing, host: bool) {
    if listing.credentials.is_empty() {
        if host {
            outln!("no host keys; an admin sets one with `profilectl creds set --host PROVIDER`");
        } else {
            outln!("no keys yet; set one with `profilectl creds set PROVIDER`");
        }
    }
    for c in &listing.credentials {
        let state = match (&c.expires, c.expired) {
            (Some(at), true) => format!("EXPIRED {at}"),
            (Some(at), false) => format!("expires {at}"),
            (None, _) => "no expiry".to_owned(),
        };
        outln!(
            "{:<16} {:<20} set {}  last used {}  {state}",
            c.provider,
            c.label.as_deref().unwrap_or("-"),
            c.created,
            c.last_used.as_deref().unwrap_or("never"),
        );
    }
    for r in &listing.recipients {
        outln!("also encrypted to: {r}");
    }
}

/// The public key in `arg`: the key itself, or the first public key in
/// the file it names (an SSH `.pub` file, or age-keygen's output, whose
/// `# public key:` comment is used; its secret line is never read out).
fn public_key(arg: &str) -> Result<String, Failure> {
    let arg = arg.trim();
    if arg.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        return Err(Failure::Usage(
            "that is a secret key, not a public one: keep it to yourself and give its public \
             key (age-keygen -y FILE)"
                .into(),
        ));
    }
    if arg.starts_with("age1") || arg.starts_with("ssh-") {
        return Ok(arg.to_owned());
    }
    let text = std::fs::read_to_string(arg).map_err(|e| {
        Failure::Usage(format!(
            "{arg:?} is neither a public key (age1…, ssh-ed25519 …) nor a readable file: {e}"
        ))
    })?;
    let text = Zeroizing::new(text);
    text.lines()
        .map(str::trim)
        .find_map(|l| {
            if l.starts_with("age1") || l.starts_with("ssh-") {
                Some(l.to_owned())
            } else {
                l.strip_prefix("# public key:").map(|k| k.trim().to_owned())
            }
        })
        .ok_or_else(|| Failure::Usage(format!("no public key (age1…, ssh-…) found in {arg}")))
}

/// The secret: from a no-echo prompt at a terminal, else standard input.
fn read_secret(provider: &str) -> Result<Secret, Failure> {
    let stdin = std::io::stdin();
    let text = if rustix::termios::isatty(&stdin) {
        prompt(provider)?
    } else {
        let mut s = Zeroizing::new(String::new());
        stdin.lock().read_to_string(&mut s).map_err(|e| {
            Failure::Usage(format!("cannot read the secret from standard input: {e}"))
        })?;
        s
    };
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Failure::Usage(
            "no secret given: type it at the prompt, or send it on standard input".into(),
        ));
    }
    Ok(Secret::new(secret.to_owned()))
}

/// Puts the terminal's settings back when dropped, whatever happens.
struct Restore<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    saved: Termios,
}

impl Drop for Restore<'_> {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(self.fd, OptionalActions::Now, &self.saved);
    }
}

fn prompt(provider: &str) -> Result<Zeroizing<String>, Failure> {
    let stdin = std::io::stdin();
    let fd = stdin.as_fd();
    let tty = |e: rustix::io::Errno| Failure::Usage(format!("cannot set up the terminal: {e}"));
    let saved = rustix::termios::tcgetattr(fd).map_err(tty)?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    // Still echo the final newline, so the next output starts on its line.
    quiet.local_modes.insert(LocalModes::ECHONL);
    err!("secret for {provider} (typing is not shown): ");
    let _ = std::io::stderr().flush();
    rustix::termios::tcsetattr(fd, OptionalActions::Flush, &quiet).map_err(tty)?;
    let _restore = Restore { fd, saved };
    let mut line = Zeroizing::new(String::new());
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::Usage(format!("cannot read the secret: {e}")))?;
    Ok(line)
}
