//! The replay source: event JSONL files, read by every worker in parallel.
//!
//! Delivery: every line of every input is read exactly once per run, by exactly one worker.
//!
//! ## Deterministic ingestion time
//!
//! The inputs form one log: the files in the order given on the command line (a directory
//! stands for its `*.jsonl` files sorted by name), each line in file order. Line `g` of that
//! log (0-based, counting every physical line, blank ones included) is owned by worker
//! `g mod peers` and gets the timely timestamp
//!
//! ```text
//!     time(g) = floor(g / batch)
//! ```
//!
//! so the time of an event depends only on the input and `--batch`, never on the wall clock,
//! thread scheduling or the number of workers. An event whose own `ts` is older than earlier
//! events (a late event) simply arrives at its later ingestion time and corrects the window
//! its `ts` picks.
//!
//! ```text
//!   file₀ ─┐            worker w keeps lines g ≡ w (mod peers)
//!   file₁ ─┼─► log g=0,1,2,… ─► tick ⌊g/batch⌋ ─► decode ─► chats / dead letters inputs
//!   …     ─┘
//! ```
//!
//! ## The watermark (`--retention`)
//!
//! The watermark of time `t` is the greatest event `ts` of the lines before line
//! `t × batch` (the lines of earlier times; dead letters have none): a function of the log and
//! `--batch`, so every replay of the same files (and a `--resume`) seals the same windows and
//! writes the same `late_events`, at any number of workers (see `dataflows::horizon`).
//!
//! ## Paced replay
//!
//! With `--replay-rate R` the log is released at `R` lines a second, as if it were being
//! produced live: line `g` becomes readable `g / R` seconds after the first read of the
//! process (one clock for its workers), and that moment is its produce time for the
//! freshness figures. The times stay `floor(g / batch)`, so the output is the same as an
//! unpaced replay's.
//!
//! Lines longer than [`MAX_RECORD_BYTES`] are never buffered whole: the reader keeps the first
//! KiB for the dead letter and skips the rest.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::sources::decode::{MAX_RAW_BYTES, MAX_RECORD_BYTES};
use crate::sources::{Context, InputPosition, Position, Record, ResumeAt, Source, SourceError};

/// Expands `--replay` arguments: files stay, directories become their `*.jsonl` files sorted
/// by name. A path given twice is read once.
pub fn expand_inputs(paths: &[PathBuf]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            entries.sort();
            if entries.is_empty() {
                tracing::warn!(dir = %path.display(), "no *.jsonl files in directory");
            }
            files.extend(entries);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{}: no such file or directory", path.display()),
            ));
        }
    }
    let mut seen = std::collections::HashSet::new();
    files.retain(|f| seen.insert(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone())));
    Ok(files)
}

/// One line of the log as its owning worker sees it.
pub struct Line<'a> {
    /// The file, as given.
    pub source: &'a str,
    /// 1-based line number within the file.
    pub line_no: u64,
    /// 0-based index in the whole log.
    pub global: u64,
    /// The line without its `\n` / `\r\n`, or its first KiB if it is too long.
    pub bytes: &'a [u8],
    /// `Some(length)` if the line was longer than [`MAX_RECORD_BYTES`].
    pub oversized: Option<u64>,
}

struct OpenFile {
    name: String,
    reader: BufReader<File>,
    line_no: u64,
}

/// The rate of a paced replay (see the module doc), shared by the workers of a process.
#[derive(Clone, Debug)]
pub struct Pace {
    lines_per_s: f64,
    /// When the first worker first read, as an instant and in Unix milliseconds.
    start: Arc<OnceLock<(Instant, i64)>>,
}

impl Pace {
    pub fn new(lines_per_s: f64) -> Self {
        Pace { lines_per_s, start: Arc::default() }
    }

    /// The start of the replay (set by the first call) and the number of lines released now.
    fn released(&self) -> (i64, u64) {
        let (start, start_ms) = *self.start.get_or_init(|| (Instant::now(), crate::metrics::now_ms()));
        (start_ms, (start.elapsed().as_secs_f64() * self.lines_per_s) as u64)
    }

    /// When line `global` was released, in Unix milliseconds.
    fn produced_ms(&self, start_ms: i64, global: u64) -> i64 {
        start_ms + (global as f64 * 1000.0 / self.lines_per_s) as i64
    }
}

/// [`FileSource`] with its tick length: the replay source of one worker.
pub struct Replay {
    pub files: FileSource,
    /// Lines per tick.
    pub batch: u64,
    names: Vec<String>,
    pace: Option<Pace>,
}

impl Replay {
    pub fn new(files: Vec<PathBuf>, index: usize, peers: usize, batch: u64, pace: Option<Pace>) -> Self {
        let names = files.iter().map(|f| f.display().to_string()).collect();
        Replay { files: FileSource::new(files, index, peers), batch, names, pace }
    }

    /// Skips the log up to `at`'s line (a checkpoint's position) without handing any line on.
    pub fn resume(&mut self, at: &[ResumeAt]) -> Result<(), SourceError> {
        if let Some(at) = at.first() {
            self.files.skip_to(at.next.max(0) as u64).context("skipping the input files to the checkpoint")?;
        }
        Ok(())
    }
}

impl Source for Replay {
    fn read(&mut self, budget: usize, each: &mut dyn FnMut(Record)) -> Result<(), SourceError> {
        let mut end = self.files.position().saturating_add(budget as u64);
        let released = self.pace.as_ref().map(|pace| {
            let (start_ms, lines) = pace.released();
            end = end.min(lines);
            (pace, start_ms)
        });
        let batch = self.batch;
        self.files
            .read_until(end, |line: Line| {
                each(Record {
                    time: line.global / batch,
                    source: line.source,
                    position: Position::Line(line.line_no),
                    bytes: Some(line.bytes),
                    oversized: line.oversized,
                    produced_ms: released.map(|(pace, start_ms)| pace.produced_ms(start_ms, line.global)),
                })
            })
            .context("reading the input files")?;
        Ok(())
    }

    fn frontier(&self) -> Option<u64> {
        (!self.files.exhausted()).then(|| self.files.position() / self.batch)
    }

    fn positions(&self) -> Vec<InputPosition> {
        // One entry for the whole log: the next global line (0-based) across all the files.
        let source = self.names.join(" ");
        vec![InputPosition { source, partition: 0, next: self.files.position() as i64 }]
    }

    fn bytes_read(&self) -> u64 {
        self.files.bytes_read()
    }

    fn resume_at(&self, time: u64) -> Vec<ResumeAt> {
        // Time t starts at global line t × batch, whatever has been read since.
        let next = time.saturating_mul(self.batch);
        vec![ResumeAt { source: self.names.join(" "), partition: 0, next: next as i64, max_ts: -1 }]
    }

    fn end_time(&self) -> u64 {
        // Line g has time floor(g / batch); every line read is below the next line's count.
        self.files.position().div_ceil(self.batch)
    }
}

/// A worker's cursor over the log.
pub struct FileSource {
    exhausted: bool,
    files: std::vec::IntoIter<PathBuf>,
    current: Option<OpenFile>,
    global: u64,
    index: u64,
    peers: u64,
    line: Vec<u8>,
    bytes_read: u64,
}

impl FileSource {
    pub fn new(files: Vec<PathBuf>, index: usize, peers: usize) -> Self {
        FileSource {
            exhausted: false,
            files: files.into_iter(),
            current: None,
            global: 0,
            index: index as u64,
            peers: peers as u64,
            line: Vec::new(),
            bytes_read: 0,
        }
    }

    /// The global index of the next line to be read.
    pub fn position(&self) -> u64 {
        self.global
    }

    /// Whether the whole log has been read.
    pub fn exhausted(&self) -> bool {
        self.exhausted
    }

    /// Bytes of input consumed so far (all lines, owned or not).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Passes over the log up to (not including) global line `end` without keeping any line
    /// (a resume from a checkpoint: those lines are in its state).
    pub fn skip_to(&mut self, end: u64) -> io::Result<()> {
        self.walk(end, false, |_| {}).map(|_| ())
    }

    /// Reads the log up to (not including) global line `end`, calling `each` for the lines this
    /// worker owns. Returns `Ok(false)` once the whole log has been read.
    pub fn read_until(&mut self, end: u64, each: impl FnMut(Line)) -> io::Result<bool> {
        self.walk(end, true, each)
    }

    fn walk(&mut self, end: u64, keep: bool, mut each: impl FnMut(Line)) -> io::Result<bool> {
        while self.global < end {
            if self.current.is_none() {
                match self.files.next() {
                    None => {
                        self.exhausted = true;
                        return Ok(false);
                    }
                    Some(path) => self.current = Some(open(&path)?),
                }
            }
            let file = self.current.as_mut().expect("opened above");
            let owned = keep && self.global % self.peers == self.index;
            match next_line(&mut file.reader, owned, &mut self.line)? {
                None => self.current = None,
                Some((consumed, length)) => {
                    file.line_no += 1;
                    self.bytes_read += consumed;
                    if owned {
                        let oversized = (length > MAX_RECORD_BYTES as u64).then_some(length);
                        let mut bytes = &self.line[..];
                        if oversized.is_none() {
                            if let Some(stripped) = bytes.strip_suffix(b"\r") {
                                bytes = stripped;
                            }
                        }
                        each(Line { source: &file.name, line_no: file.line_no, global: self.global, bytes, oversized });
                    }
                    self.global += 1;
                }
            }
        }
        Ok(true)
    }
}

fn open(path: &Path) -> io::Result<OpenFile> {
    let file = File::open(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    Ok(OpenFile { name: path.display().to_string(), reader: BufReader::with_capacity(1 << 20, file), line_no: 0 })
}

/// Reads one line. If `keep`, its bytes (without `\n`) go to `line`, cut to [`MAX_RAW_BYTES`]
/// when the line is longer than [`MAX_RECORD_BYTES`]. Returns the bytes consumed and the
/// line's length, or `None` at the end of the file.
fn next_line(reader: &mut BufReader<File>, keep: bool, line: &mut Vec<u8>) -> io::Result<Option<(u64, u64)>> {
    line.clear();
    let mut consumed = 0u64;
    let mut length = 0u64;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((consumed > 0).then_some((consumed, length)));
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if keep {
            let room = (MAX_RECORD_BYTES + 1).saturating_sub(line.len());
            line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        length += chunk.len() as u64;
        let used = done.unwrap_or(buf.len());
        consumed += used as u64;
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    if length > MAX_RECORD_BYTES as u64 {
        line.truncate(MAX_RAW_BYTES);
    }
    Ok(Some((consumed, length)))
}
