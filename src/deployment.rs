//! The settings a deployment's output depends on, recorded in `<out>/_deployment.csv` when it
//! starts and checked when it resumes.
//!
//! A resumed run recomputes from its latest checkpoint (or the beginning of its input) and
//! keeps what the earlier run wrote before the recorded upper, trusting that it computes the
//! same updates at the same times. That holds only with the same ingestion clock (`--tick-ms` for Kafka, `--batch` for
//! a replay) and the same views (`--window`, `--top-k`, the lexica, the focus users, ...): a
//! record that gets another time lands on the other side of the upper, written twice or not
//! at all. So a resume with other settings is refused, naming each that differs.
//!
//! Rows: `setting,value`, one per setting; files (lexica, focus) by a hash of their contents.
//! Every process of a cluster records its own copy in its own `--out`.

use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, Context, Result};

pub const DEPLOYMENT_FILE: &str = "_deployment.csv";

/// Setting name (as the flag is spelled) → value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings(pub BTreeMap<String, String>);

impl Settings {
    pub fn set(&mut self, name: &str, value: impl ToString) {
        self.0.insert(name.to_owned(), value.to_string());
    }
}

/// A stable hash of `bytes`, in hex (for files whose contents a view depends on).
pub fn fingerprint(bytes: &[u8]) -> String {
    let hash = foldhash::quality::FixedState::with_seed(0x6465_706c_6f79_6d74).hash_one(bytes);
    format!("{hash:016x}")
}

/// Records `settings` for a new deployment in `dir` (written beside, fsynced, renamed).
pub fn record(dir: &Path, settings: &Settings) -> Result<()> {
    let path = dir.join(DEPLOYMENT_FILE);
    // One temporary name per process: the processes of a cluster on one machine share `dir`.
    let tmp = dir.join(format!("{DEPLOYMENT_FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut writer = csv::Writer::from_path(&tmp)?;
        writer.write_record(["setting", "value"])?;
        for (name, value) in &settings.0 {
            writer.write_record([name, value])?;
        }
        let mut file = writer.into_inner().map_err(|e| e.into_error())?;
        file.flush()?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().with_context(|| format!("recording the deployment's settings in {}", path.display()))
}

/// The settings recorded in `dir`, if any.
pub fn recorded(dir: &Path) -> Result<Option<Settings>> {
    let path = dir.join(DEPLOYMENT_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let bad = |e: csv::Error| anyhow!("{}: {e}", path.display());
    let mut reader = csv::Reader::from_path(&path).map_err(bad)?;
    let mut settings = Settings::default();
    for record in reader.records() {
        let record = record.map_err(bad)?;
        settings.set(record.get(0).unwrap_or(""), record.get(1).unwrap_or(""));
    }
    Ok(Some(settings))
}

/// Checks that a run resuming the deployment in `dir` has its settings: those recorded in
/// `dir`, or else those kept `elsewhere` (a ClickHouse deployment's database, when `dir` is a
/// fresh machine's). A deployment begun before settings were recorded takes this run's (with a
/// warning).
pub fn check(dir: &Path, settings: &Settings, elsewhere: Option<Settings>) -> Result<()> {
    let Some(before) = recorded(dir)?.or(elsewhere) else {
        tracing::warn!(dir = %dir.display(), "the deployment recorded no settings: resuming with this run's");
        return record(dir, settings);
    };
    let names: std::collections::BTreeSet<&String> = before.0.keys().chain(settings.0.keys()).collect();
    let none = String::from("(none)");
    let differ: Vec<String> = names
        .into_iter()
        .filter(|n| before.0.get(*n) != settings.0.get(*n))
        .map(|n| {
            let was = before.0.get(n).unwrap_or(&none);
            let now = settings.0.get(n).unwrap_or(&none);
            format!("{n} was {was}, is {now}")
        })
        .collect();
    if differ.is_empty() {
        // A fresh machine's --out learns them too.
        return if dir.join(DEPLOYMENT_FILE).exists() { Ok(()) } else { record(dir, settings) };
    }
    Err(anyhow!(
        "--resume: this run's settings differ from those the deployment in {} was started with ({}): \
         resumed, its records would get other times or its views other rows than what is written. \
         Resume with the same settings, or start a new deployment (--from-beginning)",
        dir.display(),
        differ.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_with_other_settings_is_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::default();
        settings.set("--tick-ms", 200);
        settings.set("--window", 60);
        check(dir.path(), &settings, None).unwrap();
        assert_eq!(recorded(dir.path()).unwrap(), Some(settings.clone()));
        check(dir.path(), &settings, None).unwrap();
        let mut other = settings.clone();
        other.set("--tick-ms", 1000);
        other.set("--focus", "abc");
        let message = check(dir.path(), &other, None).unwrap_err().to_string();
        assert!(message.contains("--tick-ms was 200, is 1000"), "{message}");
        assert!(message.contains("--focus was (none), is abc"), "{message}");
        assert!(!message.contains("--window"), "{message}");
        // A fresh directory is held to the settings kept elsewhere (a database), and then
        // records them.
        let fresh = tempfile::tempdir().unwrap();
        let message = check(fresh.path(), &other, Some(settings.clone())).unwrap_err().to_string();
        assert!(message.contains("--tick-ms was 200, is 1000"), "{message}");
        assert_eq!(recorded(fresh.path()).unwrap(), None);
        check(fresh.path(), &settings, Some(settings.clone())).unwrap();
        assert_eq!(recorded(fresh.path()).unwrap(), Some(settings.clone()));
    }
}
