//! The bottle Pod as this test runs it: one network namespace (loopback up, the origin's
//! documentation address 203.0.113.10 on `lo`, names in `/etc/netns/<ns>/hosts`), each
//! container a process in it with its volumes bind-mounted at the Pod's paths
//! (`in-pod.sh`), and a real HTTPS origin. Everything is removed on drop, also on failure.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::control_plane::spawn_tied;

/// Where the origin listens (TEST-NET-3: never routed anywhere).
pub const ORIGIN_ADDR: &str = "203.0.113.10";

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The namespace, its processes and its scratch directory.
pub struct Pod {
    /// Network namespace name.
    pub ns: String,
    /// Scratch directory (volumes, logs, keys).
    pub dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            for (name, _) in &self.children {
                let log = std::fs::read_to_string(self.log(name)).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("--- {name} (last 15 lines) ---");
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.ns));
    }
}

impl Pod {
    /// Makes the namespace; `hosts` are the names that resolve to the origin.
    pub fn new(hosts: &[&str]) -> Self {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "the live pipelock test needs root (network and mount namespaces)"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let ns = format!(
            "blive{}{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let pod = Pod {
            ns: ns.clone(),
            dir: tempfile::tempdir().unwrap(),
            children: Vec::new(),
        };
        run(&["ip", "netns", "add", &ns]);
        pod.exec_ok(&["ip", "link", "set", "lo", "up"]);
        pod.exec_ok(&[
            "ip",
            "addr",
            "add",
            &format!("{ORIGIN_ADDR}/32"),
            "dev",
            "lo",
        ]);
        let etc = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc).unwrap();
        let mut names = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for h in hosts {
            names.push_str(&format!("{ORIGIN_ADDR} {h}\n"));
        }
        std::fs::write(etc.join("hosts"), names).unwrap();
        pod
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The combined stdout/stderr file of a process started with [`Pod::spawn`].
    pub fn log(&self, name: &str) -> PathBuf {
        self.path(&format!("{name}.log"))
    }

    /// Runs a command in the namespace (no mounts), returning its output.
    pub fn exec(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .output()
            .unwrap()
    }

    fn exec_ok(&self, args: &[&str]) {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts one "container": `cmd` in the namespace with `mounts` (host dir, Pod path)
    /// bind-mounted, stdout and stderr into [`Pod::log`]`(name)`.
    pub fn spawn(
        &mut self,
        name: &str,
        mounts: &[(&Path, &str)],
        env: &[(&str, &str)],
        cmd: &[&str],
    ) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipelock_live/in-pod.sh");
        let spec = mounts
            .iter()
            .map(|(src, dst)| format!("{}:{dst}", src.display()))
            .collect::<Vec<_>>()
            .join(",");
        // Appended to: a restarted container's log follows its predecessor's, as in `kubectl logs -p`.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))
            .unwrap();
        let scratch = self.path(&format!("mnt-{name}-{}", self.children.len()));
        let child = spawn_tied(
            Command::new("sh")
                .arg(&script)
                .arg(&self.ns)
                .arg(&scratch)
                .arg(&spec)
                .args(cmd)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        )
        .unwrap();
        self.children.push((name.to_string(), child));
    }

    /// Stops a process started with [`Pod::spawn`] (SIGKILL, like a deleted Pod's container).
    pub fn stop(&mut self, name: &str) {
        let i = self
            .children
            .iter()
            .position(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let (_, mut c) = self.children.remove(i);
        let _ = c.kill();
        let _ = c.wait();
    }

    /// Starts the origin (`origin.py`) on 203.0.113.10:443 and waits for it to listen.
    pub fn start_origin(&mut self, cert: &Path, key: &Path, requests: &Path) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pipelock_live/origin.py");
        let mut child = spawn_tied(
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "python3"])
                .arg(&script)
                .args([ORIGIN_ADDR, "443"])
                .arg(cert)
                .arg(key)
                .arg(requests)
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit()),
        )
        .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the origin did not start");
        self.children.push(("origin".into(), child));
    }

    /// An agent request through egress (`127.0.0.1:9090`) with curl: (status, body), where
    /// a refused CONNECT gives egress's CONNECT status and a failed transfer (TLS error,
    /// reset) gives 0.
    pub fn agent_get(&self, url: &str, cacert: &Path) -> (u16, String) {
        let out = self.exec(&[
            "curl",
            "-sS",
            "-m",
            "10",
            "--proxy",
            "http://127.0.0.1:9090",
            "--cacert",
            cacert.to_str().unwrap(),
            "-w",
            "\n%{http_code} %{http_connect}",
            url,
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, codes) = text.rsplit_once('\n').unwrap_or(("", "0 0"));
        let mut it = codes
            .split(' ')
            .map(|c| c.trim().parse::<u16>().unwrap_or(0));
        let (status, connect) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        // curl reports the CONNECT answer separately; a refused tunnel has no HTTP status.
        let code = if status == 0 && connect != 200 {
            connect
        } else {
            status
        };
        (code, body.to_string())
    }

    /// Polls a plain-HTTP URL inside the namespace until it answers 200; returns the body.
    pub fn wait_http(&self, url: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.exec(&["curl", "-sf", "-m", "2", url]);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(Instant::now() < deadline, "{url} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens a server-sent-event stream through egress; each line read is sent, with the
    /// time it arrived, to the returned channel. The curl process belongs to the Pod.
    pub fn open_stream(
        &mut self,
        url: &str,
        cacert: &Path,
    ) -> std::sync::mpsc::Receiver<(Instant, String)> {
        let mut child = spawn_tied(
            Command::new("ip")
                .args(["netns", "exec", &self.ns, "curl", "-s", "-N", "-m", "300"])
                .args(["--proxy", "http://127.0.0.1:9090", "--cacert"])
                .arg(cacert)
                .arg(url)
                .stdout(Stdio::piped())
                // It dies with the first Pod's egress, which the test stops on purpose.
                .stderr(Stdio::null()),
        )
        .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        self.children.push(("sse-client".into(), child));
        rx
    }
}
