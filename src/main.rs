//! The `chatflow` command: tracing setup, CLI dispatch.

use std::ffi::OsString;
use std::io::Write;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use chatflow::cli::{Cli, Command, ImportArgs, OutputFormat};
use chatflow::clickhouse::{ClickHouseError, Client};
use chatflow::query::{read_dir, read_view, Answer, Query, QueryError};
use chatflow::run::{
    execute, judge, peak_rss_bytes, percent, plan, plural, summary, Failure, Start, STARTED, TOO_MANY_DEAD_LETTERS,
};
use chatflow::sources::import::{import, ImportFormat, ImportOptions};
use chatflow::sources::sniff::{sniff_file, Kind};

fn main() {
    chatflow::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    lost_peer_ends_the_process();
    let args: Vec<OsString> = match chatflow::config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("chatflow: error: {e:#}");
            std::process::exit(2);
        }
    };
    if let Some(message) = dash_h_without_file(&args) {
        eprintln!("chatflow: {message}");
        std::process::exit(2);
    }
    let code = match real_main(Cli::parse_from(args)) {
        Ok(code) => code,
        // A reader that stopped reading (`chatflow import … | head`) is not an error.
        Err(e) if broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("chatflow: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

/// A process of a cluster (`-n`) whose peer goes away (killed, its machine lost) cannot go on:
/// timely's network threads panic on the closed connection. Say so plainly and exit 1 (rather
/// than a backtrace and 101); what was recorded stays consistent, so every process can be
/// started again with `--resume`.
fn lost_peer_ends_the_process() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if text.starts_with("timely communication error") {
            eprintln!(
                "chatflow: error: lost the connection to another process of the cluster ({text}); a cluster \
                 cannot continue without one of its processes: start all of them again (with --resume to \
                 continue from what is recorded)"
            );
            std::process::exit(1);
        }
        default(info);
    }));
}

/// `-h` is timely's hostfile on `run` and `bench`; given without a file it is someone asking
/// for help.
fn dash_h_without_file(args: &[OsString]) -> Option<String> {
    let command = args.get(1)?.to_str()?;
    if !matches!(command, "run" | "bench") {
        return None;
    }
    let at = args.iter().position(|a| a == "-h")?;
    let value = args.get(at + 1).and_then(|a| a.to_str());
    value.is_none_or(|v| v.starts_with('-')).then(|| {
        format!(
            "-h is timely's hostfile here (-h FILE: one host:port per process); for help use \
             `chatflow {command} --help`"
        )
    })
}

/// Whether `e` is a write to a closed pipe.
fn broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || cause.downcast_ref::<csv::Error>().is_some_and(
                |c| matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe),
            )
            || cause
                .downcast_ref::<serde_json::Error>()
                .is_some_and(|j| j.io_error_kind() == Some(std::io::ErrorKind::BrokenPipe))
    })
}

/// Writes `text` to stdout (an error, not a panic, when stdout is closed).
fn print_out(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Exit codes: 0 done; 1 an error, or nothing could be run or imported; 2 a usage error;
/// 3 done, but more dead letters than `--max-dead-letter-ratio`; 130 stopped by a signal
/// before the run started.
fn real_main(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(args) => {
            stop_on_signals()?;
            // ClickHouse deployments continue unless told otherwise; change files start afresh.
            let continues = args.resume || (args.pipeline.clickhouse.clickhouse.is_some() && !args.from_beginning);
            let start = if continues { Start::Resume } else { Start::FromBeginning };
            let plan = plan(&args.pipeline, args.out.clone(), start, &args.timely)?;
            let server = match args.serve {
                Some(listen) => Some(serve_run(&args, listen)?),
                None => None,
            };
            let outcome = execute(plan, &args.timely)?;
            print_out(&summary(&outcome, &args.out))?;
            let code = judged(&outcome, args.pipeline.max_dead_letter_ratio, &args.out);
            if let Some(server) = server {
                eprintln!("chatflow: the run is done; still serving until interrupted (Ctrl-C)");
                match server.join() {
                    Ok(result) => result?,
                    Err(_) => anyhow::bail!("the server thread panicked"),
                }
            }
            return Ok(code);
        }
        Command::Bench(args) => {
            let scratch = match &args.out {
                Some(_) => None,
                None => Some(tempfile::tempdir().context("creating a scratch directory")?),
            };
            let out = args.out.clone().unwrap_or_else(|| scratch.as_ref().expect("made above").path().to_path_buf());
            stop_on_signals()?;
            let mut plan = plan(&args.pipeline, out.clone(), Start::FromBeginning, &args.timely)?;
            if args.plain_consumer {
                let chatflow::worker::Input::Kafka { options, topics } = &plan.job.input else {
                    anyhow::bail!("--plain-consumer reads Kafka: give --kafka");
                };
                let read = chatflow::sources::kafka::read_plainly(options, topics, args.timely.workers as usize)?;
                let report = json!({
                    "plain_consumer": true,
                    "topics": topics.iter().map(|(t, n)| json!({"topic": t, "partitions": n})).collect::<Vec<_>>(),
                    "threads": args.timely.workers,
                    "records": read.records,
                    "bytes": read.bytes,
                    "end_offsets": read.end_offsets,
                    "skipped_offsets": read.skipped_offsets,
                    "seconds": read.seconds,
                    "records_per_s": read.records as f64 / read.seconds.max(1e-9),
                });
                print_out(&format!("{}\n", serde_json::to_string(&report)?))?;
                return Ok(0);
            }
            plan.job.profile = args.profile;
            let outcome = execute(plan, &args.timely)?;
            let latency = outcome.latency();
            let percentile = |q: f64| latency.map(|h| h.value_at_quantile(q));
            let report = json!({
                "inputs": args.pipeline.replay,
                "workers": args.timely.workers,
                "processes": args.timely.processes,
                "process": args.timely.process,
                "batch": args.pipeline.batch,
                "events": outcome.events(),
                "dead_letters": outcome.dead_letters(),
                "input_bytes": outcome.input_bytes,
                "seconds": outcome.seconds,
                "events_per_s": outcome.events() as f64 / outcome.seconds.max(1e-9),
                "peak_rss_bytes": peak_rss_bytes(),
                "advances": outcome.reports.first().map(|r| r.advances),
                "freshness_us": {
                    "count": outcome.freshness.len(),
                    "p50": outcome.freshness.value_at_quantile(0.5),
                    "p99": outcome.freshness.value_at_quantile(0.99),
                    "stages": outcome.freshness_stages.iter().map(|(stage, hist)| (stage.to_string(), json!({
                        "p50": hist.value_at_quantile(0.5),
                        "p99": hist.value_at_quantile(0.99),
                    }))).collect::<serde_json::Map<_, _>>(),
                },
                "batch_latency_us": {
                    "count": latency.map(|h| h.len()),
                    "p50": percentile(0.50),
                    "p90": percentile(0.90),
                    "p99": percentile(0.99),
                    "max": latency.map(|h| h.max()),
                },
                "operator_seconds": operator_seconds(&outcome.reports),
                "worker_operator_seconds": outcome.reports.iter().filter(|r| !r.operator_seconds.is_empty())
                    .map(|r| (r.operator_seconds.iter().map(|(_, secs)| secs).sum::<f64>() * 1000.0).round() / 1000.0)
                    .collect::<Vec<_>>(),
                "writer_thread_seconds": (chatflow::sinks::csv::writing_seconds() * 1000.0).round() / 1000.0,
                "rows_written": outcome.rows_written().into_iter()
                    .map(|(v, n)| (v.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "peak_rss_at_records": outcome.rss_at_records.iter()
                    .map(|(records, rss)| (records.to_string(), json!(rss))).collect::<serde_json::Map<_, _>>(),
                "windows_held": outcome.windows_held().into_iter()
                    .map(|(name, h)| (name, json!({"held": h.windows, "dropped": h.dropped})))
                    .collect::<serde_json::Map<_, _>>(),
            });
            print_out(&format!("{}\n", serde_json::to_string(&report)?))?;
            return Ok(judged(&outcome, args.pipeline.max_dead_letter_ratio, &out));
        }
        Command::Import(args) => return import_command(&args),
        Command::Score(args) => return score_command(&args),
        Command::Serve(args) => {
            let store = match (&args.from, &args.clickhouse) {
                (Some(dir), _) => chatflow::serve::Store::Dir(dir.clone()),
                (None, Some(url)) => {
                    chatflow::clickhouse::check_database(&args.database).context("--database")?;
                    chatflow::serve::Store::ClickHouse { client: Client::new(url), database: args.database.clone() }
                }
                (None, None) => unreachable!("clap requires --from or --clickhouse"),
            };
            let options = chatflow::serve::ServeOptions {
                listen: args.listen,
                token: args.token.clone().filter(|t| !t.is_empty()),
                metrics_public: args.metrics_public,
                rate: f64::from(args.rate_limit),
            };
            let listener = chatflow::serve::listen(&options, "--listen")?;
            chatflow::serve::serve(store, listener, options, None)?;
        }
        Command::Produce(args) => match (&args.out_file, &args.kafka) {
            (Some(path), _) => {
                let n = chatflow::produce::produce_file(&args, path)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("chatflow produce: wrote {n} events to {}", path.display());
            }
            (None, Some(brokers)) => {
                stop_on_signals()?;
                STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
                let n = chatflow::produce::produce_kafka(&args, brokers)?;
                eprintln!("chatflow produce: sent {n} events to {brokers}");
            }
            (None, None) => unreachable!("clap requires --out or --kafka"),
        },
        Command::Query(args) => {
            let query = Query {
                view: &args.view,
                channel: args.channel.as_deref(),
                user: args.user.as_deref(),
                place: args.place.as_deref(),
                as_of: args.as_of,
                limit: args.limit,
            };
            let (answer, source) = match &args.dir {
                Some(dir) => (read_dir(dir, &query)?, format!("the change files in {}", dir.display())),
                None => {
                    let url = args.clickhouse.as_deref().unwrap_or("http://127.0.0.1:8123");
                    let database = args.database.as_deref().unwrap_or("chatflow");
                    let answer = read_view(&Client::new(url), database, &query).map_err(|e| match e {
                        QueryError::ClickHouse(ClickHouseError::Unreachable { .. }) => anyhow::anyhow!(
                            "{e}; or read a run's change files with `chatflow query {} --dir <its --out directory>`",
                            args.view
                        ),
                        e => e.into(),
                    })?;
                    (answer, format!("database {database} on {url}"))
                }
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            print_answer(&answer, args.format, &mut out)?;
            out.flush()?;
            eprintln!(
                "chatflow query: {} of {} at time {} (complete below {}), from {source}",
                plural(answer.rows.len() as u64, "row"),
                answer.view.name,
                answer.at,
                answer.cut
            );
        }
    }
    Ok(0)
}

/// `run --serve`: the server of `chatflow serve` in a thread, over the run's output, until the
/// first SIGINT/SIGTERM (which also stops the run).
fn serve_run(
    args: &chatflow::cli::RunArgs,
    listen: std::net::SocketAddr,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let store = match &args.pipeline.clickhouse.clickhouse {
        Some(url) => chatflow::serve::Store::ClickHouse {
            client: Client::new(url),
            database: args.pipeline.clickhouse.database.clone(),
        },
        None => chatflow::serve::Store::Dir(args.out.clone()),
    };
    let options = chatflow::serve::ServeOptions {
        listen,
        token: args.token.clone().filter(|t| !t.is_empty()),
        metrics_public: args.metrics_public,
        rate: chatflow::serve::RATE,
    };
    let listener = chatflow::serve::listen(&options, "--serve")?;
    Ok(std::thread::spawn(move || chatflow::serve::serve(store, listener, options, Some(&chatflow::worker::STOP))))
}

/// Each operator's seconds summed over this process's workers (`bench --profile`), the
/// costliest 24, in milliseconds' precision.
fn operator_seconds(reports: &[chatflow::worker::WorkerReport]) -> serde_json::Map<String, serde_json::Value> {
    let mut sums: Vec<(String, f64)> = Vec::new();
    for (name, secs) in reports.iter().flat_map(|r| r.operator_seconds.iter()) {
        match sums.iter_mut().find(|(n, _)| n == name) {
            Some((_, sum)) => *sum += secs,
            None => sums.push((name.clone(), *secs)),
        }
    }
    sums.sort_by(|a, b| b.1.total_cmp(&a.1));
    sums.into_iter().take(24).map(|(name, secs)| (name, serde_json::json!((secs * 1000.0).round() / 1000.0))).collect()
}

/// `chatflow score`: chat JSON lines on stdin → the same messages with their sentiment
/// (`score`, the mean of the lexicon values hit; `score_milli`; `hits`; `class`) on stdout. A
/// line that is not a chat event is reported on stderr with its line number and skipped.
fn score_command(args: &chatflow::cli::ScoreArgs) -> Result<i32> {
    let lexica = chatflow::lexica::load(&args.lexicon_dir)?;
    let stdin = std::io::stdin().lock();
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let (mut scored, mut skipped) = (0u64, 0u64);
    for (i, line) in std::io::BufRead::split(stdin, b'\n').enumerate() {
        let line = line.context("reading stdin")?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let chat = match chatflow::sources::decode::decode(line) {
            Ok(chatflow::sources::decode::Event::Chat(chat)) => chat,
            other => {
                let reason = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "not a chat event (chat: ts, channel, user, text)".to_owned(),
                };
                skipped += 1;
                eprintln!("chatflow score: line {}: {reason}", i + 1);
                continue;
            }
        };
        let score = lexica.score(&chat.text);
        let row = json!({
            "ts": chat.ts, "channel": chat.channel.as_str(), "user": chat.user.as_str(), "text": chat.text,
            "score": score.value(), "score_milli": score.milli(), "hits": score.hits, "class": score.class().name(),
        });
        serde_json::to_writer(&mut out, &row)?;
        out.write_all(b"\n")?;
        scored += 1;
    }
    out.flush()?;
    eprintln!("chatflow score: {scored} messages scored, {skipped} lines skipped");
    Ok(if scored == 0 && skipped > 0 { 1 } else { 0 })
}

/// The exit code of a finished run, telling the person why it is not 0 and, when most lines
/// failed, what the input looks like.
fn judged(outcome: &chatflow::run::Outcome, max_ratio: f64, out: &std::path::Path) -> i32 {
    let (failure, hint) = judge(outcome, max_ratio, out);
    if let Some(hint) = hint {
        eprintln!("chatflow: {hint}");
    }
    match failure {
        Some(Failure { code, message }) => {
            eprintln!("chatflow: error: {message}");
            code
        }
        None => 0,
    }
}

/// `chatflow import`: into a file (written beside it and renamed into place only when
/// something was imported) or stdout. Exit 1 when nothing could be imported, 3 when more lines
/// failed than `--max-dead-letter-ratio` allows.
fn import_command(args: &ImportArgs) -> Result<i32> {
    let options = ImportOptions { edge_ts: args.edge_ts };
    for file in &args.files {
        std::fs::metadata(file).with_context(|| format!("{}", file.display()))?;
    }
    let report = match &args.out_file {
        Some(path) => {
            if path.is_dir() {
                anyhow::bail!("--out {} is a directory: name the file to write the events to", path.display());
            }
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => std::path::Path::new("."),
            };
            let mut file = tempfile::NamedTempFile::new_in(parent)
                .with_context(|| format!("--out {}: cannot create a file in {}", path.display(), parent.display()))?;
            let report = import(args.format, &args.files, &options, &mut std::io::BufWriter::new(file.as_file_mut()))?;
            if report.events > 0 {
                // A temporary file is private; the events are an ordinary file.
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode());
                file.as_file().set_permissions(std::fs::Permissions::from_mode(mode))?;
                file.persist(path).with_context(|| format!("writing {}", path.display()))?;
            }
            report
        }
        None => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let report = import(args.format, &args.files, &options, &mut out)?;
            out.flush()?;
            report
        }
    };
    eprintln!("chatflow import: {report}");
    let failed = report.unparsed.len() as u64;
    let lines = report.events + failed;
    if failed * 2 > lines {
        let expected = match args.format {
            ImportFormat::TwitchCsv => Kind::TwitchCsv,
            ImportFormat::TwitchIrc => Kind::TwitchIrc,
            ImportFormat::EdgesCsv => Kind::EdgesCsv,
            ImportFormat::Tweets => Kind::Tweets,
        };
        let guess = args.files.iter().find_map(|f| sniff_file(f).filter(|k| *k != expected).map(|k| (f, k)));
        if let Some((file, kind)) = guess {
            eprintln!("chatflow: most lines could not be imported as {}; {}", expected.describe(), kind.hint(file));
        }
    }
    if report.events == 0 {
        eprintln!(
            "chatflow: error: nothing was imported{}",
            if args.out_file.is_some() { " (--out is left as it was)" } else { "" }
        );
        return Ok(1);
    }
    if failed as f64 > args.max_dead_letter_ratio * lines as f64 {
        eprintln!(
            "chatflow: error: {} of the lines ({failed} of {lines}) could not be imported, more than --max-dead-letter-ratio {}",
            percent(failed, lines),
            args.max_dead_letter_ratio
        );
        return Ok(TOO_MANY_DEAD_LETTERS);
    }
    Ok(0)
}

/// Prints a query's rows as a table, CSV (a header, then one line per row) or JSON.
fn print_answer(answer: &Answer, format: OutputFormat, out: &mut impl Write) -> Result<()> {
    let columns = answer.view.column_names();
    match format {
        OutputFormat::Csv => {
            let mut writer = csv::Writer::from_writer(out);
            writer.write_record(&columns)?;
            for row in &answer.rows {
                writer.write_record(row)?;
            }
            writer.flush()?;
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, &answer.json_rows())?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            let shown = |v: &str| v.escape_debug().to_string();
            let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
            for row in &answer.rows {
                for (w, v) in widths.iter_mut().zip(row) {
                    *w = (*w).max(shown(v).chars().count());
                }
            }
            let line = |cells: Vec<String>, out: &mut dyn Write| -> std::io::Result<()> {
                let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
                writeln!(out, "{}", padded.join("  ").trim_end())
            };
            line(columns.iter().map(|c| c.to_string()).collect(), out)?;
            line(widths.iter().map(|w| "-".repeat(*w)).collect(), out)?;
            for row in &answer.rows {
                line(row.iter().map(|v| shown(v)).collect(), out)?;
            }
        }
    }
    Ok(())
}

/// SIGINT and SIGTERM ask the workers (or the producer) to stop cleanly; a second one exits.
/// Before the workers start (checking arguments, waiting for peers, preparing ClickHouse)
/// one signal exits at once: nothing has been written.
fn stop_on_signals() -> Result<()> {
    ctrlc::set_handler(|| {
        if !STARTED.load(std::sync::atomic::Ordering::SeqCst) {
            eprintln!("chatflow: stopped before the run started");
            std::process::exit(130);
        }
        if chatflow::worker::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("chatflow: stopping after what is complete is written (again to exit at once)");
    })
    .context("installing the signal handler")
}
