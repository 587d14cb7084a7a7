//! A real browser on the lab: headless Chromium (Debian's
//! `chromium-headless-shell`, installed by `make deps`) driven over the
//! DevTools protocol, reaching the cluster the way a person does, through
//! `kubectl proxy` on loopback with the admin kubeconfig.
//!
//! The protocol runs over a pipe (`--remote-debugging-pipe`: commands on the
//! browser's fd 3, answers and events on its fd 4, one JSON message each,
//! NUL-terminated), so no debugging port is opened.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// The operator's web view, under the API server's root (`kubectl proxy`'s
/// address): the Service proxy to the operator's `http` port.
pub const WEB_VIEW: &str =
    "/api/v1/namespaces/switchyard-system/services/switchyard-operator:http/proxy/";

/// The browser program (`make deps` installs its Debian package).
const CHROMIUM: &str = "chromium-headless-shell";
/// The longest a DevTools command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// `kubectl proxy` for `cluster` on a free loopback port; killed when
/// dropped.
#[derive(Debug)]
pub struct KubectlProxy {
    _child: Child,
    _stdout: BufReader<ChildStdout>,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
}

impl KubectlProxy {
    /// Starts it and waits for the address it serves on.
    pub async fn start(cluster: &Cluster) -> Result<Self> {
        let kubectl = cluster.binaries().k8s("kubectl");
        let mut child = Command::new(&kubectl)
            .args(["proxy", "--port=0", "--kubeconfig"])
            .arg(cluster.kubeconfig())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io("starting", &kubectl))?;
        let stdout = child.stdout.take().ok_or_else(|| exited("kubectl proxy"))?;
        // Kept open: kubectl proxy must not write into a closed pipe.
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(30), stdout.read_line(&mut line))
            .await
            .map_err(|_| timeout("kubectl proxy to listen"))?
            .map_err(Error::io("reading", &kubectl))?;
        // "Starting to serve on 127.0.0.1:41385"
        let addr = line
            .trim()
            .rsplit(' ')
            .next()
            .filter(|a| a.starts_with("127.0.0.1:"))
            .ok_or_else(|| Error::Command {
                command: "kubectl proxy --port=0".into(),
                detail: format!("printed {line:?}, not the address it serves on"),
            })?;
        Ok(Self {
            url: format!("http://{addr}"),
            _child: child,
            _stdout: stdout,
        })
    }
}

/// A headless Chromium; killed when dropped.
#[derive(Debug)]
pub struct Browser {
    _child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    next_id: u64,
}

/// One tab of a [`Browser`].
#[derive(Debug, Clone)]
pub struct Tab {
    session: String,
}

fn exited(program: &str) -> Error {
    Error::Exited {
        program: program.into(),
        status: "no output".into(),
        log: "its stderr".into(),
    }
}

fn timeout(what: &str) -> Error {
    Error::Timeout {
        what: what.into(),
        seconds: COMMAND_TIMEOUT.as_secs(),
    }
}

impl Browser {
    /// Starts Chromium with its profile in `dir` and a 1280×900 window.
    pub async fn launch(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(Error::io("creating", dir))?;
        let line = format!(
            "exec {CHROMIUM} --no-sandbox --disable-gpu --hide-scrollbars \
             --window-size=1280,900 --remote-debugging-pipe --user-data-dir={} \
             about:blank 3<&0 4>&1 </dev/null >/dev/null 2>{}",
            dir.join("profile").display(),
            dir.join("chromium.log").display(),
        );
        let mut child = Command::new("bash")
            .args(["-c", &line])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(Error::io("starting", Path::new(CHROMIUM)))?;
        let input = child.stdin.take().ok_or_else(|| exited(CHROMIUM))?;
        let output = child.stdout.take().ok_or_else(|| exited(CHROMIUM))?;
        Ok(Self {
            _child: child,
            input,
            output: BufReader::new(output),
            next_id: 1,
        })
    }

    /// Sends one command (to the browser, or to a tab's `session`) and
    /// returns its result, skipping the events sent meanwhile.
    async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = msg.to_string().into_bytes();
        bytes.push(0);
        self.input
            .write_all(&bytes)
            .await
            .map_err(Error::io("talking to", Path::new(CHROMIUM)))?;
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, self.answer(id))
            .await
            .map_err(|_| timeout(method))??;
        match answer.get("error") {
            Some(e) => Err(Error::Command {
                command: format!("DevTools {method}"),
                detail: e.to_string(),
            }),
            None => Ok(answer["result"].clone()),
        }
    }

    async fn answer(&mut self, id: u64) -> Result<Value> {
        loop {
            let mut buf = Vec::new();
            let n = self
                .output
                .read_until(0, &mut buf)
                .await
                .map_err(Error::io("reading from", Path::new(CHROMIUM)))?;
            if n == 0 {
                return Err(exited(CHROMIUM));
            }
            buf.pop_if(|b| *b == 0);
            let msg: Value = serde_json::from_slice(&buf)
                .map_err(|e| Error::Serde(format!("DevTools message: {e}")))?;
            if msg["id"] == json!(id) {
                return Ok(msg);
            }
        }
    }

    /// Opens `url` in a new tab.
    pub async fn open(&mut self, url: &str) -> Result<Tab> {
        let target = self
            .call(None, "Target.createTarget", json!({"url": url}))
            .await?;
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({"targetId": target["targetId"], "flatten": true}),
            )
            .await?;
        let session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| Error::Serde(format!("attachToTarget answered {attached}")))?;
        Ok(Tab {
            session: session.to_string(),
        })
    }

    /// The value of the JavaScript `expression` in `tab` (awaited when it
    /// is a promise); a thrown exception is an error.
    pub async fn eval(&mut self, tab: &Tab, expression: &str) -> Result<Value> {
        let params = json!({"expression": expression, "returnByValue": true, "awaitPromise": true});
        let r = self
            .call(Some(&tab.session), "Runtime.evaluate", params)
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(Error::Command {
                command: format!("evaluating {expression}"),
                detail: e.to_string(),
            });
        }
        Ok(r["result"]["value"].clone())
    }

    /// Waits until the JavaScript `expression` is `true` in `tab`, asking
    /// every 200 ms (errors while the page loads count as not yet).
    pub async fn wait_until(
        &mut self,
        tab: &Tab,
        expression: &str,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if self.eval(tab, expression).await.ok() == Some(Value::Bool(true)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(Error::Timeout {
            what: format!("{expression} in the browser"),
            seconds: timeout.as_secs(),
        })
    }

    /// A PNG of what `tab` shows in the window, written to `path`.
    pub async fn screenshot(&mut self, tab: &Tab, path: &Path) -> Result<()> {
        let params = json!({"format": "png"});
        let r = self
            .call(Some(&tab.session), "Page.captureScreenshot", params)
            .await?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap_or_default())
            .map_err(|e| Error::Serde(format!("screenshot: {e}")))?;
        std::fs::write(path, png).map_err(Error::io("writing", path))
    }
}
