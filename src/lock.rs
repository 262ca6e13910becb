//! One writer per deployment: a run holds an advisory lock on its `--out` directory for as long
//! as it lives, so a second run on the same directory (a `--resume` started while the first is
//! still alive, a second copy of a service) is refused before it touches anything, with a
//! message naming the holder.
//!
//! The lock is `flock(2)` on `<out>/_lock.p<process>` (one file per process index: the processes
//! of a cluster on one machine may share `--out`). The kernel releases it when the holder's
//! last descriptor closes, so a process killed with `kill -9` never leaves it stuck; the file
//! stays, with the last holder's description, which the next holder overwrites.
//!
//! ClickHouse runs also write their clock bindings in `--out`, so they take the same lock;
//! that the database is not written by a run on another machine is checked from its progress
//! rows (`clickhouse::cut::recent_writer`).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

/// The lock file of process `process` in `dir`.
pub fn lock_path(dir: &Path, process: u64) -> PathBuf {
    dir.join(format!("_lock.p{process}"))
}

/// Who holds a lock: `pid <pid>, started <time>: <command line>`.
pub fn describe_self() -> String {
    let args: Vec<String> = std::env::args().collect();
    format!(
        "pid {}, started {}: {}",
        std::process::id(),
        chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC"),
        args.join(" ")
    )
}

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct OutLock {
    _file: File,
}

/// Takes the lock of process `process` on `dir` (which must exist), or says who holds it.
pub fn lock(dir: &Path, process: u64) -> Result<OutLock> {
    let path = lock_path(dir, process);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("opening the lock file {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let holder = if holder.is_empty() { "a process that has not said who it is yet" } else { holder };
            return Err(anyhow!(
                "--out {} is in use by another chatflow run ({holder}); stop that run first, or give this one \
                 another --out",
                dir.display()
            ));
        }
        Err(TryLockError::Error(e)) => return Err(anyhow!("locking {}: {e}", path.display())),
    }
    let mut record = || -> std::io::Result<()> {
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        writeln!(file, "{}", describe_self())
    };
    record().with_context(|| format!("writing the lock file {}", path.display()))?;
    Ok(OutLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_a_released_one_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock(dir.path(), 0).unwrap();
        let refused = lock(dir.path(), 0).unwrap_err().to_string();
        assert!(refused.contains("in use by another chatflow run"), "{refused}");
        assert!(refused.contains(&format!("pid {}", std::process::id())), "{refused}");
        // Another process index of the same directory is another lock.
        let other = lock(dir.path(), 1).unwrap();
        drop(first);
        let again = lock(dir.path(), 0).unwrap();
        drop((other, again));
    }
}
