//! The quickstart's `/pools/dashboard` in headless Chromium with every other
//! host unreachable: the page shows the pool and live numbers, they change
//! while requests are made, nothing is asked of another origin, no script
//! error or policy violation is logged, and at a phone's width in dark mode
//! nothing overflows. Screenshots go to `target/dashboard*.png`.
//!
//! Chromium is driven over its DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: commands on fd 3, answers on fd 4, each
//! message ended by a NUL), wired to two FIFOs by the shell.
#![cfg(feature = "sqlite")]

mod common;

use std::{
    collections::HashMap,
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::certs::KillOnDrop;
use serde_json::{Value, json};

/// A Chromium driven over the DevTools protocol.
struct Browser {
    _process: KillOnDrop,
    commands: std::fs::File,
    answers: mpsc::Receiver<Value>,
    next_id: u64,
    /// Events received while waiting for answers, by method.
    events: HashMap<String, Vec<Value>>,
}

impl Browser {
    /// Starts headless Chromium, or `None` (skip) when it is not installed,
    /// except under CI where that fails.
    fn start(dir: &Path) -> Option<Self> {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|name| {
                Command::new(name)
                    .arg("--version")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            });
        let Some(chromium) = chromium else {
            assert!(
                !common::in_ci(),
                "chromium is missing; scripts/services-up.sh installs it"
            );
            eprintln!("skipping: no chromium (scripts/services-up.sh installs it)");
            return None;
        };
        let (to, from) = (dir.join("to-browser"), dir.join("from-browser"));
        for fifo in [&to, &from] {
            assert!(Command::new("mkfifo").arg(fifo).status().unwrap().success());
        }
        let process = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "exec {chromium} \"$@\" 3<'{}' 4>'{}'",
                to.display(),
                from.display()
            ))
            .arg("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--remote-debugging-pipe",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--window-size=1280,900",
                // Every other host unreachable: names resolve nowhere, and
                // any address but loopback goes to a proxy that is not there.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
                "--proxy-server=http://127.0.0.1:9",
            ])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let process = KillOnDrop(process);
        // The shell opens fd 3 first, then fd 4: open them in that order. An
        // open blocks until the other side opens, so it runs on a thread of
        // its own: a browser that never starts fails the test, not hangs it.
        let (opened, pipes) = mpsc::channel();
        std::thread::spawn(move || {
            let commands = std::fs::OpenOptions::new().write(true).open(&to).unwrap();
            let reader = std::fs::File::open(&from).unwrap();
            let _ = opened.send((commands, reader));
        });
        let (commands, reader) = pipes
            .recv_timeout(Duration::from_secs(60))
            .expect("chromium never opened its DevTools pipe");
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(reader);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                message.pop();
                if let Ok(value) = serde_json::from_slice(&message)
                    && tx.send(value).is_err()
                {
                    break;
                }
                message.clear();
            }
        });
        Some(Self {
            _process: process,
            commands,
            answers,
            next_id: 0,
            events: HashMap::new(),
        })
    }

    /// Sends `method` (to the page `session`, when given) and waits for its
    /// result, keeping the events that arrive meanwhile.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self
                .answers
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("chromium did not answer {method}"));
            if value["id"] == id {
                assert!(value.get("error").is_none(), "{method}: {value}");
                return value["result"].clone();
            }
            if let Some(event) = value["method"].as_str() {
                self.events
                    .entry(event.to_owned())
                    .or_default()
                    .push(value["params"].clone());
            }
        }
    }

    /// The value of a script expression in the page.
    fn eval(&mut self, session: &str, expression: &str) -> Value {
        let result = self.call(
            Some(session),
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(result.get("exceptionDetails").is_none(), "{result}");
        result["result"]["value"].clone()
    }

    /// Polls `expression` until `done` holds for its value (30 s at most);
    /// while the page loads the expression may throw.
    fn until(&mut self, session: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let result = self.call(
                Some(session),
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            );
            let value = &result["result"]["value"];
            if result.get("exceptionDetails").is_none() && done(value) {
                return value.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the page never showed it: {result}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn screenshot(&mut self, session: &str, path: &Path) {
        let shot = self.call(
            Some(session),
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::write(path, png).unwrap();
    }
}

/// What the page shows: per pool its name and figures, the process's
/// memory, and whether the stream is live.
const READ: &str = r#"JSON.stringify({
  link: document.getElementById("link").dataset.state,
  rss: document.querySelector('#process [data-field="rss"]').textContent,
  pools: [...document.querySelectorAll("[data-pool]")].map((p) => ({
    name: p.querySelector('[data-field="name"]').textContent,
    leases: p.querySelector('[data-field="leases"]').textContent,
    health: p.querySelector('[data-field="health"]').textContent,
    breaker: p.querySelector('[data-field="breaker"]').textContent,
    points: p.querySelector('[data-chart="conns"] polyline.active').getAttribute("points").split(" ").length,
  })),
})"#;

fn read(browser: &mut Browser, session: &str, done: impl Fn(&Value) -> bool) -> Value {
    let text = browser.until(session, READ, |v| {
        v.as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .is_some_and(|v| done(&v))
    });
    serde_json::from_str(text.as_str().unwrap()).unwrap()
}

fn leases(page: &Value) -> u64 {
    page["pools"][0]["leases"]
        .as_str()
        .unwrap()
        .replace(',', "")
        .parse()
        .unwrap()
}

#[test]
fn the_quickstart_dashboard_is_live_in_a_browser() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut browser) = Browser::start(dir.path()) else {
        return;
    };

    let port = common::example::free_port();
    let binary = common::example::binary("quickstart", "sqlite");
    let mut server = KillOnDrop(
        Command::new(binary)
            .env("DATABASE_URL", dir.path().join("notes.db"))
            .env("BIND", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let origin = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while common::example::get(port, "/pools/health/live").is_none() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!("quickstart exited: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "quickstart never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
    let attached = browser.call(
        None,
        "Target.attachToTarget",
        json!({"targetId": target["targetId"], "flatten": true}),
    );
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    let s = session.as_str();
    for domain in [
        "Network.enable",
        "Runtime.enable",
        "Log.enable",
        "Page.enable",
    ] {
        browser.call(Some(s), domain, json!({}));
    }
    browser.call(
        Some(s),
        "Page.navigate",
        json!({"url": format!("{origin}/pools/dashboard")}),
    );

    let first = read(&mut browser, s, |page| {
        page["link"] == "live" && page["pools"][0]["name"] == "notes"
    });
    assert_eq!(first["pools"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["pools"][0]["health"], "pass", "{first}");
    assert_eq!(first["pools"][0]["breaker"], "breaker closed", "{first}");
    assert!(first["rss"].as_str().unwrap().ends_with("iB"), "{first}");
    let before = leases(&first);

    // Requests that lease from the pool, then the page shows more leases.
    for n in 0..20 {
        let body = format!(r#"{{"title":"note {n}"}}"#);
        let answer = common::example::request(port, "POST", "/notes", Some(&body)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
    let second = read(&mut browser, s, |page| leases(page) >= before + 20);
    assert!(
        second["pools"][0]["points"].as_u64().unwrap()
            > first["pools"][0]["points"].as_u64().unwrap(),
        "the chart grew: {first} then {second}"
    );

    // `DASHBOARD_LOAD_SECONDS=100` keeps a load of 16 clients going that
    // long before the screenshot (how README's picture was taken).
    let load: u64 = std::env::var("DASHBOARD_LOAD_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let until = Instant::now() + Duration::from_secs(load);
    let clients: Vec<_> = (0..if load > 0 { 16 } else { 0 })
        .map(|c| {
            std::thread::spawn(move || {
                while Instant::now() < until {
                    let _ = common::example::get(port, &format!("/notes/{}", c + 1));
                    let body = Some(r#"{"title":"load"}"#);
                    let _ = common::example::request(port, "POST", "/notes", body);
                    std::thread::sleep(Duration::from_millis(c % 4));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(load.saturating_sub(1)));

    let target_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    browser.screenshot(s, &target_dir.join("dashboard.png"));
    for client in clients {
        client.join().unwrap();
    }

    // A phone's width in dark mode: nothing wider than the screen.
    browser.call(
        Some(s),
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    browser.call(
        Some(s),
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    let overflow = browser.eval(
        s,
        "document.documentElement.scrollWidth - document.documentElement.clientWidth",
    );
    assert_eq!(overflow, 0, "the page fits a phone's width");
    let dark = browser.eval(s, "getComputedStyle(document.body).backgroundColor");
    assert_ne!(dark, "rgb(246, 247, 249)", "dark mode has its own colours");
    browser.screenshot(s, &target_dir.join("dashboard-phone-dark.png"));

    // Nothing was asked of another origin; no error was logged (a script
    // error or a Content-Security-Policy violation would be).
    browser.call(Some(s), "Runtime.evaluate", json!({"expression": "1"}));
    let requests = browser
        .events
        .remove("Network.requestWillBeSent")
        .unwrap_or_default();
    let urls: Vec<&str> = requests
        .iter()
        .filter_map(|r| r["request"]["url"].as_str())
        .collect();
    for path in [
        "/pools/dashboard",
        "/pools/dashboard/dashboard.js",
        "/pools/dashboard/dashboard.css",
        "/pools/events",
    ] {
        let url = format!("{origin}{path}");
        assert!(
            urls.contains(&url.as_str()),
            "{url} not asked for: {urls:?}"
        );
    }
    for request in &requests {
        let url = request["request"]["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("{origin}/")) || url.starts_with("data:"),
            "a request to another origin: {url}"
        );
    }
    let errors: Vec<_> = browser
        .events
        .remove("Log.entryAdded")
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e["entry"]["level"] == "error")
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    let exceptions = browser.events.remove("Runtime.exceptionThrown");
    assert!(exceptions.is_none(), "{exceptions:?}");
}
