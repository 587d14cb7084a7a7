//! The migration's web view in a real headless Chromium: opened through
//! `kubectl proxy` and the API server's Service proxy before the plan is
//! applied, read while the nodes advance, then asked for the drop that
//! `observe` shows.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;
use switchyard_e2e::Cluster;
use switchyard_e2e::browser::{Browser, KubectlProxy, Tab, WEB_VIEW};
use tokio::task::JoinHandle;

/// How often the test reads the page while the plan runs (the page asks
/// the API server every second).
const SAMPLE: Duration = Duration::from_millis(250);

/// The open page; the browser and the proxy end when it is dropped.
pub struct WebView {
    _proxy: KubectlProxy,
    browser: Browser,
    tab: Tab,
}

/// One row of the page's nodes table.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    pub node: String,
    pub step: String,
    pub timings: String,
    pub connections: f64,
}

/// What the page shows at one moment.
#[derive(Debug, Clone, Deserialize)]
pub struct Shown {
    pub phase: String,
    pub error: String,
    pub polls: u32,
    pub rows: Vec<Row>,
}

/// What the page showed while the plan ran.
#[derive(Debug, Default)]
pub struct Seen {
    pub phases: BTreeSet<String>,
    /// (node, step) for steps between Pending and Done.
    pub in_flight: BTreeSet<(String, String)>,
    /// The most connections a second any node showed.
    pub busiest: f64,
    pub last: Option<Shown>,
    /// Whether the screenshot midway was taken.
    pub pictured: bool,
}

impl Row {
    /// Done, with every step it took, through Uncordon (from its
    /// NodeMigrated Event, which the page asks for after the status).
    fn complete(&self) -> bool {
        self.step == "Done"
            && self.timings.starts_with("Cordon ")
            && self.timings.contains(" · Uncordon ")
    }
}

impl Shown {
    /// Migrating, with a node done and one in flight.
    fn midway(&self) -> bool {
        let step = |f: fn(&str) -> bool| self.rows.iter().any(|r| f(&r.step));
        self.phase == "Migrating"
            && step(|s| s == "Done")
            && step(|s| !matches!(s, "Pending" | "Done"))
    }
}

impl Seen {
    fn record(&mut self, s: Shown) {
        self.phases.insert(s.phase.clone());
        for r in &s.rows {
            self.busiest = self.busiest.max(r.connections);
            if !matches!(r.step.as_str(), "Pending" | "Done") {
                self.in_flight.insert((r.node.clone(), r.step.clone()));
            }
        }
        self.last = Some(s);
    }
}

const READ: &str = r#"(() => ({
  phase: document.querySelector('#phase').textContent,
  error: document.querySelector('#error').textContent,
  polls: Number(document.body.dataset.polls || 0),
  rows: [...document.querySelectorAll('#nodes tbody tr')].map((tr) => ({
    node: tr.dataset.node, step: tr.dataset.step, timings: tr.cells[4].textContent,
    connections: Number(tr.cells[5].textContent) })),
}))()"#;

impl WebView {
    /// Opens the page and waits until it has asked the API server once.
    pub async fn open(c: &Cluster) -> Self {
        let proxy = KubectlProxy::start(c).await.unwrap();
        let mut browser = Browser::launch(&c.state_dir().join("chromium"))
            .await
            .unwrap();
        let tab = browser
            .open(&format!("{}{WEB_VIEW}", proxy.url))
            .await
            .unwrap();
        let polled = "Number(document.body.dataset.polls || 0) > 0";
        browser
            .wait_until(&tab, polled, Duration::from_secs(60))
            .await
            .unwrap();
        let mut view = Self {
            _proxy: proxy,
            browser,
            tab,
        };
        let s = view.shown().await.expect("the page renders");
        assert_eq!(s.error, "", "the page could not read the cluster");
        eprintln!("  web view: open, plan phase {:?}", s.phase);
        view
    }

    /// The page's state; `None` while it is still loading.
    pub async fn shown(&mut self) -> Option<Shown> {
        let v = self.browser.eval(&self.tab, READ).await.ok()?;
        serde_json::from_value(v).ok()
    }

    async fn eval(&mut self, expression: &str) -> Value {
        self.browser.eval(&self.tab, expression).await.unwrap()
    }

    /// Saves what the page shows as `switchyard-web-<name>.png` in the
    /// temporary directory (the README's picture is one).
    async fn screenshot(&mut self, name: &str) {
        let png = std::env::temp_dir().join(format!("switchyard-web-{name}.png"));
        self.browser.screenshot(&self.tab, &png).await.unwrap();
        eprintln!("  web view: screenshot {}", png.display());
    }
}

/// Reads the page until it shows the plan Succeeded with every node Done
/// and the steps each took.
pub fn follow(mut view: WebView) -> JoinHandle<(WebView, Seen)> {
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            if let Some(s) = view.shown().await {
                let done = s.phase == "Succeeded" && s.rows.iter().all(Row::complete);
                if !seen.pictured && s.midway() {
                    seen.pictured = true;
                    view.screenshot("migrating").await;
                }
                seen.record(s);
                if done {
                    break;
                }
            }
            tokio::time::sleep(SAMPLE).await;
        }
        (view, seen)
    })
}

/// The page followed the migration: it showed nodes in flight while the
/// plan was Migrating, connections through the new datapath, and at the
/// end every node Done with every step it took and how long each took.
pub async fn assert_followed(c: &Cluster, watching: JoinHandle<(WebView, Seen)>) -> WebView {
    let (view, seen) = watching.await.unwrap();
    eprintln!(
        "  web view: phases {:?}, in flight {:?}, busiest {:.1} connections/s",
        seen.phases, seen.in_flight, seen.busiest
    );
    let last = seen.last.as_ref().expect("the page was read");
    assert_eq!(last.phase, "Succeeded", "{last:?}");
    assert_eq!(last.error, "", "{last:?}");
    assert!(seen.phases.contains("Migrating"), "{seen:?}");
    assert!(!seen.in_flight.is_empty(), "no node shown between steps");
    assert!(seen.busiest > 0.0, "no connection shown");
    let nodes: BTreeSet<_> = last.rows.iter().map(|r| r.node.as_str()).collect();
    let want: BTreeSet<_> = c.plan().nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(nodes, want, "{last:?}");
    // Every step each node took, from its NodeMigrated Event.
    for r in &last.rows {
        assert!(r.complete(), "{r:?}");
    }
    view
}

const FLOWS: &str = r#"[...document.querySelectorAll('#flows tbody tr')]
  .map((tr) => [...tr.cells].map((td) => td.textContent))"#;

/// With the verdict filter on DROPPED, the page shows the one refused
/// connection: the pod, the Service, the node and the reason, and the map
/// draws the pod's dropped edge to the Service. Saves a screenshot.
pub async fn assert_shows_the_drop(view: &mut WebView, pod: &str, node: &str, service: &str) {
    view.eval("(() => { const s = document.querySelector('#verdict'); s.value = 'DROPPED'; s.dispatchEvent(new Event('change')); })()")
        .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows: Vec<Vec<String>> = serde_json::from_value(view.eval(FLOWS).await).unwrap();
        let to: Vec<_> = rows.into_iter().filter(|r| r[3] == service).collect();
        if !to.is_empty() {
            break to;
        }
        assert!(
            Instant::now() < deadline,
            "the page shows no drop to {service}"
        );
        tokio::time::sleep(SAMPLE).await;
    };
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!((r[1].as_str(), r[2].as_str()), (node, pod), "{r:?}");
    assert_eq!(
        (r[5].as_str(), r[6].as_str()),
        ("DROPPED", "SERVICE_BACKEND_NOT_FOUND")
    );
    let edge = format!(
        "document.querySelector('#map g.edge[data-from=\"{pod}\"][data-to=\"{service}\"]')?.dataset.dropped"
    );
    assert_eq!(
        view.eval(&edge).await,
        "1",
        "the map's edge {pod} → {service}"
    );
    eprintln!("  web view: one DROPPED flow {pod} -> {service} on {node}");
    view.screenshot("dropped").await;
}
