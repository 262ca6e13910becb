//! Checkpoints: every `--checkpoint-interval` and at the end of a run, the workers agree on a
//! time `c`, hold their inputs there until every time before `c` is processed, and each saves
//! its operators' state (`dataflows::checkpoint`) with where its sources must resume to read
//! the times from `c` on. A `--resume` loads the latest complete checkpoint and reads only
//! from there.
//!
//! ```text
//!  worker 0, every interval ─► Pause(r) ─broadcast─► each worker holds its input at t_w ─► Paused(r, t_w)
//!  every Paused(r) in: c = max t_w ─► each worker advances to c, steps until the probe reaches c,
//!     saves <out>/_checkpoints/<c>/w<worker>.bin (state, resume positions, watermark stamp; fsync, rename)
//!     and w<worker>.positions.csv (the positions as text: source,partition,next)
//!     ─► once its process has made every update before c durable ─► Saved(r)
//!  worker 0, every Saved(r) in ─► <out>/_checkpoints/<c>/COMPLETE (fsync, rename) ─► older checkpoints deleted
//! ```
//!
//! Holding the inputs at `c` is what makes the states agree: no operator can process a time
//! at or after `c` while some input is at `c`, and the probe passing `c` means every time
//! before it is processed. The hold lasts one pass of the pipeline (its latency) plus the
//! encoding of the state. A round is abandoned when a worker stops reading (its final
//! notice): the end of the run takes the last checkpoint, at the run's upper, complete once
//! every sink has finished (a stop, or a Kafka run that caught up; a replay read to its end
//! takes none, having nothing left to resume).
//!
//! With ClickHouse each worker's file is also stored in the database, and worker 0 marks the
//! checkpoint complete there first (`clickhouse::store`): a resume reads the latest from the
//! database, so a fresh machine with an empty `--out` resumes too.
//!
//! A checkpoint is used only once `COMPLETE` is there, which is written after every worker's
//! file and after every update before `c` is durable, so a restart from it rewrites nothing
//! that is lost and misses nothing: the sinks skip what they hold (times before their upper,
//! which is at least `c`). A file is checked against the CRC-32 stored at its end; a torn or
//! foreign file stops the resume with a message rather than resuming wrongly.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use dataflows::checkpoint::Registry;
use serde::{Deserialize, Serialize};

use crate::clickhouse::store::{CHECKPOINTS_TABLE, COMPLETE_TABLE};
use crate::clickhouse::{store, Client, Target};
use crate::sources::ResumeAt;

/// The folder of a deployment's checkpoints, in `--out`.
pub const DIR: &str = "_checkpoints";
const COMPLETE: &str = "COMPLETE";

/// One worker's part of a checkpoint, before its operators' states (which follow it in the
/// file: see `dataflows::checkpoint`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Saved {
    pub time: u64,
    pub worker: u32,
    pub workers: u32,
    /// The greatest event `ts` this worker entered before `time` (the watermark's input).
    pub stamp: Option<i64>,
    pub resume: Vec<ResumeAt>,
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "{}: {reason} (without the {DIR} folder, and in a ClickHouse run without the rows of the database's \
         {CHECKPOINTS_TABLE} and {COMPLETE_TABLE} tables, a --resume reads the input from its beginning)",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(transparent)]
    State(#[from] dataflows::checkpoint::CheckpointError),
    #[error("in ClickHouse: {0}")]
    Store(#[from] crate::clickhouse::store::StoreError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io { path: path.to_owned(), source }
}

fn checkpoint_dir(out: &Path, time: u64) -> PathBuf {
    out.join(DIR).join(time.to_string())
}

fn worker_file(out: &Path, time: u64, worker: u32) -> PathBuf {
    checkpoint_dir(out, time).join(format!("w{worker}.bin"))
}

/// The start of every worker file (and its format's version: 2 since the chat views' words and
/// users are owned by worker per (channel, word) and (channel, user), and rankings keep their
/// leaders per worker; a checkpoint of version 1 would put state on the wrong workers. 3 since
/// the word totals and their ranking are one operator, whose states come before the chatters',
/// and the user totals are the ranking's scores, no longer saved apart).
const MAGIC: &[u8; 8] = b"chfckpt3";

/// A writer that keeps the CRC-32 and length of what passes through it.
struct Summing<W> {
    inner: W,
    crc: crc32fast::Hasher,
    bytes: u64,
}

impl<W: Write> Write for Summing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `path` whole or not at all: `fill` writes into a temporary file, which is fsynced
/// and renamed, and the folder fsynced.
fn write_atomically(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), CheckpointError>,
) -> Result<u64, CheckpointError> {
    let dir = path.parent().expect("checkpoint files are in a folder");
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    fill(&mut out)?;
    let file = out.into_inner().map_err(|e| io(&tmp)(e.into_error()))?;
    file.sync_all().map_err(io(&tmp))?;
    let bytes = file.metadata().map_err(io(&tmp))?.len();
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(bytes)
}

/// Saves one worker's part of the checkpoint at `saved.time`: `saved`, then what `registry`'s
/// operators hold, then a CRC-32 of all of it. Returns the bytes written.
pub fn write_worker(out: &Path, saved: &Saved, registry: &Registry) -> Result<u64, CheckpointError> {
    // Where the worker resumes, also as text beside the state, for people and tests.
    let text = checkpoint_dir(out, saved.time).join(format!("w{}.positions.csv", saved.worker));
    let mut csv = String::from("source,partition,next\n");
    for at in &saved.resume {
        csv += &format!("{},{},{}\n", at.source, at.partition, at.next);
    }
    write_atomically(&text, |file| file.write_all(csv.as_bytes()).map_err(io(&text)))?;
    let path = worker_file(out, saved.time, saved.worker);
    let encoding =
        |e: bincode::Error| CheckpointError::Corrupt { path: path.clone(), reason: format!("encoding: {e}") };
    write_atomically(&path, |file| {
        let mut summing = Summing { inner: &mut *file, crc: crc32fast::Hasher::new(), bytes: 0 };
        summing.write_all(MAGIC).map_err(io(&path))?;
        bincode::serialize_into(&mut summing, saved).map_err(encoding)?;
        registry.save_to(&mut summing)?;
        let crc = summing.crc.finalize();
        file.write_all(&crc.to_le_bytes()).map_err(io(&path))
    })
}

/// Opens worker `worker`'s part of the checkpoint at `time` once its CRC matches: what it
/// saved, and a reader of its operators' states (for `dataflows::checkpoint::install`).
pub fn read_worker(out: &Path, time: u64, worker: u32) -> Result<(Saved, Box<dyn Read>), CheckpointError> {
    let path = worker_file(out, time, worker);
    let corrupt = |reason: String| CheckpointError::Corrupt { path: path.clone(), reason };
    let length = std::fs::metadata(&path).map_err(io(&path))?.len();
    if length < MAGIC.len() as u64 + 4 {
        return Err(corrupt("too short to be a checkpoint".into()));
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).map_err(io(&path))?);
    let mut crc = crc32fast::Hasher::new();
    let mut left = length - 4;
    while left > 0 {
        let buf = reader.fill_buf().map_err(io(&path))?;
        if buf.is_empty() {
            return Err(corrupt("shorter than its length".into()));
        }
        let n = buf.len().min(left as usize);
        crc.update(&buf[..n]);
        reader.consume(n);
        left -= n as u64;
    }
    let mut stored = [0u8; 4];
    reader.read_exact(&mut stored).map_err(io(&path))?;
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(corrupt("its contents do not match the CRC written with them".into()));
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&path).map_err(io(&path))?);
    let mut magic = [0u8; 8];
    reader.read_exact(&mut magic).map_err(io(&path))?;
    if &magic != MAGIC {
        return Err(corrupt("not a chatflow checkpoint of this version".into()));
    }
    let saved: Saved = bincode::deserialize_from(&mut reader).map_err(|e| corrupt(format!("decoding: {e}")))?;
    if saved.time != time || saved.worker != worker {
        return Err(corrupt(format!("holds worker {} at time {}", saved.worker, saved.time)));
    }
    Ok((saved, Box::new(reader)))
}

/// Marks the checkpoint at `time` complete (every worker's file is in), in the database first
/// if there is one, and deletes the older ones and any incomplete one before it.
pub fn complete(out: &Path, store: Option<&Target>, time: u64, workers: u32) -> Result<(), CheckpointError> {
    if let Some(target) = store {
        store::complete(&Client::new(&target.url), &target.database, time, workers)?;
    }
    let marker = checkpoint_dir(out, time).join(COMPLETE);
    write_atomically(&marker, |file| file.write_all(format!("{time},{workers}\n").as_bytes()).map_err(io(&marker)))?;
    let root = out.join(DIR);
    for entry in std::fs::read_dir(&root).map_err(io(&root))?.flatten() {
        let older = entry.file_name().to_str().and_then(|n| n.parse::<u64>().ok()).is_some_and(|t| t < time);
        if older {
            std::fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
        }
    }
    Ok(())
}

/// Marks the staged checkpoint at `time` (of `workers` workers) complete in `out` when its
/// folder holds every worker's file but no marker: the database marked it complete and the
/// process was killed before the folder was. The folder then names the checkpoint the
/// database does (and the older ones go) instead of lagging one behind until the next. A
/// folder missing a worker's file (another process stages it) is left as it is. Returns
/// whether it marked one.
pub fn catch_up(out: &Path, time: u64, workers: u32) -> Result<bool, CheckpointError> {
    let marked = checkpoint_dir(out, time).join(COMPLETE).exists();
    if marked || !(0..workers).all(|w| worker_file(out, time, w).is_file()) {
        return Ok(false);
    }
    complete(out, None, time, workers)?;
    Ok(true)
}

/// The latest complete checkpoint of `out`: its time and number of workers.
pub fn latest(out: &Path) -> Option<(u64, u32)> {
    let entries = std::fs::read_dir(out.join(DIR)).ok()?;
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join(COMPLETE)).ok()?;
            let (time, workers) = text.trim().split_once(',')?;
            Some((time.parse().ok()?, workers.parse().ok()?))
        })
        .max()
}

/// Deletes every checkpoint of `out` (a new deployment).
pub fn clear(out: &Path) -> Result<(), CheckpointError> {
    let root = out.join(DIR);
    match std::fs::remove_dir_all(&root) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&root)(e)),
        _ => Ok(()),
    }
}

/// What a run does about checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointJob {
    /// Between two checkpoints while reading; `None`: only at the end.
    pub interval: Option<Duration>,
    /// The checkpoint a resumed run starts from: its time.
    pub restore: Option<u64>,
    /// With ClickHouse: the database that keeps the checkpoints (`--out` stages the files).
    pub store: Option<Target>,
}

/// Stores worker `worker`'s file of the checkpoint at `time` in the database.
pub fn upload(out: &Path, time: u64, worker: u32, target: &Target) -> Result<(), CheckpointError> {
    let client = Client::new(&target.url);
    Ok(store::upload(&client, &target.database, time, worker, &worker_file(out, time, worker))?)
}

/// Brings worker `worker`'s file of the checkpoint at `time` from the database into `out`.
pub fn fetch(out: &Path, time: u64, worker: u32, target: &Target) -> Result<(), CheckpointError> {
    let client = Client::new(&target.url);
    let path = worker_file(out, time, worker);
    if store::download(&client, &target.database, time, worker, &path)? {
        Ok(())
    } else {
        Err(CheckpointError::Corrupt { path, reason: format!("not in database {}", target.database) })
    }
}

/// Where a worker is in the current checkpoint round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Idle,
    /// Holding the input at its time until every worker's is known.
    Paused(u32),
    /// Advancing to `c`, then holding there until the probe reaches it.
    Agreed(u32, u64),
    /// Saved; waiting until the process has made everything before `c` durable.
    Durable(u32, u64),
}

/// One worker's part in checkpoints.
pub struct Checkpointer {
    pub job: CheckpointJob,
    pub registry: Rc<Registry>,
    pub phase: Phase,
    /// The last round this worker took up.
    pub round: u32,
    /// When the last round ended here (worker 0 asks for the next one an interval later).
    pub last: Instant,
    /// Worker 0: rounds saved here, waiting for every worker's `Saved`: (round, time).
    pub completing: Vec<(u32, u64)>,
}

impl Checkpointer {
    pub fn new(job: CheckpointJob, registry: Rc<Registry>) -> Self {
        Checkpointer { job, registry, phase: Phase::Idle, round: 0, last: Instant::now(), completing: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A checkpoint whose workers' files are staged but whose marker is missing (a kill after
    /// the database marked it) is marked, and the older one goes; one missing a worker's
    /// file is not.
    #[test]
    fn a_staged_checkpoint_catches_up_with_the_database() {
        let out = tempfile::tempdir().unwrap();
        let out = out.path();
        for time in [3, 5, 8] {
            std::fs::create_dir_all(checkpoint_dir(out, time)).unwrap();
        }
        std::fs::write(checkpoint_dir(out, 3).join(COMPLETE), "3,2\n").unwrap();
        for worker in 0..2 {
            std::fs::write(worker_file(out, 5, worker), b"staged").unwrap();
        }
        std::fs::write(worker_file(out, 8, 0), b"staged").unwrap();
        assert_eq!(latest(out), Some((3, 2)));

        assert!(!catch_up(out, 8, 2).unwrap(), "a checkpoint without worker 1's file was marked");
        assert_eq!(latest(out), Some((3, 2)));
        assert!(catch_up(out, 5, 2).unwrap(), "the staged checkpoint was not marked");
        assert_eq!(latest(out), Some((5, 2)));
        assert!(!checkpoint_dir(out, 3).exists(), "the older checkpoint is still there");
        assert!(!catch_up(out, 5, 2).unwrap(), "a marked checkpoint was marked again");
    }
}
