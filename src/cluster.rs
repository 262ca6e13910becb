//! timely's process and worker flags → a `timely::Config`.

use std::io::BufRead;

use timely::{CommunicationConfig, WorkerConfig};

use crate::cli::TimelyArgs;

/// Flags that do not make a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("-p {process} is out of range: with -n {processes} the process index is 0 to {}", processes - 1)]
    ProcessOutOfRange { process: usize, processes: usize },
    #[error("-h {}: cannot read the hostfile", path.display())]
    Hostfile { path: std::path::PathBuf, source: std::io::Error },
    #[error("-h {} holds {found} addresses (one host:port per line), but -n is {processes}", path.display())]
    TooFewHosts { path: std::path::PathBuf, found: usize, processes: usize },
}

/// Builds the timely configuration of `-w`, `-n`, `-p`, `-h`: without a hostfile, process `i`
/// listens on 127.0.0.1:(2101 + i), as timely does on localhost.
pub fn timely_config(args: &TimelyArgs) -> Result<timely::Config, ClusterError> {
    let threads = args.workers as usize;
    let processes = args.processes as usize;
    let process = args.process as usize;
    if process >= processes {
        return Err(ClusterError::ProcessOutOfRange { process, processes });
    }
    let communication = if processes > 1 {
        let addresses = match &args.hostfile {
            Some(path) => {
                let unreadable = |source| ClusterError::Hostfile { path: path.clone(), source };
                let file = std::fs::File::open(path).map_err(unreadable)?;
                let addresses: Vec<String> = std::io::BufReader::new(file)
                    .lines()
                    .map(|l| l.map(|l| l.trim().to_owned()))
                    .filter(|l| !matches!(l, Ok(l) if l.is_empty()))
                    .take(processes)
                    .collect::<Result<_, _>>()
                    .map_err(unreadable)?;
                if addresses.len() < processes {
                    return Err(ClusterError::TooFewHosts { path: path.clone(), found: addresses.len(), processes });
                }
                addresses
            }
            None => (0..processes).map(|i| format!("127.0.0.1:{}", 2101 + i)).collect(),
        };
        CommunicationConfig::Cluster { threads, process, addresses, report: false, zerocopy: false }
    } else if threads > 1 {
        CommunicationConfig::Process(threads)
    } else {
        CommunicationConfig::Thread
    };
    Ok(timely::Config { communication, worker: WorkerConfig::default() })
}
