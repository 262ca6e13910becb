//! Loading the sentiment lexica (`--lexicon-dir`): the emote, emoji and VADER *average* lexica
//! of Kobs et al., "Emote-Controlled", as tab-separated files. They are read at run time and
//! never part of the repository (the emote lexicon is for non-commercial research use).

use std::path::{Path, PathBuf};

use dataflows::sentiment::{Lexica, Lexicon};

/// The files of a lexicon directory, in the rule's order.
pub const FILES: [&str; 3] = ["emote_average.tsv", "emoji_average.tsv", "vader_average.tsv"];

/// Why the lexica cannot be loaded: the file, and the line where one is malformed.
#[derive(Debug, thiserror::Error)]
pub enum LexiconLoadError {
    #[error("--lexicon-dir {}: not a directory (it must hold {})", .0.display(), FILES.join(", "))]
    NotADirectory(PathBuf),
    #[error("--lexicon-dir: cannot read {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("--lexicon-dir: {}: {source}", path.display())]
    Malformed { path: PathBuf, source: dataflows::sentiment::LexiconError },
}

/// Loads the three lexica of `dir`.
pub fn load(dir: &Path) -> Result<Lexica, LexiconLoadError> {
    if !dir.is_dir() {
        return Err(LexiconLoadError::NotADirectory(dir.to_owned()));
    }
    let read = |name: &str| -> Result<Lexicon, LexiconLoadError> {
        let path = dir.join(name);
        let bytes =
            std::fs::read(&path).map_err(|source| LexiconLoadError::Unreadable { path: path.clone(), source })?;
        let text = String::from_utf8(bytes).map_err(|e| LexiconLoadError::Unreadable {
            path: path.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        })?;
        Lexicon::parse(&text).map_err(|source| LexiconLoadError::Malformed { path, source })
    };
    Ok(Lexica::new(read(FILES[0])?, read(FILES[1])?, read(FILES[2])?))
}
