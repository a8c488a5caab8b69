//! Helpers for end-to-end tests: run the real `confidant` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_confidant"))
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `dir/name` as a string, for command-line arguments.
pub fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

/// Seals the Hugging Face model directory `hf` with `config` (JSON) as `dir/<name>.sealed`
/// and `dir/<name>.dek`, signed by `dir/keys/publisher.key`.
pub fn seal_hf(dir: &Path, hf: &Path, config: &str, name: &str) {
    std::fs::write(dir.join(format!("{name}.json")), config).unwrap();
    let out = confidant(&[
        "seal",
        "--hf-dir",
        hf.to_str().unwrap(),
        "--config",
        &p(dir, &format!("{name}.json")),
        "--signing-key",
        &p(dir, "keys/publisher.key"),
        "--out",
        &p(dir, &format!("{name}.sealed")),
        "--key-out",
        &p(dir, &format!("{name}.dek")),
    ]);
    assert!(out.status.success(), "seal --hf-dir: {}", stderr(&out));
}

/// `confidant ARGS`, not started (for a test that sets its own stdio).
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.args(args).env_remove("CONFIDANT_DATA_DIR");
    c
}

/// Runs `confidant ARGS` to completion.
pub fn confidant(args: &[&str]) -> Output {
    command(args).output().expect("run confidant")
}

/// A `confidant serve` child process, stopped with SIGTERM on drop.
pub struct Server {
    pub child: Child,
    /// The demo API key, when the server printed one.
    pub api_key: Option<String>,
    pub addr: String,
    pub cert: PathBuf,
    /// `http://HOST:PORT/metrics`, when the server serves metrics.
    pub metrics_url: Option<String>,
    /// `https://HOST:PORT/v1`, when the server serves the embeddings API.
    pub http_url: Option<String>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `confidant serve --listen 127.0.0.1:0 ARGS` and waits until it is ready.
    pub fn start(args: &[&str]) -> Self {
        Self::try_start(args).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Like `start`, but returns the stderr text if the server exits before it is ready.
    pub fn try_start(args: &[&str]) -> Result<Self, String> {
        Self::try_start_env(args, &[])
    }

    /// Like `try_start`, with extra environment variables (they override `RUST_LOG=info`).
    pub fn try_start_env(args: &[&str], env: &[(&str, &str)]) -> Result<Self, String> {
        let mut cmd = Command::new(bin());
        cmd.env("RUST_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .arg("serve")
            .args(["--listen", "127.0.0.1:0"])
            .args(if args.contains(&"--metrics-listen") {
                &[][..]
            } else {
                &["--metrics-listen", "127.0.0.1:0"][..]
            })
            .args(if args.contains(&"--http-listen") {
                &[][..]
            } else {
                &["--http-listen", "127.0.0.1:0"][..]
            })
            .args(args)
            .env_remove("CONFIDANT_DATA_DIR")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn confidant serve");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let err_pipe = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let out_pipe = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut api_key = None;
        let mut metrics_url = None;
        let mut http_url = None;
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    if let Some(k) = line.strip_prefix(
                        "confidant: demo API key (shown once; only its hash is stored): ",
                    ) {
                        api_key = Some(k.trim().to_string());
                    }
                    if let Some(url) = line.strip_prefix("confidant: metrics on ") {
                        metrics_url = Some(url.trim().to_string());
                    }
                    if let Some(url) = line.strip_prefix("confidant: embeddings API on ") {
                        http_url = Some(url.trim().to_string());
                    }
                    if let Some(rest) = line.strip_prefix("confidant: serving on ") {
                        let addr = rest.split_whitespace().next().unwrap().to_string();
                        let cert = rest
                            .split("TLS certificate: ")
                            .nth(1)
                            .unwrap()
                            .trim_end_matches(')')
                            .into();
                        return Ok(Self {
                            child,
                            api_key,
                            addr,
                            cert,
                            metrics_url,
                            http_url,
                            stderr,
                        });
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {}
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                let log = stderr.lock().unwrap().join("\n");
                return Err(format!("exited with {status}:\n{log}"));
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                let log = stderr.lock().unwrap().join("\n");
                return Err(format!("not ready within 60 s:\n{log}"));
            }
        }
    }

    pub fn ca(&self) -> Vec<u8> {
        std::fs::read(&self.cert).expect("read server cert")
    }

    /// A TLS channel to the server (trusting its certificate), for generated clients and raw
    /// calls.
    #[allow(dead_code)]
    pub async fn channel(&self) -> tonic::transport::Channel {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(self.ca()));
        tonic::transport::Endpoint::from_shared(self.addr.clone())
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// A client carrying the server's demo key (if any).
    pub async fn client(&self) -> confidant::client::Client {
        let c = confidant::client::Client::connect(&self.addr, &self.ca())
            .await
            .expect("connect");
        match &self.api_key {
            Some(k) => c.with_api_key(k).unwrap(),
            None => c,
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    /// [`Self::stop`], with how long the stop took and the whole log, its last lines included.
    #[allow(dead_code)]
    pub fn stop_timed(mut self) -> (std::process::ExitStatus, Duration, String) {
        let stopping = std::time::Instant::now();
        let status = self.terminate();
        let took = stopping.elapsed();
        (status, took, self.logs())
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("wait");
                // A server that needs SIGKILL hides a hang: its own, or a client connection
                // the test left open on a runtime that cannot close it (a `current_thread`
                // test blocked here). Unless a test is failing already, that fails it.
                if !std::thread::panicking() {
                    panic!(
                        "the server did not stop within 20 s of SIGTERM and was killed:\n{}",
                        self.logs()
                    );
                }
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// The logs once they hold every one of `needles`, or as they are after `secs` seconds:
    /// stderr is read by its own thread, so a line written before the server said it was
    /// serving may not have been read yet when `start` returns.
    #[allow(dead_code)]
    pub fn logs_with(&self, needles: &[&str], secs: u64) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let logs = self.logs();
            if needles.iter().all(|n| logs.contains(n)) || std::time::Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Creates an API key with `confidant keys create` in `data_dir` (created if needed).
pub fn create_key(data_dir: &Path, principal: &str, extra: &[&str]) -> String {
    std::fs::create_dir_all(data_dir).unwrap();
    let mut args = vec![
        "keys",
        "create",
        "--data-dir",
        data_dir.to_str().unwrap(),
        "--principal",
        principal,
    ];
    args.extend_from_slice(extra);
    let out = confidant(&args);
    assert!(out.status.success(), "keys create: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["principal"], principal);
    v["api_key"].as_str().unwrap().to_string()
}

/// A plain HTTP/1.1 GET (for `/metrics`): returns the status code and the body.
pub fn http_get(url: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = std::net::TcpStream::connect(host).expect("connect");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of one Prometheus sample line, `series value`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// The gRPC status code of a client error (panics on any other error).
pub fn code(e: &confidant::client::ClientError) -> tonic::Code {
    match e {
        confidant::client::ClientError::Status(s) => s.code(),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

/// The deployment's state key for a data directory, as `confidant keys` finds it: the
/// development key file, else the demo's embedded broker (on a thread of its own, so that
/// async tests may call it).
pub fn state_key(data: &Path) -> confidant::state::StateKey {
    if data.join(confidant::state::DEV_KEY_FILE).exists() {
        return confidant::state::StateKey::dev_file(data).unwrap();
    }
    let data = data.to_path_buf();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(confidant::demo::obtain_state_key(
                &data,
                "default/state/default",
            ))
            .unwrap()
    })
    .join()
    .unwrap()
}

/// The data directory's database, opened under its state key.
pub fn open_db(data: &Path) -> confidant::storage::Database {
    let key = state_key(data);
    confidant::storage::Database::open_encrypted_in(
        data,
        &key.subkey(confidant::state::Subkey::Database),
    )
    .unwrap()
}

/// `confidant audit export <data>/audit`: every record, events decrypted, one JSON a line.
pub fn audit_export(data: &Path) -> String {
    let out = confidant(&["audit", "export", data.join("audit").to_str().unwrap()]);
    assert!(out.status.success(), "audit export: {}", stderr(&out));
    stdout(&out)
}

/// Requests the daily quota counts for `principal` today, read from the data directory's
/// database (includes a running server's unused lease).
pub fn used_today(data: &Path, principal: &str) -> u64 {
    let db = Arc::new(open_db(data));
    let g = confidant::guard::Guard::new(db, Default::default());
    g.limiter()
        .used_today(principal, confidant::unix_now())
        .unwrap()
}
