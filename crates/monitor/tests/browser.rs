//! A real browser on the lab's monitor page through a failover: Debian's chromium, driven over
//! WebDriver by its chromedriver, loads the page; the store's primary is killed through the
//! front door's admin route; the page must name the new primary and log the failover without
//! being reloaded. It saves a screenshot of the page at the end.
//!
//! Needs the lab running (scripts/up) and `chromium` + `chromium-driver`: scripts/test runs it
//! after the scenarios, with
//!   HALAB_MONITOR_URL  the page (default http://127.0.0.1:8080)
//!   HALAB_ADMIN_TOKEN  the lab's admin token (from .env)
//!   HALAB_SCREENSHOT   where the PNG goes (default target/browser/monitor-failover.png)

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    _process: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = testkit::free_port();
        let process = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver runs (apt-get install chromium chromium-driver)");
        eventually(
            "chromedriver listening",
            Duration::from_secs(20),
            || async { TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop) },
        )
        .await;
        Driver {
            _process: process,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn browser(&self) -> Client {
        // Debian's /usr/bin/chromium is a wrapper script; the binary itself is cleaner to drive.
        let binary = ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("chromium is installed");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": binary,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1500,1100"],
            }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!("an object")
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

/// Calls `check` every 100 ms until it gives something, for at most `limit`.
async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let waiting = async {
        loop {
            if let Some(found) = check().await {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(limit, waiting)
        .await
        .unwrap_or_else(|_| panic!("{what}: not within {limit:?}"))
}

/// One HTTP/1.0 request to the monitor (the answer is then never chunked): status and body.
async fn http(base: &str, method: &str, path: &str, token: &str) -> (u16, String) {
    let host = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(host).await.expect("the monitor listens");
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// The store's primary, once both standbys are in sync with it (a failover needs one).
async fn steady_primary(base: &str) -> String {
    eventually(
        "a primary with both standbys in sync",
        Duration::from_secs(60),
        || async {
            let (_, body) = http(base, "GET", "/api/status", "").await;
            let status: Value = serde_json::from_str(&body).ok()?;
            let primary = status["store"]["primary"].as_str()?.to_string();
            let row = status["nodes"]
                .as_array()?
                .iter()
                .find(|n| n["addr"] == primary.as_str())?;
            (row["store"]["in_sync"].as_array()?.len() == 2).then_some(primary)
        },
    )
    .await
}

async fn text_of(browser: &Client, id: &str) -> String {
    let script = format!("return document.getElementById('{id}').textContent");
    let text = browser
        .execute(&script, vec![])
        .await
        .expect("the script runs");
    text.as_str().unwrap_or_default().to_string()
}

#[tokio::test]
#[ignore = "needs the lab and chromium + chromium-driver: scripts/test runs it"]
async fn the_page_shows_the_new_primary_without_a_reload() {
    let base = std::env::var("HALAB_MONITOR_URL").unwrap_or("http://127.0.0.1:8080".into());
    let token = std::env::var("HALAB_ADMIN_TOKEN").expect("HALAB_ADMIN_TOKEN: the lab's (.env)");
    let screenshot = std::env::var("HALAB_SCREENSHOT").map_or_else(
        |_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/browser/monitor-failover.png")
        },
        PathBuf::from,
    );

    let primary = steady_primary(&base).await;
    let driver = Driver::start().await;
    let browser = driver.browser().await;
    browser.goto(&base).await.expect("the page loads");
    eventually(
        "the page names the primary",
        Duration::from_secs(10),
        || async { (text_of(&browser, "store-primary").await == primary).then_some(()) },
    )
    .await;
    // Gone if the page is ever reloaded.
    browser
        .execute("window.halabLoadedOnce = true", vec![])
        .await
        .unwrap();

    let (status, body) = http(&base, "POST", "/admin/kill?node=primary", &token).await;
    assert_eq!(status, 200, "kill through the front door: {body}");

    let new_primary = eventually(
        "the page names a new primary",
        Duration::from_secs(30),
        || async {
            let shown = text_of(&browser, "store-primary").await;
            (shown.contains(':') && shown != primary).then_some(shown)
        },
    )
    .await;
    eventually(
        "the event log shows the failover",
        Duration::from_secs(10),
        || async {
            let log = text_of(&browser, "events").await;
            log.contains(&format!("failover: {new_primary} is the store's primary"))
                .then_some(())
        },
    )
    .await;
    let same_page = browser
        .execute("return window.halabLoadedOnce === true", vec![])
        .await
        .unwrap();
    assert_eq!(same_page, Value::Bool(true), "the page was reloaded");
    // The other systems are on the page too, filled in from the same stream.
    assert!(
        text_of(&browser, "election-term")
            .await
            .starts_with("term ")
    );
    assert!(
        text_of(&browser, "dispatcher-summary")
            .await
            .contains("workers")
    );

    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::create_dir_all(screenshot.parent().unwrap()).unwrap();
    std::fs::write(&screenshot, png).unwrap();
    println!("primary {primary} killed; the page shows {new_primary}");
    println!("screenshot: {}", screenshot.display());
    browser.close().await.unwrap();
}
