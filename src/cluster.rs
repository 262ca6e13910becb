//! timely's process and worker flags → a `timely::Config`, and the connections between the
//! processes of a cluster.

use std::any::Any;
use std::io::{BufRead, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use timely::communication::allocator::zero_copy::initialize::initialize_networking_from_sockets;
use timely::communication::allocator::ProcessBuilder;
use timely::communication::{AllocatorBuilder, Hooks};

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

/// How long a process waits between attempts to reach a peer that is not listening yet.
const RETRY: Duration = Duration::from_millis(20);

/// Connects this process (`process` of `addresses.len()`) to the others and builds its
/// workers' allocators, as `CommunicationConfig::try_build` does for a cluster: process `i`
/// connects to every `j < i` and announces its index (8 bytes, big-endian), and accepts a
/// connection from every `j > i`. timely's own start-up sleeps a second between attempts to
/// connect and between polls of its listener, so a cluster took one to two seconds to start
/// however fast its peers came up; here a refused connection is retried after 20 ms and the
/// listener blocks in `accept`.
pub fn connect(
    addresses: &[String],
    process: usize,
    threads: usize,
) -> std::io::Result<(Vec<AllocatorBuilder>, Box<dyn Any + Send>)> {
    let listener = TcpListener::bind(addresses[process].as_str())?;
    let later = addresses.len() - process - 1;
    let accepting = std::thread::spawn(move || -> std::io::Result<Vec<TcpStream>> {
        let mut streams: Vec<Option<TcpStream>> = (0..later).map(|_| None).collect();
        while streams.iter().any(Option::is_none) {
            let (mut stream, from) = listener.accept()?;
            stream.set_nodelay(true)?;
            let mut index = [0u8; 8];
            stream.read_exact(&mut index)?;
            let index = u64::from_be_bytes(index) as usize;
            match index.checked_sub(process + 1).filter(|slot| *slot < later) {
                Some(slot) if streams[slot].is_none() => streams[slot] = Some(stream),
                _ => tracing::warn!(%from, index, "a connection announced no expected process index; closed"),
            }
        }
        Ok(streams.into_iter().flatten().collect())
    });
    let mut sockets = Vec::with_capacity(addresses.len());
    for address in &addresses[..process] {
        let mut attempts = 0u64;
        let mut stream = loop {
            match TcpStream::connect(address.as_str()) {
                Ok(stream) => break stream,
                Err(e) => {
                    attempts += 1;
                    // Once a second, as timely did on every attempt.
                    if attempts % 50 == 1 {
                        tracing::info!(%address, error = %e, "waiting for a peer process to listen");
                    }
                    std::thread::sleep(RETRY);
                }
            }
        };
        stream.set_nodelay(true)?;
        stream.write_all(&(process as u64).to_be_bytes())?;
        sockets.push(Some(stream));
    }
    sockets.push(None);
    let accepted = accepting.join().map_err(|_| std::io::Error::other("the thread accepting peers panicked"))??;
    sockets.extend(accepted.into_iter().map(Some));
    let hooks = Hooks::default();
    let allocators = ProcessBuilder::new_typed_vector(threads, hooks.refill.clone(), hooks.spill.clone());
    let (builders, guard) = initialize_networking_from_sockets(allocators, sockets, process, threads, hooks)?;
    Ok((builders.into_iter().map(AllocatorBuilder::Tcp).collect(), Box::new(guard)))
}
