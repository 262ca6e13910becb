//! Two processes of one cluster on two "machines": network namespaces joined by a veth pair
//! (`scripts/netns.sh`, set up by scripts/test.sh as root), each process in its own, talking
//! over the pair's addresses with a hostfile. Their views equal one process's.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::*;

fn netns_script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netns.sh")
}

/// The namespaces, or a clear failure: this test needs them.
fn namespaces() {
    let status = Command::new(netns_script()).arg("status").stdout(Stdio::null()).status().unwrap();
    assert!(
        status.success(),
        "the network namespaces chatflow-a and chatflow-b are not up: run `scripts/netns.sh up` as root \
         (scripts/test.sh does)"
    );
}

#[test]
fn two_processes_in_two_network_namespaces_equal_one() {
    namespaces();
    let dir = tempfile::tempdir().unwrap();
    let input = produce_mixed(dir.path(), 20000, 97, b"");
    let flags = ["--batch", "700", "--mention-edges"];
    let single = dir.path().join("single");
    let mut args = vec!["run", "--replay", path_str(&input), "--out", path_str(&single)];
    args.extend(flags);
    run_ok(&args);
    let views: Vec<&str> = dataflows::CATALOG.iter().map(|v| v.name).collect();
    let expected = read_views(&single, &views);
    for workers in ["1", "2"] {
        // Ports of the namespaces' own (free on the host is as good a guess as any there).
        let hostfile = dir.path().join("hosts");
        std::fs::write(&hostfile, format!("10.231.0.1:{}\n10.231.0.2:{}\n", free_port(), free_port())).unwrap();
        let out = dir.path().join(format!("two-w{workers}"));
        let processes = ["a", "b"]
            .iter()
            .enumerate()
            .map(|(p, ns)| {
                let mut command = Command::new(netns_script());
                command
                    .args(["exec", ns, env!("CARGO_BIN_EXE_chatflow"), "run", "--replay", path_str(&input)])
                    .args(["--out", path_str(&out), "-w", workers, "-n", "2", "-p", &p.to_string()])
                    .args(["-h", path_str(&hostfile)])
                    .args(flags);
                command
            })
            .collect();
        run_together(processes, &format!("-n 2 -w {workers} across namespaces"));
        assert_views_eq(&read_views(&out, &views), &expected, &format!("-n 2 -w {workers} across namespaces"));
    }
}
