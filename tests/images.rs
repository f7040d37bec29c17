//! The images a bottle Pod runs, built here by images/build.sh (buildah on a debootstrapped
//! Debian, the Dockerfiles' real runtime stages, no registry) and checked as a node gets
//! them: each oci-archive's name and config against what the operator renders and what the
//! Dockerfile's runtime stage says, and its unpacked root filesystem by running, in a chroot
//! as the UID the Pod uses, the programs the Pod runs.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bottle_operator::contract::api::Bottle;
use bottle_operator::operator::render::{self, Settings};
use k8s_openapi::api::core::v1::Container;
use serde::Deserialize;
use serde_json::Value;

#[path = "support/images.rs"]
mod images;
use images::{Archive, read_set, run_build};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn built() -> &'static (PathBuf, BTreeMap<String, Archive>) {
    static BUILT: OnceLock<(PathBuf, BTreeMap<String, Archive>)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = run_build(&[]);
        let set = read_set(&dir);
        (dir, set)
    })
}

fn archive(name: &str) -> Archive {
    built()
        .1
        .get(name)
        .unwrap_or_else(|| panic!("build.sh made no {name} image"))
        .clone()
}

/// An archive unpacked: its OCI layout's annotations, image config and root filesystem.
struct Image {
    ref_name: String,
    config: Value,
    rootfs: PathBuf,
    dir: PathBuf,
}

/// The agent's tree alone is over a gigabyte: gone with the test. (The chroots' /dev and
/// /proc mounts lived in their own mount namespaces, so nothing here is mounted.)
impl Drop for Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Image {
    fn path(&self, p: &str) -> PathBuf {
        self.rootfs.join(p.trim_start_matches('/'))
    }

    fn env(&self) -> Vec<String> {
        self.config["config"]["Env"]
            .as_array()
            .map(|e| e.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// `argv` in the image's root filesystem as `uid`:`uid` with the image's environment, in
    /// a private mount (and PID) namespace that has /dev and /proc (claude, a compiled
    /// single-file binary, reads /proc/self/exe), as the container would.
    fn run(&self, uid: i64, argv: &[&str]) -> Output {
        let script = r#"set -e; r="$1"; shift
            mkdir -p "$r/dev" "$r/proc"
            mount --rbind /dev "$r/dev"
            mount -t proc proc "$r/proc"
            exec "$@""#;
        Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "--", "sh", "-c", script, "sh"])
            .arg(&self.rootfs)
            .args(["timeout", "120", "env", "-i"])
            .args(self.env())
            .arg("/usr/sbin/chroot")
            .arg(format!("--userspec={uid}:{uid}"))
            .arg(&self.rootfs)
            .args(argv)
            .output()
            .expect("unshare runs")
    }

    /// Like `run`, but it must succeed; its stdout and stderr.
    fn ok(&self, uid: i64, argv: &[&str]) -> String {
        let out = self.run(uid, argv);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{argv:?} as {uid}: {text}");
        text
    }

    fn assert_executable(&self, p: &str) {
        let m = std::fs::metadata(self.path(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        assert!(m.is_file(), "{p} is not a file");
        assert!(
            m.permissions().mode() & 0o111 == 0o111,
            "{p} is not executable by all: {:o}",
            m.permissions().mode()
        );
    }
}

/// Unpacks `name`'s archive with umoci (layers in order, whiteouts applied, owners kept).
fn unpack(name: &str) -> Image {
    let a = archive(name);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("images")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    let layout = dir.join("layout");
    std::fs::create_dir_all(&layout).unwrap();
    let st = Command::new("tar")
        .arg("-xf")
        .arg(&a.tar)
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(st.success(), "untar {}", a.tar.display());

    let index_file = layout.join("index.json");
    let mut index: Value = serde_json::from_slice(&std::fs::read(&index_file).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1, "{name}: one manifest per archive");
    let ref_name = manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let blob = |digest: &str| -> Value {
        let hex = digest.strip_prefix("sha256:").unwrap();
        serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap())
            .unwrap()
    };
    let manifest = blob(manifests[0]["digest"].as_str().unwrap());
    let config = blob(manifest["config"]["digest"].as_str().unwrap());

    // umoci takes a tag, not a full reference: name the one manifest `img` for it.
    index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] = "img".into();
    std::fs::write(&index_file, serde_json::to_vec(&index).unwrap()).unwrap();
    let bundle = dir.join("bundle");
    let out = Command::new("umoci")
        .arg("unpack")
        .arg("--image")
        .arg(format!("{}:img", layout.display()))
        .arg(&bundle)
        .output()
        .expect("umoci runs (images/build.sh installs it)");
    assert!(
        out.status.success(),
        "umoci unpack {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Image {
        ref_name,
        config,
        rootfs: bundle.join("rootfs"),
        dir,
    }
}

/// What the runtime (last) stage of a Dockerfile sets.
#[derive(Debug, Default)]
struct Stage {
    user: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    workdir: Option<String>,
    env: Vec<String>,
}

fn runtime_stage(name: &str) -> Stage {
    let text =
        std::fs::read_to_string(repo().join("images").join(format!("{name}.Dockerfile"))).unwrap();
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let mut s = Stage::default();
    let json = |v: &str| serde_json::from_str::<Vec<String>>(v).unwrap();
    for l in &lines[from + 1..] {
        let (op, rest) = l.split_once(' ').unwrap();
        let rest = rest.trim();
        match op {
            "USER" => s.user = Some(rest.into()),
            "ENTRYPOINT" => s.entrypoint = Some(json(rest)),
            "CMD" => s.cmd = Some(json(rest)),
            "WORKDIR" => s.workdir = Some(rest.into()),
            "ENV" => s.env.extend(rest.split_whitespace().map(str::to_owned)),
            _ => {}
        }
    }
    s
}

/// The image config holds what the Dockerfile's runtime stage sets; an ENTRYPOINT without
/// CMD leaves no CMD (as docker does: the base's CMD is reset).
fn assert_config_matches_dockerfile(name: &str, img: &Image) {
    let stage = runtime_stage(name);
    let c = &img.config["config"];
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
    };
    assert_eq!(
        c["User"].as_str().filter(|u| !u.is_empty()),
        stage.user.as_deref(),
        "{name}: user"
    );
    // Without ENTRYPOINT the base's stays (the agent keeps node's).
    if stage.entrypoint.is_some() {
        assert_eq!(
            strings(&c["Entrypoint"]),
            stage.entrypoint,
            "{name}: entrypoint"
        );
    }
    if stage.cmd.is_some() || stage.entrypoint.is_some() {
        assert_eq!(strings(&c["Cmd"]), stage.cmd, "{name}: cmd");
    }
    if stage.workdir.is_some() {
        assert_eq!(
            c["WorkingDir"].as_str(),
            stage.workdir.as_deref(),
            "{name}: workdir"
        );
    }
    let env = img.env();
    for e in &stage.env {
        assert!(env.contains(e), "{name}: env lacks {e}: {env:?}");
    }
    assert!(
        env.iter().any(|e| e.starts_with("PATH=/")),
        "{name}: no PATH: {env:?}"
    );
    assert_eq!(img.config["os"], "linux", "{name}");
    assert_eq!(img.config["architecture"], "amd64", "{name}");
}

/// The containers of the bottle Pod the operator renders for examples/bottle-full.yaml.
fn rendered_containers() -> Vec<Container> {
    let docs: Vec<Value> = serde_norway::Deserializer::from_str(
        &std::fs::read_to_string(repo().join("examples/bottle-full.yaml")).unwrap(),
    )
    .map(|d| Value::deserialize(d).unwrap())
    .collect();
    let bottle: Bottle =
        serde_json::from_value(docs.into_iter().find(|d| d["kind"] == "Bottle").unwrap()).unwrap();
    let policy = render::validate(&bottle, &Default::default()).unwrap();
    let spec = render::desired(&bottle, policy, &Settings::default(), "fp")
        .pod
        .spec
        .unwrap();
    spec.init_containers
        .unwrap_or_default()
        .into_iter()
        .chain(spec.containers)
        .collect()
}

fn run_as(c: &Container) -> i64 {
    c.security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .unwrap_or_else(|| panic!("{}: no runAsUser", c.name))
}

/// The name a node resolves a Pod's image to (docker.io for a bare Docker Hub name).
fn normalized(image: &str) -> String {
    let first = image.split('/').next().unwrap();
    if image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        image.into()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

#[test]
fn archives_carry_the_names_the_operator_and_chart_use() {
    let s = Settings::default();
    let chart: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("charts/bottle-operator/Chart.yaml")).unwrap(),
    )
    .unwrap();
    let values: Value = serde_norway::from_str(
        &std::fs::read_to_string(repo().join("charts/bottle-operator/values.yaml")).unwrap(),
    )
    .unwrap();
    let app = chart["appVersion"].as_str().unwrap();
    let operator = format!("{}:{app}", values["image"]["repository"].as_str().unwrap());
    for (name, image) in [
        ("operator", operator.as_str()),
        ("sidecar", s.sidecar_image.as_str()),
        ("agent", s.agent_image.as_str()),
        ("pipelock", s.pipelock_image.as_str()),
    ] {
        let a = archive(name);
        assert_eq!(a.reference, normalized(image), "{name}");
        assert!(
            a.tar.starts_with(&built().0),
            "{name}: {} outside the printed directory",
            a.tar.display()
        );
    }
    // The chart's defaults are the operator's: the same names with no values set.
    for (key, image) in [
        ("sidecarImage", &s.sidecar_image),
        ("agentImage", &s.agent_image),
    ] {
        let repo = values["bottle"][key]["repository"].as_str().unwrap();
        assert_eq!(&format!("{repo}:{app}"), image, "{key}");
    }
}

#[test]
fn sidecar_image_runs_every_sidecar_program_as_its_uid() {
    let img = unpack("sidecar");
    assert_eq!(img.ref_name, archive("sidecar").reference);
    assert_config_matches_dockerfile("sidecar", &img);
    for p in ["/usr/local/bin/bottle-sidecar", "/usr/local/bin/gitleaks"] {
        img.assert_executable(p);
    }

    // The passwd entries ssh needs, one per UID the Pod runs this image as.
    let passwd = std::fs::read_to_string(img.path("/etc/passwd")).unwrap();
    for (user, uid) in [
        ("egress", 1001),
        ("pipelock", 1002),
        ("cred-proxy", 1003),
        ("git-gate", 1004),
        ("ca-bundle", 1005),
    ] {
        assert!(
            passwd
                .lines()
                .any(|l| l.starts_with(&format!("{user}:x:{uid}:{uid}:"))),
            "no {user} ({uid}) in /etc/passwd:\n{passwd}"
        );
    }

    // Each container the operator gives this image starts its program as its UID.
    let sidecar_image = Settings::default().sidecar_image;
    let mut checked = 0;
    for c in rendered_containers()
        .iter()
        .filter(|c| c.image.as_deref() == Some(sidecar_image.as_str()))
    {
        let program = &c.command.as_ref().unwrap()[0];
        let sub = &c.args.as_ref().unwrap()[0];
        let help = img.ok(run_as(c), &[program, sub, "--help"]);
        assert!(help.contains("Usage"), "{}: {help}", c.name);
        checked += 1;
    }
    assert!(checked >= 5, "only {checked} sidecar containers");

    let uid = 65532; // the image's USER
    assert!(
        img.ok(uid, &["git", "--version"])
            .contains("git version 2.")
    );
    // (Built without the release's -X flags, gitleaks names no version.)
    assert!(
        img.ok(uid, &["gitleaks", "help"])
            .contains("scan git repositories")
    );
    assert!(
        img.ok(uid, &["iptables", "--version"])
            .contains("iptables v1.8")
    );
    assert!(img.ok(uid, &["ip6tables", "--version"]).contains("v1.8"));
    // ssh wants a passwd entry even for -V: git-gate's UID has one.
    assert!(img.ok(1004, &["ssh", "-V"]).contains("OpenSSH"));
    // git-gate's ssh resolves its own UID (-G stops after reading the configuration).
    let cfg = img.ok(1004, &["ssh", "-G", "example.com"]);
    assert!(cfg.contains("user git-gate"), "{cfg}");
    let no_user = img.run(4242, &["ssh", "-G", "example.com"]);
    assert!(
        !no_user.status.success(),
        "ssh ran for a UID without passwd"
    );
    // ca-bundle builds on the system roots.
    assert!(
        std::fs::metadata(img.path("/etc/ssl/certs/ca-certificates.crt"))
            .unwrap()
            .len()
            > 100_000
    );
}

#[test]
fn operator_image_runs_the_operator_non_root() {
    let img = unpack("operator");
    assert_eq!(img.ref_name, archive("operator").reference);
    assert_config_matches_dockerfile("operator", &img);
    img.assert_executable("/usr/local/bin/bottle-operator");
    let help = img.ok(65532, &["/usr/local/bin/bottle-operator", "--help"]);
    assert!(help.contains("--pipelock-image"), "{help}");
}

#[test]
fn pipelock_image_is_upstreams_layout() {
    let img = unpack("pipelock");
    assert_eq!(img.ref_name, archive("pipelock").reference);
    assert_config_matches_dockerfile("pipelock", &img);
    assert_eq!(
        img.config["config"]["Entrypoint"],
        serde_json::json!(["/pipelock"])
    );
    assert!(img.config["config"]["ExposedPorts"]["8888/tcp"].is_object());
    // scratch: the binary and the CA bundle, nothing else.
    let mut top: Vec<_> = std::fs::read_dir(&img.rootfs)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(top, ["etc", "pipelock"]);
    img.assert_executable("/pipelock");
    assert!(
        std::fs::metadata(img.path("/etc/ssl/certs/ca-certificates.crt"))
            .unwrap()
            .len()
            > 100_000
    );

    // The operator runs it with args only: the entrypoint must take them.
    let c = rendered_containers()
        .into_iter()
        .find(|c| c.name == "pipelock")
        .unwrap();
    assert!(c.command.is_none(), "{:?}", c.command);
    assert_eq!(c.args.as_ref().unwrap()[0], "run");
    let version = img.ok(run_as(&c), &["/pipelock", "version"]);
    assert!(version.contains("2.3.0"), "{version}");
    let help = img.ok(run_as(&c), &["/pipelock", "run", "--help"]);
    assert!(help.contains("--config"), "{help}");
}

#[test]
fn agent_image_runs_claude_as_uid_1000_in_workspace() {
    let img = unpack("agent");
    assert_eq!(img.ref_name, archive("agent").reference);
    assert_config_matches_dockerfile("agent", &img);
    let agent = rendered_containers()
        .into_iter()
        .find(|c| c.name == "agent")
        .unwrap();
    let uid = run_as(&agent);
    assert_eq!(uid, 1000);
    assert_eq!(img.config["config"]["User"], "1000:1000");
    // As the node image has it: the Dockerfile's CMD runs through node's entrypoint.
    assert_eq!(
        img.config["config"]["Entrypoint"],
        serde_json::json!(["docker-entrypoint.sh"])
    );

    let passwd = std::fs::read_to_string(img.path("/etc/passwd")).unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with("node:x:1000:1000:") && l.contains(":/home/node:")),
        "{passwd}"
    );
    for dir in ["/workspace", "/home/node"] {
        let m = std::fs::metadata(img.path(dir)).unwrap();
        assert!(m.is_dir(), "{dir}");
        assert_eq!((m.uid(), m.gid()), (1000, 1000), "{dir} owner");
    }

    assert_eq!(img.ok(uid, &["node", "--version"]).trim(), "v22.21.1");
    assert!(img.ok(uid, &["npm", "--version"]).starts_with("10."));
    let claude = img.ok(uid, &["claude", "--version"]);
    assert!(claude.contains("2.1.330"), "{claude}");
    // The entrypoint runs the command as given, as the image's user.
    let who = img.ok(
        uid,
        &["docker-entrypoint.sh", "sh", "-c", "id -u; echo $HOME"],
    );
    assert_eq!(who.trim(), "1000\n/home/node");
    for tool in [
        &["git", "--version"][..],
        &["python3", "--version"],
        &["rg", "--version"],
        &["jq", "--version"],
        &["cc", "--version"],
        &["ssh", "-V"],
    ] {
        img.ok(uid, tool);
    }
}

#[test]
fn a_second_build_hits_the_cache_and_leaves_the_store_clean() {
    let (dir, _) = built();
    let t0 = Instant::now();
    assert_eq!(&run_build(&[]), dir, "the same inputs gave another set");
    // A figure, not an assertion: the machine is shared.
    eprintln!("warm build.sh: {:.1}s", t0.elapsed().as_secs_f64());

    let out = Command::new("buildah")
        .args(["images", "--format", "{{.Name}}:{{.Tag}}"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&out.stdout);
    assert!(
        !left
            .lines()
            .any(|l| l.contains("bottle-build/") || l.contains("-base:")),
        "build.sh left images in the buildah store:\n{left}"
    );
}

fn tools_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("BOTTLE_TOOLS_BIN") {
        return dir.into();
    }
    let out = Command::new("bash")
        .arg(repo().join("tests/tools/install.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("install.sh runs");
    assert!(out.status.success(), "tests/tools/install.sh failed");
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
}

/// tests/install.rs lints the three Dockerfiles users build; these are the two build.sh adds.
#[test]
fn new_dockerfiles_pass_hadolint() {
    for name in ["pipelock", "node"] {
        let out = Command::new(tools_bin().join("hadolint"))
            .arg("--config")
            .arg(repo().join(".hadolint.yaml"))
            .arg(repo().join("images").join(format!("{name}.Dockerfile")))
            .output()
            .expect("hadolint runs");
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

/// With no build arguments, a Dockerfile builds what docker users have always got: the build
/// stages and the published bases; build.sh only ever swaps them by argument.
#[test]
fn dockerfile_defaults_are_the_docker_build() {
    let args = |name: &str| -> BTreeMap<String, String> {
        std::fs::read_to_string(repo().join("images").join(format!("{name}.Dockerfile")))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("ARG "))
            .filter_map(|a| a.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let sidecar = args("sidecar");
    assert_eq!(sidecar["RUNTIME_BASE"], "debian:12.12-slim");
    assert_eq!(sidecar["BINARIES"], "build");
    let operator = args("operator");
    assert_eq!(
        operator["RUNTIME_BASE"],
        "gcr.io/distroless/cc-debian12:nonroot"
    );
    assert_eq!(operator["BINARIES"], "build");
    assert_eq!(args("agent")["NODE_BASE"], "node:22.21.1-bookworm-slim");
    assert_eq!(args("agent")["NODE_EXTRA_CA_CERTS"], "");
    // build.sh's arguments name only those (a typo would silently build the default).
    let script = std::fs::read_to_string(repo().join("images/build.sh")).unwrap();
    let passed: Vec<&str> = script
        .split("--build-arg ")
        .skip(1)
        .filter_map(|s| s.trim_start_matches('"').split('=').next())
        .filter(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .collect();
    assert!(passed.len() >= 8, "{passed:?}");
    for arg in passed {
        let known = ["sidecar", "operator", "agent", "pipelock", "node"]
            .iter()
            .any(|n| args(n).contains_key(arg));
        assert!(known, "build.sh passes {arg}, which no Dockerfile declares");
    }
}

/// A containerd of its own (root, state and socket in a temporary directory), stopped on drop.
struct Containerd {
    child: std::process::Child,
    dir: PathBuf,
}

impl Containerd {
    fn start() -> Self {
        assert!(
            Command::new("containerd").arg("--version").output().is_ok(),
            "no containerd on PATH: tests/tools/install.sh installs it (Debian's containerd)"
        );
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("images-containerd");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let config = format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let c = Self { child, dir };
        let t0 = Instant::now();
        while c
            .ctr(&["version"])
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "containerd did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        c
    }

    fn ctr(&self, args: &[&str]) -> std::io::Result<Output> {
        Command::new("ctr")
            .arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .output()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args).unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "ctr {args:?}: {text}");
        text
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Its snapshots hold every imported image unpacked; all of it is under this directory.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the end-to-end suite does with the archives: `ctr -n k8s.io images import`, then
/// run them with runc, on this machine's containerd (tests/tools/install.sh installs it).
#[test]
fn archives_import_into_containerd_under_their_names_and_run() {
    let ctd = Containerd::start();
    for name in ["operator", "sidecar", "pipelock", "agent"] {
        let a = archive(name);
        ctd.ok(&["images", "import", a.tar.to_str().unwrap()]);
        let listed = ctd.ok(&["images", "ls", "-q"]);
        assert!(
            listed.lines().any(|l| l == a.reference),
            "{name}: {} not among\n{listed}",
            a.reference
        );
    }
    let run = |name: &str, argv: &[&str]| -> String {
        let image = archive(name).reference;
        let mut args = vec!["run", "--rm", image.as_str(), name];
        args.extend_from_slice(argv);
        ctd.ok(&args)
    };
    assert!(run("operator", &["/usr/local/bin/bottle-operator", "--version"]).contains("0.1.0"));
    assert!(run("sidecar", &["/usr/local/bin/bottle-sidecar", "--version"]).contains("0.1.0"));
    assert!(run("pipelock", &["/pipelock", "version"]).contains("2.3.0"));
    // With no args, the image's own user and workdir.
    let agent = run("agent", &["sh", "-c", "id -u; pwd; claude --version"]);
    assert!(
        agent.starts_with("1000\n/workspace\n") && agent.contains("2.1.330"),
        "{agent}"
    );
}
