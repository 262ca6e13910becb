//! Checkpoints: a run killed (kill -9) or stopped (SIGTERM) after a checkpoint, then resumed,
//! leaves exactly the change files of an uninterrupted run, byte for byte, and the resumed run
//! reads only what lies after the checkpoint's positions (its own count of records read says
//! so), at one and two workers and two processes. The fixture has every stateful operator at
//! work: chat (word totals, chatters, rankings, sentiment, engagement), posts (each id's
//! copies, places, retweets), edges (strengths, walks) and a retention horizon (the watermark
//! goes on from the checkpoint's stamp; late events are the same).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::oracle::Lexica;
use crate::retention::{expected, late_fixture};
use crate::support::*;

/// The latest complete checkpoint of `out`: its time.
fn latest_checkpoint(out: &Path) -> Option<u64> {
    complete_checkpoint(out).map(|(time, _)| time)
}

/// Starts `args` as one process, or as the two processes of a cluster with `hosts`.
fn start(args: &[&str], hosts: Option<&Path>) -> Vec<Child> {
    let commands: Vec<Command> = match hosts {
        None => vec![chatflow()],
        Some(hosts) => (0..2)
            .map(|p| {
                let mut c = chatflow();
                c.args(args).args(["-n", "2", "-p", &p.to_string(), "-h", path_str(hosts)]);
                c
            })
            .collect(),
    };
    commands
        .into_iter()
        .map(|mut c| {
            if hosts.is_none() {
                c.args(args);
            }
            c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
        })
        .collect()
}

/// Waits until `out` has a complete checkpoint after time 0, then sends `signal` to every
/// process; returns the processes' combined stdout and whether all exited 0.
fn interrupt_after_a_checkpoint(mut children: Vec<Child>, out: &Path, signal: &str) -> (String, bool) {
    let seen = poll_until(Duration::from_secs(120), || {
        latest_checkpoint(out).is_some_and(|t| t > 0) || children.iter_mut().any(|c| c.try_wait().unwrap().is_some())
    });
    let ended = children.iter_mut().any(|c| c.try_wait().unwrap().is_some());
    if !seen || ended {
        let message = format!("no checkpoint before the run ended (or 120 s passed) in {}", out.display());
        kill_and_fail(&mut children[0], message);
    }
    for child in &children {
        let _ = Command::new("kill").args([signal, &child.id().to_string()]).status();
    }
    let mut stdout = String::new();
    let mut ok = true;
    for child in children {
        let output = child.wait_with_output().unwrap();
        stdout += &String::from_utf8_lossy(&output.stdout);
        ok &= output.status.success();
    }
    (stdout, ok)
}

/// Resumes `args` (one process or two) to the end; returns the records read by all processes
/// and what they printed.
fn resume(args: &[&str], hosts: Option<&Path>) -> (u64, String) {
    let mut args = args.to_vec();
    args.push("--resume");
    let children = start(&args, hosts);
    let mut read = 0;
    let mut printed = String::new();
    for (p, child) in children.into_iter().enumerate() {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "resume (process {p}) failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        read += records_read(&stdout);
        printed += &stdout;
    }
    (read, printed)
}

fn lines(path: &Path) -> u64 {
    std::fs::read_to_string(path).unwrap().lines().count() as u64
}

#[test]
fn resumed_from_a_checkpoint_after_kill_or_stop_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = late_fixture(dir.path());
    let lexicon_dir = crate::mission::test_lexica(dir.path());
    let want = expected(&fixture, &Lexica::read(&lexicon_dir));
    let total = lines(&fixture);
    let batch = 300;
    let views: Vec<&str> = want.keys().map(String::as_str).collect();
    let common = ["--batch", "300", "--retention", "60", "--lexicon-dir", path_str(&lexicon_dir)];

    // The reference: one uninterrupted run, which equals the oracle.
    let reference = dir.path().join("reference");
    let mut args = vec!["run", "--replay", path_str(&fixture), "--out", path_str(&reference)];
    args.extend(common);
    run_ok(&args);
    assert_views_eq(&read_views(&reference, &views), &want, "uninterrupted");

    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port())).unwrap();
    for (shape, cluster) in [("-w1", None), ("-w2", None), ("-n2", Some(hosts.as_path()))] {
        let workers = if shape == "-w2" { "2" } else { "1" };
        for signal in ["-KILL", "-TERM"] {
            let out: PathBuf = dir.path().join(format!("{shape}{signal}"));
            let mut args = vec!["run", "--replay", path_str(&fixture), "--out", path_str(&out), "-w", workers];
            args.extend(common);
            // Released at 2,000 lines a second, a checkpoint every second: the run is
            // interrupted after its first checkpoint, well before its end.
            let mut paced = args.clone();
            paced.extend(["--replay-rate", "2000", "--checkpoint-interval", "1"]);
            let (stdout, clean) = interrupt_after_a_checkpoint(start(&paced, cluster), &out, signal);
            let at = latest_checkpoint(&out).expect("a checkpoint was complete");
            let what = format!("{shape}, {signal} after the checkpoint at {at}");
            if signal == "-TERM" {
                // A stop takes a last checkpoint at the run's upper.
                assert!(clean, "{what}: the stopped run failed\n{stdout}");
                let progress = std::fs::read_to_string(out.join("_progress.csv")).unwrap();
                let upper: u64 = progress.lines().last().unwrap().rsplit(',').next().unwrap().parse().unwrap();
                assert_eq!(at, upper, "{what}: the last checkpoint is at the upper ({progress})");
            }
            assert!(at * batch < total, "{what}: the checkpoint is at the end of the input");
            if shape == "-w1" && signal == "-KILL" {
                // A checkpoint without its COMPLETE mark (a kill while it was written) is
                // never used; a damaged one stops the resume, naming the file.
                let torn = out.join("_checkpoints").join("999999");
                std::fs::create_dir_all(&torn).unwrap();
                std::fs::write(torn.join("w0.bin"), b"chfckpt3 torn").unwrap();
                let saved = out.join("_checkpoints").join(at.to_string()).join("w0.bin");
                let good = std::fs::read(&saved).unwrap();
                let mut bad = good.clone();
                let middle = bad.len() / 2;
                bad[middle] ^= 0x40;
                std::fs::write(&saved, &bad).unwrap();
                let mut resumed = args.clone();
                resumed.push("--resume");
                let refused = chatflow().args(&resumed).output().unwrap();
                let stderr = String::from_utf8_lossy(&refused.stderr);
                assert!(
                    !refused.status.success() && stderr.contains("w0.bin") && stderr.contains("CRC"),
                    "{what}: a damaged checkpoint was not refused: {stderr}"
                );
                // So does one of an earlier format (its CRC intact), saying how to start over.
                let mut earlier = good.clone();
                earlier[..8].copy_from_slice(b"chfckpt2");
                let body = earlier.len() - 4;
                let crc = crc32fast::hash(&earlier[..body]);
                earlier[body..].copy_from_slice(&crc.to_le_bytes());
                std::fs::write(&saved, &earlier).unwrap();
                let refused = chatflow().args(&resumed).output().unwrap();
                let stderr = String::from_utf8_lossy(&refused.stderr);
                assert!(
                    !refused.status.success()
                        && stderr.contains("not a chatflow checkpoint of this version")
                        && stderr.contains("_checkpoints_complete"),
                    "{what}: a checkpoint of an earlier format was not refused with the remedy: {stderr}"
                );
                std::fs::write(&saved, &good).unwrap();
            }
            let (read, printed) = resume(&args, cluster);
            let says = format!("resumed from the checkpoint at time {at}");
            assert!(printed.contains(&says), "{what}: the summary does not say {says:?}:\n{printed}");
            // Only the lines from the checkpoint's on were read again.
            assert_eq!(read, total - at * batch, "{what}: records read by the resumed run");
            for view in &views {
                let file = |d: &Path| std::fs::read(d.join(format!("{view}.csv"))).unwrap();
                assert!(file(&reference) == file(&out), "{what}: {view}.csv differs from the uninterrupted run's");
            }
        }
    }
}
