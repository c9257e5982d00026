//! The daemon's life: start-up checks, the socket, readiness, signals
//! (SIGTERM/SIGINT stop, SIGHUP reloads the config) and shutdown.

use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch as signal_watch;

use crate::api::{self, AppState};
use crate::auth::tokens::TokenStore;
use crate::config::{self, Config};
use crate::profile::{self, ProfilesRoot};
use crate::server;
use crate::service;
use crate::usage;
use crate::watch;

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] config::Error),
    /// The profiles root is unsafe or unusable.
    #[error(transparent)]
    Profile(#[from] profile::Error),
    /// A directory the daemon needs is unusable.
    #[error("{}: {reason}", path.display())]
    Setup {
        /// The path.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

fn setup(path: &Path, reason: impl Into<String>) -> Error {
    Error::Setup {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Runs the daemon with the config at `config_path` (or the default) until
/// SIGTERM or SIGINT.
pub async fn run(config_path: Option<PathBuf>) -> Result<(), Error> {
    match crate::fdlimit::raise_to_hard() {
        Ok(r) if r.before != r.now => {
            tracing::info!("open-file limit raised from {} to {}", r.before, r.now)
        }
        Ok(_) => {}
        Err(e) => tracing::warn!("{e}"),
    }
    let config = Config::load_or_default(config_path.as_deref())?;
    // Reload re-reads the file the daemon started from; if that file goes
    // away, a reload fails loudly instead of falling back to defaults.
    let reload_from = config_path.or_else(|| {
        let default = Path::new(config::DEFAULT_PATH);
        default.exists().then(|| default.to_owned())
    });
    check_pam_service(&config.auth.pam_service)?;
    prepare_dirs(&config)?;
    let root = ProfilesRoot::open(&config.paths.profiles_dir, config.limits.max_record_bytes)?;
    let sessions = config.paths.state_dir.join("sessions");
    let tokens = TokenStore::open(&sessions).map_err(|e| setup(&sessions, e.to_string()))?;
    let socket = config.paths.socket.clone();
    let listener = bind_socket(&socket)?;
    let tcp = match config.tcp.listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| setup(Path::new(&addr.to_string()), format!("cannot listen: {e}")))?,
        ),
        None => None,
    };
    let knowledge = open_knowledge(&config)?;
    let state = Arc::new(AppState::new(config, root, tokens, knowledge));
    let watching = watch::start(state.clone()).map_err(|e| {
        setup(
            state.root().path(),
            format!("{e}; or set watch.mode = \"poll\""),
        )
    })?;
    let (stop_tx, stop_rx) = signal_watch::channel(false);
    // Before the listeners: a request right after start finds the agents.
    let agents = crate::agents::start(state.clone());
    let mut servers = vec![tokio::spawn(server::serve_unix(
        listener,
        api::router(state.clone()),
        state.clone(),
        stop_rx.clone(),
    ))];
    tracing::info!("serving on {}", socket.display());
    if let Some(tcp) = tcp {
        let addr = tcp
            .local_addr()
            .map_err(|e| setup(Path::new("tcp"), e.to_string()))?;
        servers.push(tokio::spawn(server::serve_tcp(
            tcp,
            api::tcp_router(state.clone(), addr.port()),
            state.clone(),
            stop_rx.clone(),
        )));
        tracing::info!("serving on http://{addr}");
    }
    let flusher = tokio::spawn(flush_usage_every(state.clone(), stop_rx.clone()));
    let watchdog = service::start_watchdog(stop_rx.clone());
    service::ready();

    let sig = |kind| signal(kind).map_err(|e| setup(Path::new("signals"), e.to_string()));
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    let mut hup = sig(SignalKind::hangup())?;
    // The config is also re-read when its file changes (rule 7 keeps the
    // previous one when the new one is invalid).
    let (_config_watch, mut config_changed) = match reload_from.as_deref().map(watch::watch_file) {
        Some(Ok((w, rx))) => (Some(w), Some(rx)),
        Some(Err(e)) => {
            tracing::warn!("{e}; the config is re-read on SIGHUP only");
            (None, None)
        }
        None => (None, None),
    };
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&state, reload_from.as_deref()),
            changed = next_change(&mut config_changed) => {
                if changed.is_none() {
                    // The watch ended: SIGHUP still works.
                    config_changed = None;
                    continue;
                }
                // An editor's save is several events: read once they settle.
                tokio::time::sleep(CONFIG_SETTLE).await;
                if let Some(rx) = config_changed.as_mut() {
                    while rx.try_recv().is_ok() {}
                }
                reload(&state, reload_from.as_deref());
            }
        }
    }
    tracing::info!("stopping: finishing requests in flight");
    // Runs in progress get `[agents] shutdown_grace`, then their groups are
    // killed; no cycle starts another user.
    state.agents.request_stop();
    if let Err(e) = agents.await {
        tracing::error!("the agent scheduler failed: {e}");
    }
    service::stopping();
    let _ = stop_tx.send(true);
    // Event streams never end by themselves: end them so shutdown is not
    // held up by idle clients.
    state.events.close();
    for server in servers {
        if let Err(e) = server.await {
            tracing::error!("a server task failed: {e}");
        }
    }
    if let Err(e) = flusher.await {
        tracing::error!("the usage flusher failed: {e}");
    }
    if let Some(w) = watchdog
        && let Err(e) = w.await
    {
        tracing::error!("the watchdog task failed: {e}");
    }
    if let Err(e) = tokio::task::spawn_blocking(move || watching.stop()).await {
        tracing::error!("stopping the watcher failed: {e}");
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// How long a config change must be quiet before the file is read.
const CONFIG_SETTLE: std::time::Duration = std::time::Duration::from_millis(100);

/// The next change of the config file; never, without a watch.
async fn next_change(rx: &mut Option<tokio::sync::mpsc::UnboundedReceiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Refuses to start without the PAM service file: Linux-PAM silently falls
/// back to the `other` service, which may allow or deny everything.
fn check_pam_service(service: &str) -> Result<(), Error> {
    let path = Path::new("/etc/pam.d").join(service);
    if path.is_file() {
        Ok(())
    } else {
        Err(setup(
            &path,
            "the PAM service file is missing; install etc/pam.d/profiled there (or set auth.pam_service to an existing service)",
        ))
    }
}

/// How often request counts go to the users' usage logs.
const USAGE_FLUSH: std::time::Duration = std::time::Duration::from_secs(60);

/// Writes the request counts and the tokens' last use (and removes the
/// files of tokens found expired) every minute and once more at shutdown.
async fn flush_usage_every(state: Arc<AppState>, mut stop: signal_watch::Receiver<bool>) {
    loop {
        let stopping = tokio::select! {
            _ = tokio::time::sleep(USAGE_FLUSH) => false,
            _ = stop.changed() => true,
        };
        let st = state.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || {
            usage::flush(&st);
            st.auth.tokens.flush();
        })
        .await
        {
            tracing::error!("writing usage counts failed: {e}");
        }
        if stopping {
            return;
        }
    }
}

/// Re-reads the config; a bad one is refused and the old one stays. systemd
/// hears of the reload and of its end either way.
fn reload(state: &AppState, path: Option<&Path>) {
    service::reloading();
    apply_reload(state, path);
    service::ready();
}

fn apply_reload(state: &AppState, path: Option<&Path>) {
    let loaded = match path {
        Some(p) => Config::load(p),
        None => Config::load_or_default(None),
    };
    match loaded {
        Ok(new) => {
            let old = state.config();
            if new.paths != old.paths
                || new.knowledge != old.knowledge
                || new.limits.max_body_bytes != old.limits.max_body_bytes
                || new.limits.max_record_bytes != old.limits.max_record_bytes
            {
                tracing::warn!(
                    "config reloaded; changes to [paths], [knowledge], limits.max_body_bytes and limits.max_record_bytes take effect at the next restart"
                );
            } else {
                tracing::info!("config reloaded");
            }
            state.set_config(new);
        }
        Err(e) => tracing::error!("config reload refused, the previous config stays in force: {e}"),
    }
}

/// Opens the knowledge directory with the owner and mode `[knowledge]`
/// asks for (root:root 0755, or root:GROUP 1775 with a writers' group).
fn open_knowledge(config: &Config) -> Result<profile::SharedDir, Error> {
    let k = &config.knowledge;
    let group = match &k.group {
        None => None,
        Some(name) => Some(
            crate::accounts::group_id(name)
                .map_err(|e| setup(&k.dir, format!("knowledge.group: {e}")))?
                .ok_or_else(|| {
                    setup(
                        &k.dir,
                        format!(
                            "knowledge.group names {name:?}, which is no group; create it \
                             (groupadd {name}) or remove the setting"
                        ),
                    )
                })?,
        ),
    };
    Ok(profile::SharedDir::open(
        &k.dir,
        group,
        config.limits.max_record_bytes,
    )?)
}

/// Creates the state and runtime directories and checks that only root
/// can change them.
fn prepare_dirs(config: &Config) -> Result<(), Error> {
    let p = &config.paths;
    ensure_root_dir(&p.state_dir, 0o755)?;
    ensure_root_dir(&p.audit_dir(), 0o700)?;
    ensure_root_dir(&p.runtime_dir, 0o755)?;
    ensure_root_dir(&p.lock_dir, 0o700)?;
    // 0711: accounts reach their run's directory by its (unguessable) name
    // but cannot list the others'.
    ensure_root_dir(&p.runtime_dir.join("credentials"), 0o711)?;
    if let Some(parent) = p.socket.parent() {
        ensure_root_dir(parent, 0o755)?;
    }
    Ok(())
}

fn ensure_root_dir(path: &Path, mode: u32) -> Result<(), Error> {
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| setup(path, format!("cannot create it: {e}")))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| setup(path, format!("cannot chmod it: {e}")))?;
    }
    let md = std::fs::symlink_metadata(path).map_err(|e| setup(path, e.to_string()))?;
    if !md.is_dir() {
        return Err(setup(
            path,
            "is not a directory; remove it or change [paths] in the config",
        ));
    }
    if md.uid() != 0 {
        return Err(setup(
            path,
            format!(
                "is owned by uid {}, not root; fix: chown root:root {}",
                md.uid(),
                path.display()
            ),
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(setup(
            path,
            format!(
                "is group- or world-writable (mode {:04o}); fix: chmod go-w {}",
                md.mode() & 0o7777,
                path.display()
            ),
        ));
    }
    Ok(profile::check_ancestors(path)?)
}

/// Binds the API socket (mode 0666: the kernel's peer credentials, not the
/// socket's mode, decide who may do what), replacing a stale one.
fn bind_socket(path: &Path) -> Result<UnixListener, Error> {
    if let Ok(md) = std::fs::symlink_metadata(path) {
        if !md.file_type().is_socket() {
            return Err(setup(
                path,
                "exists and is not a socket; remove it or change paths.socket",
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(setup(
                path,
                "another profiled is already serving this socket",
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| setup(path, format!("cannot remove the stale socket: {e}")))?;
    }
    let listener =
        UnixListener::bind(path).map_err(|e| setup(path, format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| setup(path, format!("cannot chmod the socket: {e}")))?;
    Ok(listener)
}
