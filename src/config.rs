//! `--config <file.toml>`: the flags of `run`, `serve` and `bench` in a file, for a service.
//!
//! Every key is a long flag of the command, spelled as on the command line (`top-k`, or
//! `top_k`): `window = 60`, `kafka = "127.0.0.1:9092"`, `resume = true` (a flag without a
//! value: `true` gives it, `false` leaves it out), `replay = ["a.jsonl", "b.jsonl"]` and
//! `kafka-config = ["security.protocol=ssl", ...]` (several values). An unknown key, a table,
//! or a value of the wrong kind is an error naming the key and the file.
//!
//! The file's flags are placed before the command line's own, and the commands let a later
//! flag override an earlier one, so the command line wins: `chatflow run --config run.toml
//! --window 30` runs with a 30 s window whatever the file says. A flag of the command line
//! also drops the file's flags it conflicts with (`--from-beginning` beside `resume = true`,
//! `--replay` beside `kafka = ...`).

use std::ffi::OsString;
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use clap::{ArgAction, CommandFactory};

use crate::cli::Cli;

/// The commands that take `--config`.
pub const COMMANDS: [&str; 3] = ["run", "serve", "bench"];

/// Expands `--config FILE` (or `--config=FILE`) of `chatflow <command> …` into the flags the
/// file holds; other command lines come back unchanged.
pub fn expand(args: Vec<OsString>) -> Result<Vec<OsString>> {
    let Some(command) = args.get(1).and_then(|a| a.to_str()).filter(|c| COMMANDS.contains(c)).map(str::to_owned) else {
        return Ok(args);
    };
    let mut file = None;
    let mut rest: Vec<OsString> = Vec::new();
    let mut i = 2;
    while i < args.len() {
        let arg = args[i].to_string_lossy();
        let value = if arg == "--config" {
            i += 1;
            Some(args.get(i).cloned().ok_or_else(|| anyhow!("--config needs a file (a TOML file of flags)"))?)
        } else {
            arg.strip_prefix("--config=").map(OsString::from)
        };
        match value {
            Some(path) if file.is_some() => {
                return Err(anyhow!("--config given twice ({} and {})", file.unwrap_or_default(), path.display()))
            }
            Some(path) => file = Some(std::path::PathBuf::from(path).display().to_string()),
            None => rest.push(args[i].clone()),
        }
        i += 1;
    }
    let Some(file) = file else { return Ok(args) };
    let text = std::fs::read_to_string(&file).with_context(|| format!("--config {file}"))?;
    let flags = flags_of(&command, &text, &rest, Path::new(&file))?;
    let mut out = vec![args[0].clone(), args[1].clone()];
    out.extend(flags.into_iter().map(OsString::from));
    out.extend(rest);
    Ok(out)
}

/// The flags `text` (a TOML table) stands for, for `chatflow <command>`, leaving out those
/// that conflict with a flag of `given` (the command line).
pub fn flags_of(command: &str, text: &str, given: &[OsString], file: &Path) -> Result<Vec<String>> {
    let shown = file.display();
    let table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!("--config {shown}: not a TOML table of flags: {e}"))?;
    let mut root = Cli::command();
    root.build();
    let cmd = root.find_subcommand(command).ok_or_else(|| anyhow!("no command {command}"))?;
    let long_of = |name: &str| {
        let name = name.replace('_', "-");
        cmd.get_arguments().find(|a| {
            a.get_long() == Some(name.as_str())
                || a.get_all_aliases().is_some_and(|aliases| aliases.contains(&name.as_str()))
        })
    };
    // The arguments the command line names (by id), to drop what conflicts with them.
    let given_ids: Vec<&str> = given
        .iter()
        .filter_map(|a| a.to_str()?.strip_prefix("--").map(|f| f.split('=').next().unwrap_or(f).to_owned()))
        .filter_map(|f| long_of(&f).map(|a| a.get_id().as_str()))
        .collect();
    let mut flags = Vec::new();
    for (key, value) in &table {
        let arg = long_of(key)
            .filter(|a| a.get_long() != Some("config") && a.get_long() != Some("help"))
            .ok_or_else(|| anyhow!("--config {shown}: unknown key `{key}` (not a flag of `chatflow {command}`)"))?;
        let id = arg.get_id().as_str();
        let conflicts = cmd.get_arg_conflicts_with(arg).iter().any(|c| given_ids.contains(&c.get_id().as_str()))
            || cmd.get_groups().any(|g| {
                !g.clone().is_multiple()
                    && g.get_args().any(|a| a.as_str() == id)
                    && g.get_args().any(|a| a.as_str() != id && given_ids.contains(&a.as_str()))
            });
        if conflicts || given_ids.contains(&id) {
            continue;
        }
        let long = format!("--{}", arg.get_long().expect("found by its long name"));
        let takes_value = !matches!(arg.get_action(), ArgAction::SetTrue | ArgAction::SetFalse | ArgAction::Count);
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Ok(s.clone()),
            toml::Value::Integer(n) => Ok(n.to_string()),
            toml::Value::Float(x) => Ok(x.to_string()),
            other => Err(anyhow!("--config {shown}: `{key}` takes a value, not {}", other.type_str())),
        };
        match value {
            toml::Value::Boolean(on) if !takes_value => {
                if *on {
                    flags.push(long);
                }
            }
            _ if !takes_value => {
                return Err(anyhow!("--config {shown}: `{key}` is a flag without a value: write `{key} = true`"))
            }
            toml::Value::Array(items) => {
                let values = items.iter().map(scalar).collect::<Result<Vec<_>>>()?;
                if matches!(arg.get_action(), ArgAction::Append) {
                    for v in values {
                        flags.push(format!("{long}={v}"));
                    }
                } else if arg.get_num_args().is_some_and(|n| n.max_values() > 1) {
                    flags.push(long);
                    flags.extend(values);
                } else {
                    return Err(anyhow!("--config {shown}: `{key}` takes one value, not a list"));
                }
            }
            other => flags.push(format!("{long}={}", scalar(other)?)),
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expanded(command_line: &[&str], toml: &str) -> Result<Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, toml).unwrap();
        let mut args: Vec<OsString> = vec!["chatflow".into()];
        for a in command_line {
            args.push(a.replace("FILE", &file.display().to_string()).into());
        }
        Ok(expand(args)?.into_iter().map(|a| a.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn keys_become_flags_before_the_command_line() {
        let toml =
            "replay = [\"a.jsonl\", \"b.jsonl\"]\ntop_k = 5\nwindow = 30\nresume = true\nmention-edges = false\n\
                    kafka-config = [\"a=1\", \"b=2\"]\nthreads = 2\n";
        let args = expanded(&["run", "--config", "FILE", "--window", "10"], toml).unwrap();
        // The file's keys come in its order (TOML tables are sorted), then the command line.
        assert_eq!(args[..2], ["chatflow", "run"]);
        assert_eq!(args[args.len() - 2..], ["--window", "10"]);
        for want in ["--top-k=5", "--resume", "--threads=2", "--kafka-config=a=1", "--kafka-config=b=2"] {
            assert!(args.contains(&want.to_owned()), "{want} in {args:?}");
        }
        let replay = args.iter().position(|a| a == "--replay=a.jsonl").unwrap();
        assert_eq!(args[replay + 1], "--replay=b.jsonl");
        assert!(!args.iter().any(|a| a.contains("mention") || a == "--window=30"), "{args:?}");
        // Parsed, the command line's --window wins and the file's flags hold.
        let cli = <Cli as clap::Parser>::try_parse_from(&args).unwrap();
        let crate::cli::Command::Run(run) = cli.command else { panic!() };
        assert_eq!((run.pipeline.window, run.pipeline.top_k, run.resume), (10, 5, true));
    }

    #[test]
    fn the_command_line_drops_what_conflicts() {
        let toml = "kafka = \"127.0.0.1:9092\"\nresume = true\n";
        let args = expanded(&["run", "--config=FILE", "--replay", "x.jsonl", "--from-beginning"], toml).unwrap();
        assert_eq!(args, ["chatflow", "run", "--replay", "x.jsonl", "--from-beginning"]);
        let cli = <Cli as clap::Parser>::try_parse_from(&args).unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Run(_)));
    }

    #[test]
    fn bad_keys_and_values_are_named() {
        let err = |cl: &[&str], toml: &str| expanded(cl, toml).unwrap_err().to_string();
        let e = err(&["run", "--config", "FILE"], "windw = 3\n");
        assert!(e.contains("unknown key `windw`") && e.contains("chatflow run"), "{e}");
        let e = err(&["serve", "--config", "FILE"], "window = 3\n");
        assert!(e.contains("unknown key `window`") && e.contains("chatflow serve"), "{e}");
        let e = err(&["run", "--config", "FILE"], "resume = \"yes\"\n");
        assert!(e.contains("`resume` is a flag without a value"), "{e}");
        let e = err(&["run", "--config", "FILE"], "window = [1, 2]\n");
        assert!(e.contains("`window` takes one value"), "{e}");
        let e = err(&["run", "--config", "FILE"], "[clickhouse]\nurl = \"x\"\n");
        assert!(e.contains("`clickhouse` takes a value, not table"), "{e}");
        let e = err(&["run", "--config", "FILE"], "window = \n");
        assert!(e.contains("not a TOML table of flags"), "{e}");
        let e = err(&["run", "--config", "FILE", "--config", "FILE"], "");
        assert!(e.contains("--config given twice"), "{e}");
        // Other commands are left alone.
        assert_eq!(expanded(&["query", "top_words"], "").unwrap(), ["chatflow", "query", "top_words"]);
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::*;

    /// The example configurations of `deploy/` hold flags their commands take.
    #[test]
    fn the_example_configurations_parse() {
        for (command, text, file) in [
            ("run", include_str!("../deploy/run.toml"), "deploy/run.toml"),
            ("serve", include_str!("../deploy/serve.toml"), "deploy/serve.toml"),
        ] {
            let flags = flags_of(command, text, &[], Path::new(file)).unwrap();
            let args = ["chatflow", command].into_iter().map(str::to_owned).chain(flags);
            let cli = <Cli as clap::Parser>::try_parse_from(args).unwrap_or_else(|e| panic!("{file}: {e}"));
            match cli.command {
                crate::cli::Command::Run(run) => {
                    assert!(
                        run.resume
                            && run.pipeline.kafka.kafka.is_some()
                            && run.pipeline.clickhouse.clickhouse.is_some()
                    );
                }
                crate::cli::Command::Serve(serve) => assert!(serve.clickhouse.is_some()),
                _ => unreachable!(),
            }
        }
    }
}
