//! Every pipelock config we render is one the real pipelock 2.3.0 accepts (`pipelock check`),
//! and the DLP dialect check (`model::dlp_regex`) is judged against the real Go RE2: what we
//! accept, Go compiles and matches the same way, pipelock loads and gitleaks loads.
//!
//! Needs `BOTTLE_TOOLS_BIN` (pipelock, gitleaks) and `go`; it fails, never skips, without them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use bottle_operator::contract::api::{Bottle, BottleSpec, DlpPattern};
use bottle_operator::contract::config::git_gate::GitGateConfig;
use bottle_operator::contract::config::pipelock::PipelockConfig;
use bottle_operator::contract::model::{Policy, dlp_regex};
use bottle_operator::operator::render::{ca, config_map};
use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, TestRunner};

#[path = "support/bottles.rs"]
mod bottles;
use bottles::{bottle, regex_source};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool from `$BOTTLE_TOOLS_BIN`, or a panic saying how to get it.
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("BOTTLE_TOOLS_BIN").unwrap_or_else(|_| {
        panic!(
            "BOTTLE_TOOLS_BIN is unset: this test runs the real {name}; \
             export BOTTLE_TOOLS_BIN=$(bash tests/tools/install.sh | tail -n1)"
        )
    });
    let p = Path::new(&dir).join(name);
    assert!(
        p.is_file(),
        "{} is missing: run bash tests/tools/install.sh (it builds {name})",
        p.display()
    );
    p
}

/// A temp dir holding a real bottle CA, where configs are written and checked.
struct Checker {
    dir: tempfile::TempDir,
    pipelock: PathBuf,
    gitleaks: PathBuf,
}

impl Checker {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let material = ca::generate("check", "bottle").unwrap();
        let cert = dir.path().join("ca.crt");
        let key = dir.path().join("ca.key");
        std::fs::write(&cert, &material.cert_pem).unwrap();
        std::fs::write(&key, &material.key_pem).unwrap();
        // The Pod mounts the key with mode 0440 (render/pod.rs): the same here.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o440)).unwrap();
        std::fs::create_dir(dir.path().join("empty")).unwrap();
        Self {
            dir,
            pipelock: tool("pipelock"),
            gitleaks: tool("gitleaks"),
        }
    }

    /// Runs `pipelock check` on `cfg`; Err carries pipelock's output.
    fn check(&self, cfg: &PipelockConfig) -> Result<(), String> {
        let mut cfg = cfg.clone();
        // The only change: the CA paths point at this temp dir instead of the Pod's mount
        // (pipelock checks the files exist, parse, and the key's mode); the rest is checked
        // exactly as rendered, whatever fields the renderer writes.
        cfg.tls_interception.ca_cert = self.path("ca.crt");
        cfg.tls_interception.ca_key = self.path("ca.key");
        let file = self.dir.path().join("pipelock.yaml");
        std::fs::write(&file, serde_norway::to_string(&cfg).unwrap()).unwrap();
        let out = Command::new(&self.pipelock)
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}{}\n--- config ---\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&file).unwrap()
            ))
        }
    }

    /// Loads git-gate's gitleaks config (when it has one) the way the push scan would.
    fn gitleaks_loads(&self, gate: &GitGateConfig) -> Result<(), String> {
        let Some(toml) = gate.gitleaks_toml() else {
            return Ok(());
        };
        let file = self.dir.path().join("gitleaks.toml");
        std::fs::write(&file, &toml).unwrap();
        let out = Command::new(&self.gitleaks)
            .args(["dir", "--no-banner", "--log-level", "error", "--config"])
            .arg(&file)
            .arg(self.dir.path().join("empty"))
            .output()
            .unwrap();
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{}\n--- config ---\n{toml}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

fn policy_of(spec: &BottleSpec) -> Policy {
    Policy::from_spec(spec).unwrap_or_else(|e| panic!("valid bottle refused: {e}\n{spec:#?}"))
}

/// Bottles of a YAML file (multi-document; other kinds skipped).
fn bottles_in(path: &Path) -> Vec<(String, BottleSpec)> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .filter(|d| d.contains("kind: Bottle"))
        .map(|d| {
            let b: Bottle = serde_norway::from_str(d).unwrap();
            (
                format!("{} ({})", path.display(), b.metadata.name.unwrap()),
                b.spec,
            )
        })
        .collect()
}

#[test]
fn every_example_and_render_fixture_bottle_renders_a_config_pipelock_accepts() {
    let checker = Checker::new();
    let mut files: Vec<PathBuf> = ["examples", "tests/fixtures"]
        .iter()
        .flat_map(|d| std::fs::read_dir(repo().join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let bottles: Vec<_> = files.iter().flat_map(|f| bottles_in(f)).collect();
    assert!(
        bottles.len() >= 3,
        "examples and fixtures found: {bottles:?}"
    );
    for (name, spec) in &bottles {
        let p = policy_of(spec);
        checker
            .check(&config_map::pipelock_config(&p))
            .unwrap_or_else(|e| panic!("{name}: pipelock check refused it:\n{e}"));
        checker
            .gitleaks_loads(&config_map::git_gate_config(&p))
            .unwrap_or_else(|e| panic!("{name}: gitleaks refused git-gate's rules:\n{e}"));
    }
    println!(
        "pipelock check accepted {} example/fixture configs",
        bottles.len()
    );
}

/// The positive control: the checker does refuse what pipelock refuses, so "accepted" above
/// means something.
#[test]
fn the_checker_reports_what_pipelock_refuses() {
    let checker = Checker::new();
    let mut spec = BottleSpec::default();
    spec.egress.allow = vec!["example.com".into()];
    let mut cfg = config_map::pipelock_config(&policy_of(&spec));
    checker.check(&cfg).unwrap();
    cfg.dlp
        .patterns
        .push(bottle_operator::contract::config::pipelock::DlpPattern {
            name: "too many".into(),
            regex: "a{2000}".into(),
            severity: "critical".into(),
        });
    let e = checker.check(&cfg).unwrap_err();
    assert!(e.contains("invalid repeat count"), "{e}");
}

#[test]
fn generated_valid_bottles_render_configs_pipelock_and_gitleaks_accept() {
    let checker = Checker::new();
    let mut runner = TestRunner::new(PropConfig {
        cases: 300,
        failure_persistence: None,
        ..PropConfig::default()
    });
    let checked = std::cell::Cell::new(0u32);
    let with_patterns = std::cell::Cell::new(0u32);
    runner
        .run(&bottle(), |spec| {
            let p = Policy::from_spec(&spec)
                .map_err(|e| TestCaseError::fail(format!("valid bottle refused: {e}")))?;
            checker
                .check(&config_map::pipelock_config(&p))
                .map_err(|e| TestCaseError::fail(format!("pipelock check refused:\n{e}")))?;
            checker
                .gitleaks_loads(&config_map::git_gate_config(&p))
                .map_err(|e| TestCaseError::fail(format!("gitleaks refused:\n{e}")))?;
            checked.set(checked.get() + 1);
            with_patterns.set(with_patterns.get() + u32::from(!p.dlp_patterns.is_empty()));
            Ok(())
        })
        .unwrap();
    println!(
        "pipelock check accepted {} generated configs ({} with DLP patterns)",
        checked.get(),
        with_patterns.get()
    );
}

// ---------------------------------------------------------------- the RE2 judge

/// The Go program of `tests/tools/re2check`, built once, asked over pipes.
struct Re2 {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

/// Go's verdict on one pattern: `Err` if it does not compile, else matches over the corpus.
fn go_judge(re: &str, corpus: &[String]) -> Result<Vec<bool>, String> {
    static JUDGE: OnceLock<Mutex<Re2>> = OnceLock::new();
    let judge = JUDGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("re2check");
        let go = ["go", "/usr/local/go/bin/go"]
            .into_iter()
            .find(|g| Command::new(g).arg("version").output().is_ok())
            .expect("go is needed to build tests/tools/re2check (the RE2 judge)");
        let out = Command::new(go)
            .args(["build", "-o"])
            .arg(&bin)
            .arg(".")
            .current_dir(repo().join("tests/tools/re2check"))
            .env("GOFLAGS", "-mod=mod")
            .env("GOTOOLCHAIN", "local")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "go build re2check: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut child = Command::new(&bin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Mutex::new(Re2 {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            _child: child,
            _dir: dir,
        })
    });
    let mut j = judge.lock().unwrap();
    let req = serde_json::json!({"re": re, "corpus": corpus});
    writeln!(j.stdin, "{req}").unwrap();
    j.stdin.flush().unwrap();
    let mut line = String::new();
    j.stdout.read_line(&mut line).unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    if v["ok"].as_bool() == Some(true) {
        Ok(v["matches"]
            .as_array()
            .map(|a| a.iter().map(|b| b.as_bool().unwrap()).collect())
            .unwrap_or_else(|| vec![false; 0]))
    } else {
        Err(v["err"].as_str().unwrap_or_default().to_string())
    }
}

/// ASCII without the vertical tab: the two places the dialects still differ by design
/// (Unicode-aware `\d \w \s \b` in Rust, `\s` without `\v` in Go; see `model::dlp_regex`).
fn corpus() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop::collection::vec(
            prop::sample::select(vec![
                'a', 'A', 'b', 'B', 'c', '0', '1', '_', '-', '.', ' ', '<', '>', '&', '[', ']',
                '\n', '\t', 'x', 'e',
            ]),
            0..10,
        )
        .prop_map(|cs| cs.into_iter().collect()),
        24,
    )
}

#[test]
fn what_our_dialect_accepts_go_compiles_and_matches_alike_and_pipelock_and_gitleaks_load() {
    let checker = Checker::new();
    let mut base = BottleSpec::default();
    base.egress.allow = vec!["example.com".into()];
    let mut runner = TestRunner::new(PropConfig {
        cases: 600,
        failure_persistence: None,
        ..PropConfig::default()
    });
    // (accepted by us, compiled by Go, refused by us but compiled by Go: "reads differently")
    let counts = Mutex::new((0u32, 0u32, 0u32, 0u32));
    runner
        .run(&(regex_source(), corpus()), |(re, corpus)| {
            let ours = dlp_regex::check(&re);
            let go = go_judge(&re, &corpus);
            let mut c = counts.lock().unwrap();
            c.0 += 1;
            match (&ours, &go) {
                (Ok(()), Err(e)) => {
                    return Err(TestCaseError::fail(format!(
                        "we accept {re:?} but Go refuses it: {e}"
                    )));
                }
                (Ok(()), Ok(go_matches)) => {
                    c.1 += 1;
                    let rust = regex::RegexBuilder::new(&re)
                        .case_insensitive(true)
                        .build()
                        .map_err(|e| TestCaseError::fail(format!("{re:?}: {e}")))?;
                    for (s, g) in corpus.iter().zip(go_matches) {
                        prop_assert_eq!(
                            rust.is_match(s),
                            *g,
                            "{:?} on {:?}: Rust and Go (?i) disagree",
                            re,
                            s
                        );
                    }
                    // Every accepted pattern loads in pipelock and in gitleaks too.
                    let mut spec = base.clone();
                    spec.dlp.patterns = vec![DlpPattern {
                        name: "generated".into(),
                        regex: re.clone(),
                    }];
                    let p =
                        Policy::from_spec(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if c.1 <= 150 {
                        checker
                            .check(&config_map::pipelock_config(&p))
                            .map_err(TestCaseError::fail)?;
                        checker
                            .gitleaks_loads(&config_map::git_gate_config(&p))
                            .map_err(TestCaseError::fail)?;
                        c.3 += 1;
                    }
                }
                (Err(_), Ok(_)) => c.2 += 1,
                (Err(_), Err(_)) => {}
            }
            Ok(())
        })
        .unwrap();
    let (all, accepted, differ, loaded) = *counts.lock().unwrap();
    println!(
        "RE2 judge: {all} generated regexes, {accepted} accepted by us (all compile in Go and \
         match alike), {differ} refused by us that Go compiles (read differently), {} refused \
         by both; {loaded} accepted ones loaded by pipelock check and gitleaks",
        all - accepted - differ
    );
    // Both sides of the implication were exercised.
    assert!(accepted >= 50 && differ >= 50, "{accepted} / {differ}");
}

/// pipelock's strict mode refuses an empty allowlist, which is why a Bottle with no hosts
/// renders a name that never resolves (RFC 6761 `.invalid`) instead.
#[test]
fn strict_mode_refuses_an_empty_allowlist_so_a_bottle_without_hosts_renders_a_placeholder() {
    let checker = Checker::new();
    let mut cfg = config_map::pipelock_config(&policy_of(&BottleSpec::default()));
    assert_eq!(cfg.api_allowlist, ["nothing.invalid"]);
    checker.check(&cfg).unwrap();
    cfg.api_allowlist.clear();
    let e = checker.check(&cfg).unwrap_err();
    assert!(
        e.contains("strict mode requires at least one domain in api_allowlist"),
        "{e}"
    );
}
