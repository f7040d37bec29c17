//! git-gate: push latency through the gate vs a direct SSH push to the same upstream, and
//! scan throughput of a push through the gate vs running gitleaks by hand on the same range.
//! Prints a table; asserts nothing about time. Run with `scripts/bench.sh git_gate`.

#[path = "../tests/support/control_plane.rs"]
mod control_plane;
#[path = "../tests/support/git_world.rs"]
mod git_world;

use std::process::Command;
use std::time::{Duration, Instant};

use git_world::*;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let w = World::new();
    let (_gate, _port, gitconfig, _log) = w.gate(&w.known_hosts, vec![]);
    let gated = Agent::clone(&w, &gitconfig, "gated");

    // A direct client: same upstream, its own SSH key and pinned host key, no gate.
    let kh = w.dir.path().join("direct_known_hosts");
    std::fs::write(&kh, &w.known_hosts).unwrap();
    let ssh = format!(
        "ssh -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} -o StrictHostKeyChecking=yes -o BatchMode=yes",
        w.client_key.display(),
        kh.display()
    );
    let direct_dir = w.dir.path().join("direct");
    ok(
        Command::new("git")
            .args(["clone", "-q", &w.url()])
            .arg(&direct_dir)
            .env("GIT_SSH_COMMAND", &ssh)
            .output()
            .unwrap(),
        "direct clone",
    );
    let direct_git = |args: &[&str]| {
        let mut c = git_cmd(&direct_dir, None);
        c.env("GIT_SSH_COMMAND", &ssh).args(args);
        ok(c.output().unwrap(), "direct git")
    };
    direct_git(&["checkout", "-q", "-b", "direct"]);

    let rounds = 7;
    let (mut via_gate, mut via_ssh) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        gated.commit("small.txt", &format!("change {i}\n"), "small change");
        let t = Instant::now();
        let (pushed, out) = gated.push(&["main"]);
        assert!(pushed, "{out}");
        via_gate.push(t.elapsed());

        std::fs::write(direct_dir.join("small.txt"), format!("change {i}\n")).unwrap();
        direct_git(&["add", "small.txt"]);
        direct_git(&["commit", "-q", "-m", "small change"]);
        let t = Instant::now();
        direct_git(&["push", "-q", "origin", "direct"]);
        via_ssh.push(t.elapsed());
    }
    let (g, d) = (median(via_gate.clone()), median(via_ssh.clone()));

    // Scan throughput: one push of ~20 MB of text.
    let body: String = (0..560_000)
        .map(|i| format!("{i:08} lorem ipsum dolor sit amet\n"))
        .collect();
    let mb = body.len() as f64 / (1 << 20) as f64;
    let before = ok(gated.git(&["rev-parse", "HEAD"]), "rev-parse");
    let new = gated.commit("big.txt", &body, "big");
    let t = Instant::now();
    let (pushed, out) = gated.push(&["main"]);
    assert!(pushed, "{out}");
    let gate_push = t.elapsed();
    let t = Instant::now();
    let out = Command::new(&w.gitleaks)
        .args([
            "git",
            "--no-banner",
            "--redact",
            "--log-level",
            "error",
            &format!("--log-opts={new} --not {before}"),
        ])
        .arg(&gated.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let by_hand = t.elapsed();

    println!(
        "git_gate: {rounds} small pushes each way, interleaved, same sshd upstream on loopback"
    );
    println!("| push | median | min | max |");
    println!("|---|---:|---:|---:|");
    for (name, v, m) in [
        ("through git-gate (scan + forward)", &via_gate, g),
        ("direct over SSH", &via_ssh, d),
    ] {
        println!(
            "| {name} | {} | {} | {} |",
            ms(m),
            ms(*v.iter().min().unwrap()),
            ms(*v.iter().max().unwrap())
        );
    }
    println!(
        "gate/direct median ratio: {:.2}",
        g.as_secs_f64() / d.as_secs_f64()
    );
    println!("| {mb:.1} MB push | time | MB/s |");
    println!("|---|---:|---:|");
    println!(
        "| whole push through git-gate | {} | {:.1} |",
        ms(gate_push),
        mb / gate_push.as_secs_f64()
    );
    println!(
        "| gitleaks by hand on the same range | {} | {:.1} |",
        ms(by_hand),
        mb / by_hand.as_secs_f64()
    );
}
