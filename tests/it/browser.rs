//! The dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver,
//! started by `scripts/browser.sh` on 127.0.0.1:9515, as scripts/test.sh does). Without it
//! these tests fail with a message saying so; they never skip.
//!
//! * Over a run's change files: the channel page shows the same top words, top users and
//!   message counts as `chatflow query`; the posts and dead-letter pages the same rows; the
//!   network page draws 31 nodes (the user and their top 30) and hovering an edge shows its
//!   walks.
//! * Over a live Kafka run (`run --kafka … --serve`): a producer feeding the topic makes the
//!   channel page's numbers change without a reload, and what it shows equals `chatflow query`
//!   at the cut it shows; the health page lists each partition's lag.
//!
//! A screenshot of each page is written to `target/screenshots/` for a person to look at.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::kafka::{broker, unique};
use crate::serve::{drain, get, json as parse, listening, query_json, start, Server};
use crate::support::*;

const DRIVER: &str = "127.0.0.1:9515";

/// One browser session at a time: Chromium is heavy on two cores.
static ONE_BROWSER: Mutex<()> = Mutex::new(());

/// Runs `test` with a fresh headless Chromium session (closed afterwards, also on failure).
fn with_browser(test: impl AsyncFnOnce(&Client)) {
    let _one = ONE_BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let client = session().await;
        let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(test(&client))).await;
        let _ = client.close().await;
        if let Err(panic) = outcome {
            std::panic::resume_unwind(panic);
        }
    });
}

async fn session() -> Client {
    if std::net::TcpStream::connect_timeout(&DRIVER.parse().unwrap(), Duration::from_secs(2)).is_err() {
        panic!(
            "no WebDriver on {DRIVER}: start chromedriver with `scripts/browser.sh start` (scripts/test.sh does \
             this; it installs Debian's chromium and chromium-driver when missing)"
        );
    }
    let mut chrome = json!({"args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-dev-shm-usage", "--window-size=1400,1500",
    ]});
    // The browser scripts/browser.sh found, if it wrote it down.
    let noted = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/chromedriver-9515/browser");
    if let Ok(binary) = std::fs::read_to_string(noted) {
        chrome["binary"] = binary.trim().into();
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), chrome);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://{DRIVER}"))
        .await
        .unwrap_or_else(|e| panic!("the browser could not be started through {DRIVER}: {e}"))
}

/// Evaluates `script` (a function body: `return …`) in the page until its value is truthy;
/// returns it. Waits on what the page shows, not on time; the deadline is a last resort.
async fn until(client: &Client, what: &str, script: &str) -> Value {
    let began = Instant::now();
    loop {
        let value = client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::Array(a) => !a.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        if began.elapsed() > Duration::from_secs(120) {
            let error = client.execute("return document.getElementById('error').textContent", vec![]).await;
            panic!("the page never showed {what} (its error line: {error:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The cells of table `id` below its header, as text.
async fn table(client: &Client, id: &str) -> Vec<Vec<String>> {
    let script = format!(
        "return [...document.getElementById('{id}').rows].slice(1).map(r => [...r.cells].map(c => c.textContent))"
    );
    serde_json::from_value(client.execute(&script, vec![]).await.unwrap()).unwrap()
}

/// `columns` of each row of a `chatflow query --format json` answer, as text.
fn cells(rows: &Value, columns: &[&str]) -> Vec<Vec<String>> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| match &r[c] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect()
}

/// Writes a screenshot of what the browser shows to `target/screenshots/<name>.png`.
async fn screenshot(client: &Client, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, client.screenshot().await.unwrap()).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

/// Goes to page `hash` of the dashboard at `server` and waits until it has shown a cut.
async fn open(client: &Client, server: &Server, hash: &str) {
    client.goto(&format!("http://{}/{hash}", server.address)).await.unwrap();
    until(client, &format!("{hash} at a cut"), "return document.body.dataset.shown").await;
}

/// A user `hub` with 40 connections of different strengths, and a ring among them (for walks).
fn hub_edges(path: &Path) {
    let mut lines = String::new();
    for i in 0..40 {
        for _ in 0..=(i % 7) {
            lines += &format!(
                "{}\n",
                json!({"ts": 1740787200000i64 + i, "src": "hub", "dst": format!("u{i:02}"), "weight": 1})
            );
        }
        lines += &format!(
            "{}\n",
            json!({"ts": 1740787200000i64 + i, "src": format!("u{i:02}"), "dst": format!("u{:02}", (i + 1) % 40), "weight": 1})
        );
    }
    std::fs::write(path, lines).unwrap();
}

#[test]
fn dashboard_shows_what_query_answers() {
    let dir = tempfile::tempdir().unwrap();
    let input = produce_mixed(dir.path(), 6000, 94, b"{\"ts\": 1, \"channel\": \"broken\nnot json at all\n\xff\xfe\n");
    let edges = dir.path().join("edges.jsonl");
    hub_edges(&edges);
    let out = dir.path().join("out");
    run_ok(&["run", "--replay", path_str(&input), path_str(&edges), "--out", path_str(&out), "--batch", "1000"]);
    let store = ["--dir", path_str(&out)];
    let server = start(&["--from", path_str(&out)]);
    with_browser(async |client| {
        // The channel page: the busiest channel first, its numbers as `chatflow query` gives them.
        open(client, &server, "#channel").await;
        until(client, "top words", "return document.getElementById('top-words').rows.length > 1").await;
        let channel = client.execute("return document.getElementById('channel-select').value", vec![]).await.unwrap();
        let channel = channel.as_str().unwrap().to_owned();
        let channels = parse(&get(&server, "/api/channels", None).1);
        assert_eq!(channels["channels"][0]["channel"], Value::from(channel.as_str()), "the busiest channel is shown");
        let words = query_json(&store, "top_words", &["--channel", &channel]);
        assert_eq!(table(client, "top-words").await, cells(&words, &["rank", "word", "count"]));
        let users = query_json(&store, "top_users", &["--channel", &channel]);
        assert_eq!(table(client, "top-users").await, cells(&users, &["rank", "user", "messages"]));
        let messages: i64 = query_json(&store, "channel_activity", &["--channel", &channel])
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["messages"].as_i64().unwrap())
            .sum();
        let total =
            client.execute("return document.getElementById('channel-total').textContent", vec![]).await.unwrap();
        assert_eq!(total, Value::from(format!("{messages} messages in all")));
        // The page's weight: what came over the wire (gzip) and what it decodes to.
        let weight = client
            .execute(
                "const n = performance.getEntriesByType('navigation')[0];\
                 const r = performance.getEntriesByType('resource').filter(e => e.name.includes('/assets/'));\
                 return [n.transferSize + r.reduce((a, e) => a + e.transferSize, 0),\
                         n.decodedBodySize + r.reduce((a, e) => a + e.decodedBodySize, 0), r.length]",
                vec![],
            )
            .await
            .unwrap();
        let (sent, decoded) = (weight[0].as_u64().unwrap(), weight[1].as_u64().unwrap());
        eprintln!("page weight: {sent} bytes transferred, {decoded} bytes decoded, {} assets", weight[2]);
        assert_eq!(weight[2], Value::from(3), "uPlot's script and style, cytoscape");
        assert!(sent < decoded / 2, "the page and its assets come gzip-compressed: {sent} of {decoded} bytes");
        let charts = client.execute("return document.querySelectorAll('canvas').length", vec![]).await.unwrap();
        assert_eq!(charts, Value::from(3), "three charts drawn");
        screenshot(client, "channel").await;

        // Another channel, chosen in the list.
        let second = channels["channels"][1]["channel"].as_str().unwrap().to_owned();
        client
            .find(Locator::Css(&format!("#channel-select option[value='{second}']")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let words = query_json(&store, "top_words", &["--channel", &second]);
        let expected = cells(&words, &["rank", "word", "count"]);
        let began = Instant::now();
        while table(client, "top-words").await != expected {
            assert!(began.elapsed() < Duration::from_secs(60), "the page never showed {second}'s top words");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // Posts: top retweeted as the view has it.
        open(client, &server, "#posts").await;
        until(client, "places", "return document.getElementById('places').rows.length > 1").await;
        let retweeted = query_json(&store, "top_retweeted", &[]);
        assert_eq!(table(client, "retweeted").await, cells(&retweeted, &["rank", "post_id", "retweets"]));
        screenshot(client, "posts").await;

        // The network: the hub and its top 30, hovering an edge tells its walks.
        open(client, &server, "#network").await;
        client.find(Locator::Id("user")).await.unwrap().send_keys("hub").await.unwrap();
        client.find(Locator::Id("draw")).await.unwrap().click().await.unwrap();
        let nodes = until(client, "the graph", "return document.getElementById('graph').dataset.nodes").await;
        assert_eq!(nodes, Value::from("31"), "the user and their 30 strongest connections");
        let top = query_json(&store, "top_connections", &["--user", "hub"]);
        assert_eq!(top.as_array().unwrap().len(), 30);
        let hover = client
            .execute("const e = state.graph.edges()[0]; e.emit('mouseover'); return document.getElementById('hover').textContent", vec![])
            .await
            .unwrap();
        let hover = hover.as_str().unwrap();
        let shown = top
            .as_array()
            .unwrap()
            .iter()
            .find(|r| hover.contains(&format!("hub – {}:", r["other"].as_str().unwrap())));
        let row = shown.unwrap_or_else(|| panic!("hovering shows an edge of the top 30: {hover}"));
        assert!(
            hover.contains(&format!("walks2 {}, walks3 {}", row["walks2"], row["walks3"])),
            "hover {hover:?} against {row}"
        );
        screenshot(client, "network").await;

        // Dead letters, with their reasons.
        open(client, &server, "#dead").await;
        until(client, "dead letters", "return document.getElementById('dead-letters').rows.length > 1").await;
        let dead = query_json(&store, "dead_letters", &["--limit", "500"]);
        assert_eq!(dead.as_array().unwrap().len(), 3);
        assert_eq!(table(client, "dead-letters").await, cells(&dead, &["source", "position", "error", "raw"]));
        screenshot(client, "dead-letters").await;

        open(client, &server, "#health").await;
        let health = table(client, "health-table").await;
        assert_eq!(health[0][1], format!("{} (every update before it is durable)", channels["cut"]));
        screenshot(client, "health").await;
    });
}

/// Waits until the channel list of the page adds up to `messages`.
async fn counted(client: &Client, server: &Server, messages: u64) {
    let count = "return [...document.getElementById('channel-select').options]\
        .map(o => +o.textContent.match(/\\((\\d+)\\)$/)[1]).reduce((a, b) => a + b, 0)";
    let began = Instant::now();
    loop {
        let shown = client.execute(count, vec![]).await.unwrap();
        if shown == messages {
            return;
        }
        if began.elapsed() > Duration::from_secs(120) {
            let page = client
                .execute("return [state.cut, state.url, document.getElementById('error').textContent, window.shownLog.length]", vec![])
                .await;
            let api = get(server, "/api/channels", None).1;
            panic!("the page never counted {messages} messages: it shows {shown} ({page:?}); the API: {api}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value at quantile `q` of `values` (sorted here).
fn quantile(values: &mut [i64], q: f64) -> i64 {
    values.sort_unstable();
    values[((values.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn a_kafka_fed_page_changes_without_reloading() {
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("browser");
    let topic = format!("{prefix}-chat");
    let produce_more = |count: &str, seed: &str| {
        run_ok(&[
            "produce",
            "--kafka",
            broker,
            "--chat-topic",
            &topic,
            "--count",
            count,
            "--seed",
            seed,
            "--partitions",
            "2",
        ]);
    };
    produce_more("3000", "95");
    let out = dir.path().join("out");
    let (mut server, stderr) = listening(
        chatflow()
            .args(["run", "--kafka", broker, "--chat-topic", &topic, "--out", path_str(&out)])
            .args(["-w", "2", "--tick-ms", "200", "--idle-ms", "300", "--serve", "127.0.0.1:0"])
            .stdout(Stdio::null()),
    );
    drain(stderr);
    let store = ["--dir", path_str(&out)];
    with_browser(async |client| {
        open(client, &server, "#channel").await;
        until(client, "all 3000 messages", "return (document.getElementById('channel-select').dataset.names || '').length > 0 && state.cut !== null && (window.shownLog.length > 0)").await;
        // Wait until the page counts every message produced so far.
        counted(client, &server, 3000).await;
        let before = table(client, "top-words").await;
        client.execute("window.noReload = 'still the same page'; return 1", vec![]).await.unwrap();

        // More messages into the topic: the numbers change in place.
        produce_more("4000", "96");
        counted(client, &server, 7000).await;
        let marker = client.execute("return window.noReload", vec![]).await.unwrap();
        assert_eq!(marker, Value::from("still the same page"), "the page was reloaded");
        let after = table(client, "top-words").await;
        assert_ne!(before, after, "the top words changed");
        // What the page shows is the view at the cut it shows.
        let channel = client.execute("return document.getElementById('channel-select').value", vec![]).await.unwrap();
        let cut = client.execute("return state.cut", vec![]).await.unwrap().as_u64().unwrap();
        let at = (cut - 1).to_string();
        let words = query_json(&store, "top_words", &["--channel", channel.as_str().unwrap(), "--as-of", &at]);
        assert_eq!(after, cells(&words, &["rank", "word", "count"]));
        let highlighted = client.execute("return document.querySelectorAll('#top-words tr.new').length", vec![]).await;
        eprintln!("rows marked new after the last cut: {highlighted:?}");
        screenshot(client, "channel-live").await;

        // Cut → browser: from the progress record's write to the page showing that cut.
        let log = client.execute("return window.shownLog", vec![]).await.unwrap();
        let mut latencies: Vec<i64> = log
            .as_array()
            .unwrap()
            .iter()
            .skip(1) // the first event shows a cut committed before the page opened
            .filter_map(|e| Some(e["shown_ms"].as_i64()? - e["committed_ms"].as_i64()?))
            .collect();
        if !latencies.is_empty() {
            let n = latencies.len();
            let (p50, p99, max) =
                (quantile(&mut latencies, 0.5), quantile(&mut latencies, 0.99), *latencies.iter().max().unwrap());
            eprintln!("cut → browser over {n} cuts: p50 {p50} ms, p99 {p99} ms, max {max} ms");
        }

        // Health: the cut, and each partition's lag (0 once everything is read).
        open(client, &server, "#health").await;
        until(client, "the lag of both partitions", "return document.getElementById('lag-table').rows.length === 3")
            .await;
        let lag = table(client, "lag-table").await;
        assert_eq!(lag.iter().map(|r| r[0].clone()).collect::<Vec<_>>(), [topic.clone(), topic.clone()]);
        let health = parse(&get(&server, "/api/health", None).1);
        assert_eq!(health["run"]["events"], Value::from(7000), "{health}");
        screenshot(client, "health-live").await;
    });
    let _ = std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "the run ended with {status}");
}
