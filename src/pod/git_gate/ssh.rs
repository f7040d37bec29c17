//! SSH to the upstreams: the command git runs (the pinned host keys, the remote's key), and
//! one shared connection per upstream identity. The agent's push is a fetch (the mirror
//! refresh) and then, from the hook, a push upstream: with a master connection the second
//! skips the handshake. Masters are children of git-gate, so they are reaped (git-gate is
//! PID 1 of its container, where `ControlPersist`'s daemonised masters would be orphans left
//! as zombies), and they close after a quiet spell.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::contract::config::git_gate::{GitGateConfig, GitRemote};

/// How long a master connection stays open after its last use.
pub const MASTER_IDLE: Duration = Duration::from_secs(300);
/// How long ssh may take to connect (and a master to be ready).
const CONNECT_TIMEOUT_SECS: u64 = 15;

/// How git-gate reaches one remote's upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ssh {
    /// `GIT_SSH_COMMAND`: joins the master connection when there is one, else connects.
    pub command: String,
    /// The master's socket, named by a hash of the key, the pinned host keys and the
    /// upstream: a changed pin or upstream never reuses a connection made under the old one.
    pub socket: PathBuf,
    /// Options shared by the command and the master.
    options: Vec<String>,
    /// `user@host` and port of the upstream, when its URL names them.
    target: Option<(String, u16)>,
}

/// `user@host` and port of an `ssh://user@host[:port]/path` URL.
fn target(upstream: &str) -> Option<(String, u16)> {
    let authority = upstream.strip_prefix("ssh://")?.split('/').next()?;
    let (user, hostport) = authority.rsplit_once('@')?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()) => {
            (h, p.parse().ok()?)
        }
        _ => (hostport, 22),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!user.is_empty() && !host.is_empty()).then(|| (format!("{user}@{host}"), port))
}

/// Writes the remote's key and pinned host keys where ssh accepts them (ssh refuses keys
/// readable by others, and Secret volumes are group-readable: 0600 copies) and says how to
/// reach its upstream.
pub fn for_remote(cfg: &GitGateConfig, r: &GitRemote) -> anyhow::Result<Ssh> {
    use std::os::unix::fs::PermissionsExt;
    let dir = Path::new(&cfg.state_dir).join("ssh").join(&r.name);
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let key = std::fs::read(&r.ssh_key_file)
        .with_context(|| format!("reading SSH key {}", r.ssh_key_file))?;
    let write = |name: &str, body: &[u8]| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        crate::pod::core::atomic_file::write(&p, body, 0o600)?;
        Ok(p)
    };
    let key_path = write("id", &key)?;
    let kh_path = write("known_hosts", r.known_hosts.as_bytes())?;
    let id = {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        for part in [&key[..], r.known_hosts.as_bytes(), r.upstream.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        hex::encode(&h.finalize()[..8])
    };
    let socket = dir.join(format!("mux-{id}"));
    let options: Vec<String> = [
        "-i".to_string(),
        key_path.display().to_string(),
        "-o".into(),
        "IdentitiesOnly=yes".into(),
        "-o".into(),
        format!("UserKnownHostsFile={}", kh_path.display()),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        format!("ConnectTimeout={CONNECT_TIMEOUT_SECS}"),
        "-o".into(),
        format!("ControlPath={}", socket.display()),
    ]
    .into();
    let command = format!("ssh {} -o ControlMaster=no", options.join(" "));
    Ok(Ssh {
        command,
        socket,
        options,
        target: target(&r.upstream),
    })
}

/// The master connections git-gate holds, by socket.
#[derive(Default)]
pub struct Masters {
    open: Mutex<HashMap<PathBuf, (Child, Instant)>>,
}

impl Masters {
    /// Makes sure a master connection serves `ssh`, starting one if none runs, and marks it
    /// used. Returns once its socket is ready; when it cannot start, git connects on its own
    /// (and reports the same failure itself).
    pub fn ensure(&self, ssh: &Ssh) {
        let Some((dest, port)) = &ssh.target else {
            return;
        };
        let mut open = self.open.lock().expect("masters lock");
        if let Some((child, used)) = open.get_mut(&ssh.socket) {
            if matches!(child.try_wait(), Ok(None)) && ssh.socket.exists() {
                *used = Instant::now();
                return;
            }
            // Gone (upstream closed it): reap it and start another.
            let _ = child.kill();
            let _ = child.wait();
            open.remove(&ssh.socket);
        }
        let _ = std::fs::remove_file(&ssh.socket);
        let log = ssh.socket.with_extension("log");
        let spawned = std::fs::File::create(&log).and_then(|err| {
            Command::new("ssh")
                .args(&ssh.options)
                .args([
                    "-o",
                    "ControlMaster=yes",
                    "-o",
                    "ControlPersist=no",
                    "-o",
                    "ServerAliveInterval=30",
                    "-N",
                    "-p",
                    &port.to_string(),
                    dest,
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
        });
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => return tracing::warn!(error = %e, "cannot start an SSH master"),
        };
        let started = Instant::now();
        while !ssh.socket.exists() {
            let failed = !matches!(child.try_wait(), Ok(None));
            if failed || started.elapsed() > Duration::from_secs(CONNECT_TIMEOUT_SECS) {
                let _ = child.kill();
                let _ = child.wait();
                let why = std::fs::read_to_string(&log).unwrap_or_default();
                tracing::warn!(upstream = %dest, error = why.trim(), "SSH master did not start; connecting per command");
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        open.insert(ssh.socket.clone(), (child, Instant::now()));
    }

    /// Closes the masters unused for `idle`.
    pub fn close_idle(&self, idle: Duration) {
        let mut open = self.open.lock().expect("masters lock");
        open.retain(|socket, (child, used)| {
            let keep = used.elapsed() < idle && matches!(child.try_wait(), Ok(None));
            if !keep {
                let _ = child.kill();
                let _ = child.wait();
                let _ = std::fs::remove_file(socket);
            }
            keep
        });
    }

    /// How many masters are open.
    pub fn len(&self) -> usize {
        self.open.lock().expect("masters lock").len()
    }

    /// Whether no master is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Masters {
    fn drop(&mut self) {
        self.close_idle(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_come_from_ssh_urls() {
        assert_eq!(
            target("ssh://git@github.com:22/o/r.git"),
            Some(("git@github.com".into(), 22))
        );
        assert_eq!(
            target("ssh://root@localhost:2222/tmp/x/repo.git"),
            Some(("root@localhost".into(), 2222))
        );
        assert_eq!(
            target("ssh://git@[::1]:2200/r.git"),
            Some(("git@::1".into(), 2200))
        );
        assert_eq!(
            target("ssh://git@host/r.git"),
            Some(("git@host".into(), 22))
        );
        assert_eq!(target("git@host:r.git"), None);
        assert_eq!(target("ssh://host/r.git"), None);
    }
}
