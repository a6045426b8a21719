//! Shared helpers for the black-box tests: free loopback ports, `cairn` and reference `etcd`
//! processes on fresh data directories, and running Debian's `etcdctl` against them.
//!
//! Every wait here is bounded: a process that never becomes ready, an `etcdctl` that hangs, or a
//! server that ignores SIGTERM turns into a test failure with the process's stderr attached, never
//! into a hung CI job. A [`Server`] kills its process on drop, so a panicking test leaves nothing
//! running behind it.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]
// These tests drive real processes in real time; the clock seam rule is for node code.
#![allow(clippy::disallowed_methods)]

pub mod cluster;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where the reference etcd lives (CI installs Debian's `etcd-server`); `CAIRN_ETCD` overrides.
pub const ETCD_DEFAULT: &str = "/usr/bin/etcd";
/// Where Debian's etcdctl lives (`etcd-client`); `CAIRN_ETCDCTL` overrides.
pub const ETCDCTL_DEFAULT: &str = "/usr/bin/etcdctl";

/// The peer URL both cairn and etcd advertise. etcd derives the member id from the advertised peer
/// URLs and the cluster id from the member ids and the cluster token, so advertising the same
/// string on both gives both the same ids in every response header. Only `--listen-peer-urls`
/// differs, and nothing ever connects to the advertised URL of a single-member cluster.
pub const PEER_URL_ADVERTISED: &str = "http://localhost:2380";

/// How long a server may take from spawn to answering a `get`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit after SIGTERM or SIGKILL.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one `etcdctl` invocation may run before it is killed.
pub const ETCDCTL_TIMEOUT: Duration = Duration::from_secs(20);
/// How many bytes of a server's stderr to show in failure messages.
pub const LOG_TAIL_BYTES_MAX: usize = 4096;

/// Path of the `etcd` binary; panics with a clear message when it is not installed, because tests
/// that compare against etcd must fail rather than skip silently.
pub fn etcd_bin() -> PathBuf {
    let path = PathBuf::from(std::env::var("CAIRN_ETCD").unwrap_or_else(|_| ETCD_DEFAULT.into()));
    assert!(
        path.is_file(),
        "reference etcd not found at {}: install it with `apt-get install -y etcd-server` \
         (or set CAIRN_ETCD); the differential tests need etcd 3.4.23 as their oracle",
        path.display()
    );
    path
}

/// Path of the `etcdctl` binary; panics with a clear message when it is not installed.
pub fn etcdctl_bin() -> PathBuf {
    let path =
        PathBuf::from(std::env::var("CAIRN_ETCDCTL").unwrap_or_else(|_| ETCDCTL_DEFAULT.into()));
    assert!(
        path.is_file(),
        "etcdctl not found at {}: install it with `apt-get install -y etcd-client` \
         (or set CAIRN_ETCDCTL)",
        path.display()
    );
    path
}

/// Returns a loopback port that was free a moment ago and that no other test in this process has
/// been given. Another process may still take it before the server binds; the window is small.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("no fresh free loopback port after 100 tries");
}

/// Which program a [`Server`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Cairn,
    Etcd,
}

impl Kind {
    pub fn program(self) -> PathBuf {
        match self {
            Kind::Cairn => PathBuf::from(env!("CARGO_BIN_EXE_cairn")),
            Kind::Etcd => etcd_bin(),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Cairn => "cairn",
            Kind::Etcd => "etcd",
        }
    }
}

/// What to start: the member name, extra flags (e.g. `--max-txn-ops 3`), and the advertised peer
/// URL (all members in these tests are single-member clusters named after `name`).
#[derive(Clone, Debug)]
pub struct Opts {
    pub name: String,
    pub peer_url_advertised: String,
    pub extra_args: Vec<String>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            name: "default".into(),
            peer_url_advertised: PEER_URL_ADVERTISED.into(),
            extra_args: Vec::new(),
        }
    }
}

/// The output of a finished command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` when the process was killed by a signal.
    pub code: Option<i32>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A server process (cairn or etcd) on its own ports and data directory. Drop kills it.
pub struct Server {
    pub kind: Kind,
    pub opts: Opts,
    pub client_port: u16,
    pub peer_port: u16,
    /// Holds the data dir and the log files; removed on drop.
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Incremented on every (re)start so each run's stderr goes to its own file.
    runs: u32,
    /// For a member of a multi-member cluster: how it finds its peers. `None` for the
    /// single-member servers of [`Server::start`].
    cluster: Option<ClusterSpec>,
}

/// How a member of a multi-member cluster is bootstrapped: etcd's `--initial-cluster`,
/// `--initial-cluster-token` and `--initial-cluster-state`.
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// `n1=http://127.0.0.1:P1,n2=...`, including this member.
    pub initial_cluster: String,
    pub token: String,
    /// `new` for a founding member, `existing` for one added with `member add`.
    pub state: String,
}

impl Server {
    /// Starts a server of `kind` on fresh ports and a fresh data dir and waits until it answers.
    pub fn start(kind: Kind, opts: Opts) -> Server {
        let mut server = Server::spawn(kind, opts);
        server.wait_ready();
        server
    }

    /// Spawns a server of `kind` on fresh ports and a fresh data dir without waiting for it.
    pub fn spawn(kind: Kind, opts: Opts) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-test-", kind.label()))
            .tempdir()
            .expect("create tempdir");
        let mut server = Server {
            kind,
            opts,
            client_port: free_port(),
            peer_port: free_port(),
            dir,
            child: None,
            runs: 0,
            cluster: None,
        };
        server.spawn_again();
        server
    }

    /// Spawns one member of a multi-member cluster on the given (pre-allocated) ports and a fresh
    /// data dir, without waiting for it: its peers may not be running yet. `opts.name` must be
    /// the member's name in `spec.initial_cluster`; `opts.peer_url_advertised` is replaced by
    /// `http://127.0.0.1:<peer_port>`.
    pub fn spawn_member(
        kind: Kind,
        mut opts: Opts,
        client_port: u16,
        peer_port: u16,
        spec: ClusterSpec,
    ) -> Server {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{}-", kind.label(), opts.name))
            .tempdir()
            .expect("create tempdir");
        opts.peer_url_advertised = format!("http://127.0.0.1:{peer_port}");
        let mut server = Server {
            kind,
            opts,
            client_port,
            peer_port,
            dir,
            child: None,
            runs: 0,
            cluster: Some(spec),
        };
        server.spawn_again();
        server
    }

    /// The data directory (inside the server's tempdir).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `127.0.0.1:PORT`, the form etcdctl's `--endpoints` takes.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `http://127.0.0.1:PORT`, the form etcd-client takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.endpoint())
    }

    /// The arguments this server is started with.
    pub fn args(&self) -> Vec<String> {
        match &self.cluster {
            None => server_args(
                &self.opts,
                &self.data_dir(),
                self.client_port,
                self.peer_port,
            ),
            Some(spec) => member_args(
                &self.opts,
                spec,
                &self.data_dir(),
                self.client_port,
                self.peer_port,
            ),
        }
    }

    /// The member name this server was started with.
    pub fn name(&self) -> &str {
        &self.opts.name
    }

    /// Whether the process is running (started and not yet seen to exit).
    pub fn is_running(&mut self) -> bool {
        self.child.is_some() && self.try_wait().is_none()
    }

    fn stderr_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("stderr.{run}.log"))
    }

    /// Starts the process again on the same ports and data dir (after a stop or a kill).
    pub fn spawn_again(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is still running; stop it first",
            self.kind.label()
        );
        self.runs += 1;
        let log = std::fs::File::create(self.stderr_path(self.runs)).expect("create stderr log");
        let child = Command::new(self.kind.program())
            .args(self.args())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.kind.program().display()));
        self.child = Some(child);
    }

    /// Restarts on the same data dir and ports and waits until it answers.
    pub fn restart(&mut self) {
        self.spawn_again();
        self.wait_ready();
    }

    /// The pid of the running process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server is not running").id()
    }

    /// Everything the current (or last) run wrote to stdout and stderr.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.stderr_path(self.runs)).unwrap_or_default()
    }

    /// The last few KiB of the current run's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self.log();
        let mut start = log.len().saturating_sub(LOG_TAIL_BYTES_MAX);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    /// Polls until the server answers a `get` through etcdctl, failing the test (with the log) if
    /// it exits or does not answer within [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self) {
        self.wait_ready_with(&[
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "get",
            "cairn-test-readiness-probe",
        ]);
    }

    /// Like [`Server::wait_ready`] with a serializable `get`, which a member answers from its
    /// own store: a learner, or a member whose cluster has no quorum yet.
    pub fn wait_ready_serializable(&mut self) {
        self.wait_ready_with(&[
            "--dial-timeout=1s",
            "--command-timeout=2s",
            "get",
            "--consistency=s",
            "cairn-test-readiness-probe",
        ]);
    }

    /// Polls until `etcdctl <probe>` succeeds against this server, failing the test (with the log)
    /// if it exits or does not answer within [`READY_TIMEOUT`].
    pub fn wait_ready_with(&mut self, probe: &[&str]) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::new();
        loop {
            if let Some(status) = self.try_wait() {
                panic!(
                    "{} exited before becoming ready ({status}); args: {:?}\n--- log ---\n{}",
                    self.kind.label(),
                    self.args(),
                    self.log_tail()
                );
            }
            if TcpStream::connect_timeout(
                &format!("127.0.0.1:{}", self.client_port).parse().unwrap(),
                Duration::from_millis(200),
            )
            .is_ok()
            {
                let out = etcdctl(&self.endpoint(), probe, None);
                if out.success() {
                    return;
                }
                last = format!("etcdctl get: {:?} {}", out.code, out.stderr.trim());
            }
            if Instant::now() > deadline {
                panic!(
                    "{} did not answer within {READY_TIMEOUT:?} (last probe: {last}); args: {:?}\n--- log ---\n{}",
                    self.kind.label(),
                    self.args(),
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the exit status if the process has exited (and forgets the child).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if self.child.is_none() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit; returns the exit status.
    pub fn sigterm(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(EXIT_TIMEOUT) {
            Some(status) => status,
            None => {
                let tail = self.log_tail();
                self.sigkill();
                panic!(
                    "{} did not exit within {EXIT_TIMEOUT:?} of SIGTERM\n--- log ---\n{tail}",
                    self.kind.label()
                );
            }
        }
    }

    /// Sends SIGKILL and reaps the process.
    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pauses the process (SIGSTOP): it keeps its sockets but answers nothing, which cuts it off
    /// from its peers as surely as a network partition. Resume with [`Server::sigcont`].
    pub fn sigstop(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// Resumes a process paused by [`Server::sigstop`].
    pub fn sigcont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = self.pid() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own unreaped child: the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// Runs `etcdctl --endpoints <this server> <args>` with optional stdin.
    pub fn etcdctl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        etcdctl(&self.endpoint(), args, stdin)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!(
                "--- {} (pid {}) log tail ---\n{}",
                self.kind.label(),
                self.pid(),
                self.log_tail()
            );
        }
        self.sigkill();
    }
}

/// The flags for a single-member server; the same for cairn and etcd.
pub fn server_args(opts: &Opts, data_dir: &Path, client_port: u16, peer_port: u16) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let mut args = vec![
        "--name".to_string(),
        opts.name.clone(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client,
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer_port}"),
        "--initial-advertise-peer-urls".into(),
        opts.peer_url_advertised.clone(),
        "--initial-cluster".into(),
        format!("{}={}", opts.name, opts.peer_url_advertised),
        "--initial-cluster-token".into(),
        "etcd-cluster".into(),
        "--initial-cluster-state".into(),
        "new".into(),
    ];
    args.extend(opts.extra_args.iter().cloned());
    args
}

/// The flags for one member of a multi-member cluster; the same for cairn and etcd.
pub fn member_args(
    opts: &Opts,
    spec: &ClusterSpec,
    data_dir: &Path,
    client_port: u16,
    peer_port: u16,
) -> Vec<String> {
    let client = format!("http://127.0.0.1:{client_port}");
    let mut args = vec![
        "--name".to_string(),
        opts.name.clone(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen-client-urls".into(),
        client.clone(),
        "--advertise-client-urls".into(),
        client,
        "--listen-peer-urls".into(),
        format!("http://127.0.0.1:{peer_port}"),
        "--initial-advertise-peer-urls".into(),
        opts.peer_url_advertised.clone(),
        "--initial-cluster".into(),
        spec.initial_cluster.clone(),
        "--initial-cluster-token".into(),
        spec.token.clone(),
        "--initial-cluster-state".into(),
        spec.state.clone(),
    ];
    args.extend(opts.extra_args.iter().cloned());
    args
}

/// Runs a program with optional stdin, failing the test if it runs longer than `timeout`.
pub fn run_bounded(cmd: Command, stdin: Option<&str>, timeout: Duration) -> Output {
    let program = format!("{cmd:?}");
    let (out, timed_out) = run_for(cmd, stdin, timeout);
    assert!(
        !timed_out,
        "{program} did not finish within {timeout:?}; output so far: {out:?}"
    );
    out
}

/// Runs a program with optional stdin for at most `timeout`, then SIGKILLs it. Returns what it
/// wrote until then and whether it had to be killed (its `code` is then `None`).
pub fn run_for(mut cmd: Command, stdin: Option<&str>, timeout: Duration) -> (Output, bool) {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        // A child that exits without reading gives EPIPE; its exit status says what happened.
        let _ = pipe.write_all(input.as_bytes());
    }
    // Drain both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    // The pipes close once the child is gone (these programs start no grandchildren).
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    let out = Output {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        code: status.code(),
    };
    (out, timed_out)
}

/// The `etcdctl --endpoints <endpoint> <args>` command, with `ETCDCTL_API=3` and a clean
/// environment (no stray `ETCDCTL_*` variables).
pub fn etcdctl_command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(etcdctl_bin());
    cmd.env_clear()
        .env("ETCDCTL_API", "3")
        .env("PATH", "/usr/bin:/bin")
        .arg("--endpoints")
        .arg(endpoint)
        .args(args);
    cmd
}

/// Runs `etcdctl --endpoints <endpoint> <args>`, bounded by [`ETCDCTL_TIMEOUT`].
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    run_bounded(etcdctl_command(endpoint, args), stdin, ETCDCTL_TIMEOUT)
}

/// Runs the `cairn` binary with `args`, expecting it to exit by itself within `timeout` (a startup
/// failure, `--help`, ...). Fails the test if it is still running then.
pub fn run_cairn_to_exit(args: &[String], cwd: &Path, timeout: Duration) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn"));
    cmd.args(args).current_dir(cwd);
    let (out, timed_out) = run_for(cmd, None, timeout);
    assert!(
        !timed_out,
        "cairn {args:?} was still running after {timeout:?}; expected it to exit by itself. \
         Output: {out:?}"
    );
    out
}

/// Polls `f` every `every` until it returns `Some`, or gives up after `timeout`.
pub fn poll<T>(timeout: Duration, every: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}
