//! A ClickHouse HTTP client: statements in the body, inserts as TabSeparated, selects with
//! an external table so that values travel as data, never spliced into SQL text.

use std::io::Read;
use std::time::Duration;

use crate::clickhouse::ClickHouseError;

/// A ClickHouse HTTP client. Credentials come from `CHATFLOW_CH_USER` and
/// `CHATFLOW_CH_PASSWORD` (HTTP basic authentication), never from the command line.
///
/// `https://` URLs speak TLS (rustls) and trust the Mozilla root certificates
/// (`webpki-roots`) and, with `CHATFLOW_CH_CA=<file.pem>`, the certificates of that file (a
/// private CA, or a server's self-signed certificate authority).
#[derive(Clone)]
pub struct Client {
    url: String,
    agent: ureq::Agent,
    auth: Option<String>,
}

type Result<T> = std::result::Result<T, ClickHouseError>;

impl Client {
    pub fn new(url: &str) -> Client {
        let mut agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120));
        if let Some(tls) = tls_config() {
            agent = agent.tls_config(tls);
        }
        let agent = agent.build();
        let auth = std::env::var("CHATFLOW_CH_USER").ok().map(|user| {
            use base64::Engine;
            let password = std::env::var("CHATFLOW_CH_PASSWORD").unwrap_or_default();
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
        });
        Client { url: url.trim_end_matches('/').to_owned(), agent, auth }
    }

    fn request(&self, params: &[(&str, &str)]) -> ureq::Request {
        let mut request = self.agent.post(&format!("{}/", self.url));
        for (k, v) in params {
            request = request.query(k, v);
        }
        if let Some(auth) = &self.auth {
            request = request.set("Authorization", auth);
        }
        request
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn finish(&self, result: std::result::Result<ureq::Response, ureq::Error>, what: &str) -> Result<String> {
        let what = what.to_owned();
        match result {
            Ok(response) => {
                let mut body = String::new();
                match response.into_reader().read_to_string(&mut body) {
                    Ok(_) => Ok(body),
                    Err(source) => Err(ClickHouseError::Read { what, source }),
                }
            }
            Err(ureq::Error::Status(code, response)) => {
                let body = response.into_string().unwrap_or_default().trim().to_owned();
                Err(ClickHouseError::Refused { what, code, body })
            }
            Err(ureq::Error::Transport(t)) => {
                let mut reason = t.kind().to_string();
                let root = std::iter::successors(std::error::Error::source(&t), |e| e.source()).last();
                for detail in [t.message().map(str::to_owned), root.map(|e| e.to_string())].into_iter().flatten() {
                    reason = format!("{reason}: {detail}");
                }
                if reason.contains("certificate") {
                    reason +=
                        "; a server whose certificate a private CA signed needs CHATFLOW_CH_CA=<that CA's PEM file>";
                }
                Err(ClickHouseError::Unreachable { url: self.url.clone(), what, reason })
            }
        }
    }

    /// Runs a statement (its text in the body) and returns the answer.
    pub fn execute(&self, sql: &str) -> Result<String> {
        let answer = self.finish(self.request(&[]).send_string(sql), short(sql));
        log_statement("execute", sql, None, None, answer.as_deref().ok());
        answer
    }

    /// Inserts TabSeparated `rows` into `table` (`db.name (columns)`).
    pub fn insert(&self, table: &str, rows: &[u8]) -> Result<()> {
        let query = format!("INSERT INTO {table} FORMAT TabSeparated");
        let done = self.finish(self.request(&[("query", &query)]).send_bytes(rows), short(&query)).map(drop);
        if done.is_ok() {
            log_statement("insert", &query, Some(rows), None, None);
        }
        done
    }

    /// Runs `sql` (in the URL) with an external table `name` (`structure`, TabSeparated
    /// `rows`) sent as a multipart file: values stay data.
    pub fn select_with(&self, sql: &str, name: &str, structure: &str, rows: &[u8]) -> Result<String> {
        let boundary = "chatflow-7d2c9e0f4b1a";
        let mut body = Vec::new();
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.tsv\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(rows);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let structure_key = format!("{name}_structure");
        let format_key = format!("{name}_format");
        let request = self
            .request(&[("query", sql), (&structure_key, structure), (&format_key, "TabSeparated")])
            .set("Content-Type", &format!("multipart/form-data; boundary={boundary}"));
        let answer = self.finish(request.send_bytes(&body), short(sql));
        log_statement("select_with", sql, Some(rows), Some((name, structure)), answer.as_deref().ok());
        answer
    }
}

/// One statement as `CHATFLOW_SQL_LOG` records it.
#[derive(serde::Serialize)]
struct Statement<'a> {
    kind: &'static str,
    sql: &'a str,
    /// An insert's rows, or a select's external table rows.
    data: Option<std::borrow::Cow<'a, str>>,
    /// A select's external table: (name, structure).
    external: Option<(&'a str, &'a str)>,
    /// What the server answered (`None` for inserts and failures).
    answer: Option<&'a str>,
}

/// With `CHATFLOW_SQL_LOG=<file>` in the environment, every statement that succeeded is
/// appended to that file as a JSON line, in the order the server took them, with its data
/// and answer: the test that checks chatflow's SQL against a current ClickHouse replays them
/// (`scripts/lib/chdb_check.py`). A diagnostic: without the variable nothing is recorded.
///
/// Without the variable this costs one look at a `OnceLock`: the rows of an insert are not
/// touched.
fn log_statement(
    kind: &'static str,
    sql: &str,
    data: Option<&[u8]>,
    external: Option<(&str, &str)>,
    answer: Option<&str>,
) {
    static LOG: std::sync::OnceLock<Option<std::sync::Mutex<std::fs::File>>> = std::sync::OnceLock::new();
    let log = LOG.get_or_init(|| {
        let path = std::env::var_os("CHATFLOW_SQL_LOG")?;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path);
        match file {
            Ok(file) => Some(std::sync::Mutex::new(file)),
            Err(e) => {
                tracing::warn!(path = %std::path::Path::new(&path).display(), "CHATFLOW_SQL_LOG: {e}");
                None
            }
        }
    });
    if let Some(file) = log {
        let data = data.map(String::from_utf8_lossy);
        let statement = Statement { kind, sql, data, external, answer };
        let mut line = serde_json::to_vec(&statement).expect("a statement is JSON");
        line.push(b'\n');
        let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = std::io::Write::write_all(&mut *file, &line) {
            tracing::warn!("CHATFLOW_SQL_LOG: {e}");
        }
    }
}

/// The TLS settings of every client: the Mozilla roots plus `CHATFLOW_CH_CA`'s certificates
/// (read once; a file that cannot be read or holds no certificate is reported and left out,
/// and the first connection then fails naming the unknown issuer).
fn tls_config() -> Option<std::sync::Arc<rustls::ClientConfig>> {
    static CONFIG: std::sync::OnceLock<Option<std::sync::Arc<rustls::ClientConfig>>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            if let Some(path) = std::env::var_os("CHATFLOW_CH_CA") {
                let shown = std::path::Path::new(&path).display().to_string();
                let added = rustls_pki_types::CertificateDer::pem_file_iter(&path).map_err(|e| e.to_string()).and_then(
                    |certs| {
                        let certs: Vec<_> = certs.collect::<std::result::Result<_, _>>().map_err(|e| e.to_string())?;
                        let (added, _) = roots.add_parsable_certificates(certs);
                        Ok(added)
                    },
                );
                match added {
                    Ok(0) => tracing::error!("CHATFLOW_CH_CA={shown}: no certificate in the file"),
                    Ok(_) => {}
                    Err(e) => tracing::error!("CHATFLOW_CH_CA={shown}: {e}"),
                }
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| tracing::error!("TLS settings: {e}"))
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Some(std::sync::Arc::new(config))
        })
        .clone()
}

/// The statement as errors name it: its first line, cut at a word boundary near 80 bytes.
fn short(sql: &str) -> &str {
    let line = sql.trim_start().lines().next().unwrap_or("");
    if line.len() <= 80 {
        return line;
    }
    let cut = line.floor_char_boundary(80);
    line[..cut].rfind(' ').map_or(&line[..cut], |space| &line[..space])
}

#[cfg(test)]
mod tests {
    #[test]
    fn statements_are_named_by_whole_words() {
        let sql = "SELECT run, workers FROM chatflow._progress ORDER BY written_ms DESC, run DESC LIMIT 1 FORMAT TabSeparated";
        assert_eq!(super::short(sql), "SELECT run, workers FROM chatflow._progress ORDER BY written_ms DESC, run DESC");
    }
}
