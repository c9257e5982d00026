//! `profiled rotate-keys`: re-encrypts every credentials file under a new
//! daemon identity. Offline maintenance: it needs root, not the daemon, and
//! may run beside a running daemon (both take the same per-file locks, and
//! readers try the pending identity too).
//!
//! For each identity, under its lock:
//!
//! 1. open the credentials file with the current identity (a file that does
//!    not open is left alone, with its identity, and reported);
//! 2. after an interrupted earlier rotation, rewrite the file to the current
//!    identity alone and drop the stale `.key.next`;
//! 3. write the new identity as `<name>.key.next`, durably;
//! 4. write the file encrypted to the new identity and the owner's own
//!    recipients, durably (fsync of file and directory);
//! 5. only then rename `.key.next` over `<name>.key`: the old identity is
//!    gone. A crash at any point leaves a file that one of the identities
//!    on disk opens.

use std::path::Path;
use std::process::ExitCode;

use age::x25519::Identity;

use super::error::Result;
use super::format;
use super::keys::Owner;
use super::vault::{Place, Vault};
use crate::accounts;
use crate::config::Config;
use crate::profile::{ProfileListing, ProfileState, ProfilesRoot};

/// What happened to one identity.
#[derive(Debug)]
pub struct Rotation {
    /// The account name, or `(host)`.
    pub name: String,
    /// What was done, or why nothing was.
    pub result: std::result::Result<&'static str, String>,
}

/// Rotates every identity in the keys directory, or only `only`'s.
pub fn rotate_keys(config: &Config, only: Option<&str>) -> Result<Vec<Rotation>> {
    let vault = Vault::open(&config.paths.state_dir)?;
    let root = ProfilesRoot::open_beside_daemon(
        &config.paths.profiles_dir,
        config.limits.max_record_bytes,
    )?;
    let listing = root.list()?;
    let names = match only {
        Some(user) => vec![user.to_owned()],
        None => vault.keys().owners()?,
    };
    let mut out = Vec::new();
    for name in names {
        if Vault::is_host(&name) {
            out.push(Rotation {
                name: "(host)".to_owned(),
                result: rotate_one(&vault, Owner::Host, Some(Place::Host))
                    .map_err(|e| e.to_string()),
            });
        } else {
            let result = rotate_user(&vault, &root, &listing, &name);
            out.push(Rotation { name, result });
        }
    }
    Ok(out)
}

fn rotate_user(
    vault: &Vault,
    root: &ProfilesRoot,
    listing: &[ProfileListing],
    name: &str,
) -> std::result::Result<&'static str, String> {
    let account = accounts::by_name(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!(
                "no account has this name; its identity is left as it is (remove keys/{name}.key \
                 when the account and its profile are gone for good)"
            )
        })?;
    let owner = Owner::User(&account);
    if !vault.keys().key_path(owner).exists() {
        return Err("has no daemon identity yet; nothing to rotate".to_owned());
    }
    match listing.iter().find(|l| l.name == name) {
        None => rotate_one(vault, owner, None).map_err(|e| e.to_string()),
        Some(l) if l.state == ProfileState::Directory && l.owner == account.uid => {
            let (profile, _) = root
                .open_profile(&account)
                .map_err(|e| e.to_string())?
                .ok_or("its profile vanished while rotating")?;
            rotate_one(vault, owner, Some(Place::Profile(&profile))).map_err(|e| e.to_string())
        }
        Some(l) => Err(format!(
            "its profile directory is owned by uid {}, not {name} (uid {}): a conflict or a \
             profile not yet adopted; its identity is left as it is until that is settled",
            l.owner, account.uid
        )),
    }
}

/// Rotates one identity and re-encrypts the file at `place` (none when the
/// account has no profile directory).
fn rotate_one(vault: &Vault, owner: Owner<'_>, place: Option<Place<'_>>) -> Result<&'static str> {
    let keys = vault.keys();
    let _lock = keys.lock(owner)?;
    let Some(ids) = keys.load(owner)? else {
        return Ok("no identity yet; nothing to rotate");
    };
    let plain = match place {
        Some(place) => vault.load(place)?.map(|(plain, _)| plain),
        None => None,
    };
    let file = match place {
        Some(Place::Host) => "the host's credentials.age",
        _ => "credentials.age",
    };
    if ids.next.is_some() {
        if let (Some(place), Some(plain)) = (place, &plain) {
            let sealed = format::seal(plain, &[ids.current.to_public()], file)?;
            vault.write_bytes(place, &sealed)?;
        }
        keys.discard_next(owner)?;
    }
    let new = Identity::generate();
    keys.write_next(owner, &new)?;
    if let (Some(place), Some(plain)) = (place, &plain) {
        let sealed = format::seal(plain, &[new.to_public()], file)?;
        vault.write_bytes(place, &sealed)?;
    }
    keys.promote_next(owner)?;
    Ok(if plain.is_some() {
        "rotated; credentials.age re-encrypted"
    } else {
        "rotated (no credentials file)"
    })
}

/// `profiled rotate-keys [--user NAME]`: prints one line per identity and
/// exits 1 when any was left as it was.
pub fn run_cli(config: Option<&Path>, user: Option<&str>) -> ExitCode {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "profiled rotate-keys: run it as root: it reads and replaces the daemon's identities"
        );
        return ExitCode::FAILURE;
    }
    let config = match Config::load_or_default(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("profiled: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(u) = user
        && !accounts::is_valid_name(u)
    {
        eprintln!("profiled rotate-keys: {u:?} is not a valid account name");
        return ExitCode::from(2);
    }
    let rotations = match rotate_keys(&config, user) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("profiled rotate-keys: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for r in &rotations {
        match &r.result {
            Ok(what) => println!("{}: {what}", r.name),
            Err(why) => {
                failed = true;
                println!("{}: left as it was: {why}", r.name);
            }
        }
    }
    if rotations.is_empty() {
        println!(
            "no daemon identities in {}; nothing to rotate",
            config.paths.state_dir.join("keys").display()
        );
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
