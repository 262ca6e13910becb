//! The `chatflow` command: tracing setup, CLI dispatch.

use std::io::Write;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use chatflow::cli::{Cli, Command, OutputFormat};
use chatflow::clickhouse::Client;
use chatflow::query::{read_view, Answer, Query};
use chatflow::run::{execute, job, peak_rss_bytes, summary, Start};
use chatflow::sources::import::{import, ImportOptions};

fn main() {
    chatflow::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if let Err(e) = real_main() {
        eprintln!("chatflow: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            stop_on_signals()?;
            // ClickHouse deployments continue unless told otherwise; change files start afresh.
            let continues = args.resume || (args.pipeline.clickhouse.clickhouse.is_some() && !args.from_beginning);
            let start = if continues { Start::Resume } else { Start::FromBeginning };
            let job = job(&args.pipeline, args.out.clone(), start, &args.timely)?;
            let outcome = execute(job, &args.timely)?;
            print!("{}", summary(&outcome, &args.out));
        }
        Command::Bench(args) => {
            let scratch = match &args.out {
                Some(_) => None,
                None => Some(tempfile::tempdir().context("creating a scratch directory")?),
            };
            let out = args.out.clone().unwrap_or_else(|| scratch.as_ref().expect("made above").path().to_path_buf());
            stop_on_signals()?;
            let mut job = job(&args.pipeline, out, Start::FromBeginning, &args.timely)?;
            job.profile = args.profile;
            let outcome = execute(job, &args.timely)?;
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
                    "count": outcome.freshness().len(),
                    "p50": outcome.freshness().value_at_quantile(0.5),
                    "p99": outcome.freshness().value_at_quantile(0.99),
                },
                "batch_latency_us": {
                    "count": latency.map(|h| h.len()),
                    "p50": percentile(0.50),
                    "p90": percentile(0.90),
                    "p99": percentile(0.99),
                    "max": latency.map(|h| h.max()),
                },
                "operator_seconds": outcome.reports.iter().flat_map(|r| r.operator_seconds.iter()).take(20)
                    .map(|(name, secs)| (name.clone(), json!((secs * 1000.0).round() / 1000.0))).collect::<serde_json::Map<_, _>>(),
                "rows_written": outcome.rows_written().into_iter()
                    .map(|(v, n)| (v.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            });
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Import(args) => {
            let options = ImportOptions { edge_ts: args.edge_ts };
            let report = match &args.out_file {
                Some(path) => {
                    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
                    import(args.format, &args.files, &options, &mut std::io::BufWriter::new(file))?
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
        }
        Command::Produce(args) => match (&args.out_file, &args.kafka) {
            (Some(path), _) => {
                let n = chatflow::produce::produce_file(&args, path)
                    .with_context(|| format!("writing {}", path.display()))?;
                eprintln!("chatflow produce: wrote {n} events to {}", path.display());
            }
            (None, Some(brokers)) => {
                stop_on_signals()?;
                let n = chatflow::produce::produce_kafka(&args, brokers)?;
                eprintln!("chatflow produce: sent {n} events to {brokers}");
            }
            (None, None) => unreachable!("clap requires --out-file or --kafka"),
        },
        Command::Query(args) => {
            let client = Client::new(&args.clickhouse);
            let query = Query {
                view: &args.view,
                channel: args.channel.as_deref(),
                user: args.user.as_deref(),
                as_of: args.as_of,
                limit: args.limit,
            };
            let answer = read_view(&client, &args.database, &query)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            print_answer(&answer, args.format, &mut out)?;
            out.flush()?;
            eprintln!(
                "chatflow query: {} rows of {} at time {} (committed cut {})",
                answer.rows.len(),
                answer.view.name,
                answer.at,
                answer.cut
            );
        }
    }
    Ok(())
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
            let rows: Vec<serde_json::Value> = answer
                .rows
                .iter()
                .map(|row| {
                    let object = columns.iter().zip(row).map(|(c, v)| {
                        let value = match answer.view.is_int(c) {
                            true => v.parse::<i64>().map(|n| json!(n)).unwrap_or_else(|_| json!(v)),
                            false => json!(v),
                        };
                        (c.to_string(), value)
                    });
                    serde_json::Value::Object(object.collect())
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &rows)?;
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
fn stop_on_signals() -> Result<()> {
    ctrlc::set_handler(|| {
        if chatflow::worker::STOP.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("chatflow: stopping after what is complete is written (again to exit at once)");
    })
    .context("installing the signal handler")
}
