//! Throwaway servers of the TLS and fault tests, on free ports: a Postgres
//! cluster (initdb), a TLS-only `redis-server` and a plain one, each
//! stopped when dropped; the fault tests freeze, kill and restart them.

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::certs::{Certs, KillOnDrop};

/// A throwaway cluster on a free port, run as the `postgres` user (the
/// server refuses root). `None` (skipped) when initdb is missing outside CI.
pub struct Cluster {
    child: Child,
    pub port: u16,
    postgres: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The superuser's URL, plaintext (`sslmode=disable`).
    pub fn url(&self) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// `kill -9` of the postmaster and its backends.
    pub fn kill(&mut self) {
        kill_tree(&mut self.child);
    }

    /// Starts the server again on the same port and data (after crash
    /// recovery when it was killed); returns once it accepts connections.
    pub fn restart(&mut self) {
        self.child = spawn_postgres(&self.postgres, &self.data);
        wait_listening(&mut self.child, self.port);
    }

    /// Freezes the server: SIGSTOP to the postmaster and every backend, so
    /// the kernel still accepts and acknowledges but nothing answers.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Undoes [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        // The postmaster first either way: stopped, it forks no backend
        // that the children's signal would miss.
        signal_process(self.child.id(), signal);
        let _ = Command::new("pkill")
            .args([&format!("-{signal}"), "-P", &pid])
            .status();
        if signal == "STOP"
            && let Ok(out) = Command::new("pgrep").args(["-P", &pid]).output()
        {
            for child in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(child) = child.parse() {
                    wait_stopped(child);
                }
            }
        }
    }
}

impl Drop for Cluster {
    /// Kills the backends too: frozen (a test that failed before it thawed
    /// the server), they would outlive a killed postmaster.
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// Sends `signal` (`STOP`, `CONT`, …) to process `pid`; a SIGSTOP returns
/// once every thread of it is stopped (each stops as it next runs, after
/// `kill` returned: CI once saw a query answered right after the `kill`).
pub fn signal_process(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid}");
    if signal == "STOP" {
        wait_stopped(pid);
    }
}

/// Every thread of process `pid` is stopped (or the process is gone).
pub fn is_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).map_or(true, |stat| {
            // The state follows the parenthesised command name.
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            matches!(state, Some(Some('T' | 't' | 'Z' | 'X')) | None)
        })
    })
}

/// Returns once every thread of process `pid` is stopped (a SIGSTOP is
/// delivered to each thread as it next runs, after `kill` has returned), or
/// after 2 s; a process that is gone counts as stopped.
pub fn wait_stopped(pid: u32) {
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while !is_stopped(pid) && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `kill -9` of `child` and its children (which SIGKILL reaches stopped
/// or not).
fn kill_tree(child: &mut Child) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &child.id().to_string()])
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn_postgres(postgres: &Path, data: &Path) -> Child {
    as_postgres(postgres)
        .arg("-D")
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until `port` accepts (and a moment more: listening is not yet
/// accepting); panics, killing `child`, after 10 s.
fn wait_listening(child: &mut Child, port: u16) {
    for _ in 0..250 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            std::thread::sleep(Duration::from_millis(200));
            return;
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    kill_tree(child);
    panic!("the throwaway server did not listen on {port}");
}

fn pg_bin(name: &str) -> Option<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    let mut found: Vec<PathBuf> = versions
        .flatten()
        .map(|v| v.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop()
}

/// `program` as the `postgres` user; `setpriv` execs it (`runuser` would
/// fork, and killing it would leave the server running).
fn as_postgres(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
    command
}

pub fn start_cluster(tls: Option<&Certs>) -> Option<Cluster> {
    start_cluster_with(tls, "trust")
}

/// A cluster whose `hostssl` line uses `auth` (`trust`, or `cert`: a client
/// certificate from the test CA whose common name is the user's).
pub fn start_cluster_with(tls: Option<&Certs>, auth: &str) -> Option<Cluster> {
    let (Some(initdb), Some(postgres)) = (pg_bin("initdb"), pg_bin("postgres")) else {
        assert!(
            !super::in_ci(),
            "initdb/postgres not found under /usr/lib/postgresql"
        );
        eprintln!("skipping: no initdb");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let chown = |p: &Path| {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(p)
            .status()
            .unwrap()
            .success();
        assert!(ok, "chown {}", p.display());
    };
    chown(dir.path());
    let ok = as_postgres(&initdb)
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "initdb failed");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut conf = format!(
        "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
        dir.path().display()
    );
    let hba = match tls {
        Some(certs) => {
            std::fs::copy(&certs.cert, data.join("server.crt")).unwrap();
            std::fs::copy(&certs.key, data.join("server.key")).unwrap();
            std::fs::copy(&certs.ca, data.join("ca.pem")).unwrap();
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            if auth == "cert" {
                conf.push_str("ssl_ca_file = 'ca.pem'\n");
            }
            format!("hostssl all all 127.0.0.1/32 {auth}\n")
        }
        None => "host all all 127.0.0.1/32 trust\n".to_owned(),
    };
    std::fs::write(data.join("postgresql.auto.conf"), conf).unwrap();
    std::fs::write(data.join("pg_hba.conf"), hba).unwrap();
    chown(dir.path());
    let key = data.join("server.key");
    if key.exists() {
        let ok = Command::new("chmod")
            .arg("600")
            .arg(&key)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    let mut child = spawn_postgres(&postgres, &data);
    wait_listening(&mut child, port);
    Some(Cluster {
        child,
        port,
        postgres,
        data,
        _dir: dir,
    })
}

/// A plain `redis-server` on a free port, keeping nothing on disk.
pub struct RedisServer {
    child: Child,
    pub port: u16,
}

impl RedisServer {
    /// `None` outside CI when there is no `redis-server`.
    pub fn start() -> Option<Self> {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = match Self::spawn(port) {
            Ok(child) => child,
            Err(e) => {
                assert!(!super::in_ci(), "redis-server could not start: {e}");
                eprintln!("skipping: redis-server could not start: {e}");
                return None;
            }
        };
        wait_listening(&mut child, port);
        Some(Self { child, port })
    }

    fn spawn(port: u16) -> std::io::Result<Child> {
        Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
    }

    /// `kill -9`.
    pub fn kill(&mut self) {
        kill_tree(&mut self.child);
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.child = Self::spawn(self.port).unwrap();
        wait_listening(&mut self.child, self.port);
    }

    /// SIGSTOP / SIGCONT; returns once the server is stopped.
    pub fn freeze(&self) {
        signal_process(self.child.id(), "STOP");
    }

    pub fn thaw(&self) {
        signal_process(self.child.id(), "CONT");
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        kill_tree(&mut self.child);
    }
}

/// `redis-server` with TLS only on a free port; `None` outside CI when
/// there is no binary.
pub fn redis_tls(certs: &Certs) -> Option<(KillOnDrop, u16)> {
    redis_tls_with(certs, "no")
}

/// The same, `tls-auth-clients` set to `auth_clients` (`yes`: every client
/// shows a certificate of the test CA).
pub fn redis_tls_with(certs: &Certs, auth_clients: &str) -> Option<(KillOnDrop, u16)> {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("redis-server");
    command
        .args(["--port", "0", "--bind", "127.0.0.1"])
        .args([
            "--tls-port",
            &port.to_string(),
            "--tls-auth-clients",
            auth_clients,
        ])
        .arg("--tls-cert-file")
        .arg(&certs.cert)
        .arg("--tls-key-file")
        .arg(&certs.key)
        .arg("--tls-ca-cert-file")
        .arg(&certs.ca)
        .args(["--save", "", "--appendonly", "no"]);
    let mut child = started(&mut command)?;
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((KillOnDrop(child), port));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("redis-server did not listen on {port} (built without TLS?)");
}

/// A throwaway MariaDB (`mariadb-install-db` into `dir`, its own port)
/// offering TLS with `certs`; with `init` (SQL run at startup) the grant
/// tables are on and enforced, else off (any user, no password). `None`
/// outside CI when MariaDB is not installed.
pub fn mariadb(
    certs: &Certs,
    dir: &std::path::Path,
    init: Option<&str>,
) -> Option<(KillOnDrop, u16)> {
    let data = dir.join("data");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    // Two bootstraps at once have crashed mariadbd (signal 11 dropping a
    // temporary Aria table): one at a time, each with its own tmpdir.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let installing = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let installed = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--user=root", "--skip-test-db"])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .output();
    drop(installing);
    match installed {
        Ok(out) => assert!(
            out.status.success(),
            "mariadb-install-db failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            assert!(!super::in_ci(), "mariadb-install-db: {e}");
            eprintln!("skipping: mariadb-install-db: {e}");
            return None;
        }
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new("mariadbd");
    command.args(["--no-defaults", "--user=root", "--skip-name-resolve"]);
    match init {
        Some(sql) => {
            let file = dir.join("init.sql");
            std::fs::write(&file, sql).unwrap();
            command.arg(format!("--init-file={}", file.display()));
        }
        None => {
            command.arg("--skip-grant-tables");
        }
    }
    let mut child = command
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg(format!("--socket={}", dir.join("s.sock").display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--ssl-cert={}", certs.cert.display()))
        .arg(format!("--ssl-key={}", certs.key.display()))
        .arg(format!("--ssl-ca={}", certs.ca.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some((KillOnDrop(child), port));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("mariadbd did not listen on {port}");
}

/// Debian's PgBouncer on a free port, in transaction mode, in front of the
/// Postgres database of `target` (a `postgres://user:password@host:port/db`
/// URL) with `pool_size` server connections; clients log in as that user
/// (trust). Run as the `postgres` user (it refuses root); stopped when
/// dropped. `None` (skipped) when it is not installed, outside CI.
pub struct PgBouncer {
    _child: KillOnDrop,
    /// The URL of the database through it.
    pub url: String,
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn pgbouncer(target: &str, pool_size: usize) -> Option<PgBouncer> {
    pgbouncer_with(target, pool_size, None)
}

/// The same, with TLS required of clients (`certs`' server certificate,
/// for `localhost`) when `tls` is given.
pub fn pgbouncer_with(target: &str, pool_size: usize, tls: Option<&Certs>) -> Option<PgBouncer> {
    let binary = Path::new("/usr/sbin/pgbouncer");
    if !binary.exists() {
        assert!(
            !super::in_ci(),
            "pgbouncer is not installed: scripts/services-up.sh installs it"
        );
        eprintln!("skipping: no pgbouncer");
        return None;
    }
    let rest = target.split_once("://").expect("a postgres URL").1;
    let (user_info, rest) = rest.split_once('@').expect("user@host in the URL");
    let (user, password) = user_info.split_once(':').unwrap_or((user_info, ""));
    let (host_port, db) = rest.split_once('/').expect("a database in the URL");
    let db = db.split('?').next().unwrap();
    let (host, server_port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pgbouncer.log");
    let users = dir.path().join("users.txt");
    std::fs::write(&users, format!("\"{user}\" \"{password}\"\n")).unwrap();
    let mut client_tls = String::new();
    if let Some(certs) = tls {
        let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
        std::fs::copy(&certs.cert, &cert).unwrap();
        std::fs::copy(&certs.key, &key).unwrap();
        client_tls = format!(
            "client_tls_sslmode = require\nclient_tls_cert_file = {}\nclient_tls_key_file = {}\n",
            cert.display(),
            key.display()
        );
    }
    let ini = dir.path().join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n\
             {db} = host={host} port={server_port} dbname={db} user={user} password={password}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {users}\n\
             pool_mode = transaction\n\
             default_pool_size = {pool_size}\n\
             max_client_conn = 1000\n\
             logfile = {log}\n\
             {client_tls}",
            users = users.display(),
            log = log.display(),
        ),
    )
    .unwrap();
    let ok = Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(dir.path())
        .status()
        .unwrap()
        .success();
    assert!(ok, "chown of the pgbouncer dir");
    let mut child = as_postgres(binary)
        .arg(&ini)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(&mut child, port);
    Some(PgBouncer {
        _child: KillOnDrop(child),
        url: format!("postgres://{user}:{password}@127.0.0.1:{port}/{db}"),
        log,
        _dir: dir,
    })
}

/// A Redis Cluster of three masters on free ports below 55000 (each bus
/// port, port + 10000, free too), made with `redis-cli --cluster create`;
/// stopped when dropped. `None` (skipped) without `redis-server`, outside CI.
pub struct RedisCluster {
    _nodes: Vec<KillOnDrop>,
    pub ports: Vec<u16>,
    /// With TLS: the CA file.
    tls: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl RedisCluster {
    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3/`, or with
    /// TLS `rediss+cluster://localhost:p1,…/?sslrootcert=ca.pem`.
    pub fn url(&self) -> String {
        let (scheme, host) = match self.tls {
            None => ("redis", "127.0.0.1"),
            Some(_) => ("rediss", "localhost"),
        };
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("{host}:{p}")).collect();
        let query = match &self.tls {
            None => String::new(),
            Some(ca) => format!("?sslrootcert={}", ca.display()),
        };
        format!("{scheme}+cluster://{}/{query}", nodes.join(","))
    }
}

/// Spawns `command` (a `redis-server`) quietly; `None` (skipped) when it
/// cannot start, outside CI.
fn started(command: &mut Command) -> Option<Child> {
    match command.stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
        Ok(child) => Some(child),
        Err(e) => {
            assert!(!super::in_ci(), "redis-server could not start: {e}");
            eprintln!("skipping: redis-server could not start: {e}");
            None
        }
    }
}

fn cluster_ports() -> Vec<u16> {
    let mut ports = Vec::new();
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55000
            && !ports.contains(&port)
            && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok()
        {
            ports.push(port);
            if ports.len() == 3 {
                return ports;
            }
        }
    }
    panic!("no three free ports below 55000 with their bus ports free");
}

pub fn redis_cluster() -> Option<RedisCluster> {
    redis_cluster_with(None)
}

/// The same with TLS only (`tls-cluster yes`, clients need no certificate),
/// the nodes announcing themselves as `localhost`, the name in `certs`'
/// server certificate; [`RedisCluster::url`] is then `rediss+cluster://`.
pub fn redis_cluster_with(tls: Option<&Certs>) -> Option<RedisCluster> {
    let dir = tempfile::tempdir().unwrap();
    let ports = cluster_ports();
    // redis-cli's options for the TLS nodes.
    let ca = tls.map(|certs| certs.ca.display().to_string());
    let tls_args: Vec<&str> = match &ca {
        Some(ca) => vec!["--tls", "--insecure", "--cacert", ca],
        None => Vec::new(),
    };
    let mut nodes = Vec::new();
    for port in &ports {
        let mut node = Command::new("redis-server");
        node.args(["--bind", "127.0.0.1"])
            .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "2000"])
            .arg("--cluster-config-file")
            .arg(dir.path().join(format!("nodes-{port}.conf")))
            .arg("--dir")
            .arg(dir.path())
            .args(["--save", "", "--appendonly", "no"]);
        match tls {
            None => node.args(["--port", &port.to_string()]),
            Some(certs) => node
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cluster", "yes", "--tls-auth-clients", "no"])
                .args(["--cluster-announce-hostname", "localhost"])
                .args(["--cluster-preferred-endpoint-type", "hostname"])
                .arg("--tls-cert-file")
                .arg(&certs.cert)
                .arg("--tls-key-file")
                .arg(&certs.key)
                .arg("--tls-ca-cert-file")
                .arg(&certs.ca),
        };
        let mut child = started(&mut node)?;
        wait_listening(&mut child, *port);
        nodes.push(KillOnDrop(child));
    }
    let out = Command::new("redis-cli")
        .args(&tls_args)
        .arg("--cluster")
        .arg("create")
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .arg("--cluster-yes")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let info = [tls_args.as_slice(), &["cluster", "info"]].concat();
    for port in &ports {
        until_cli(*port, &info, "cluster_state:ok");
    }
    Some(RedisCluster {
        _nodes: nodes,
        ports,
        tls: tls.map(|certs| certs.ca.clone()),
        _dir: dir,
    })
}

/// One master, one replica of it and one sentinel watching them (quorum 1,
/// `down-after-milliseconds 1000`), each a `redis-server` on a free port;
/// stopped when dropped. `None` (skipped) without `redis-server`, outside CI.
pub struct RedisSentinel {
    master: Option<KillOnDrop>,
    _replica: KillOnDrop,
    _sentinel: KillOnDrop,
    pub master_port: u16,
    pub replica_port: u16,
    pub sentinel_port: u16,
    /// With TLS: the CA file.
    tls: Option<PathBuf>,
    _dir: tempfile::TempDir,
}

impl RedisSentinel {
    /// `redis+sentinel://127.0.0.1:S/mymaster`, or with TLS
    /// `rediss+sentinel://localhost:S/mymaster?sslrootcert=ca.pem`.
    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis+sentinel://127.0.0.1:{}/mymaster", self.sentinel_port),
            Some(ca) => format!(
                "rediss+sentinel://localhost:{}/mymaster?sslrootcert={}",
                self.sentinel_port,
                ca.display()
            ),
        }
    }

    /// How the sentinel names the master and the replica: `127.0.0.1`, or
    /// with TLS `localhost` (the name in the certificate).
    pub fn host(&self) -> &'static str {
        if self.tls.is_some() {
            "localhost"
        } else {
            "127.0.0.1"
        }
    }

    /// `kill -9` of the master.
    pub fn kill_master(&mut self) {
        self.master = None;
    }
}

/// Polls `redis-cli -p port args…` until its output contains `want`.
fn until_cli(port: u16, args: &[&str], want: &str) {
    for _ in 0..300 {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(want) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("redis-cli -p {port} {args:?} never said {want:?}");
}

pub fn redis_sentinel() -> Option<RedisSentinel> {
    redis_sentinel_with(None)
}

/// The same with TLS only: the master, the replica and the sentinel listen
/// with `certs`' `localhost` certificate (clients need none), replicate
/// over TLS, and are known by the name `localhost` (the sentinel resolves
/// and announces host names); [`RedisSentinel::url`] is then
/// `rediss+sentinel://`.
pub fn redis_sentinel_with(tls: Option<&Certs>) -> Option<RedisSentinel> {
    let dir = tempfile::tempdir().unwrap();
    let free_port = super::example::free_port;
    let (master_port, replica_port, sentinel_port) = (free_port(), free_port(), free_port());
    let host = if tls.is_some() {
        "localhost"
    } else {
        "127.0.0.1"
    };
    // The TLS settings, in a config file's words and as redis-cli options.
    let (tls_conf, cli) = match tls {
        None => (String::new(), Vec::new()),
        Some(certs) => (
            format!(
                "tls-replication yes\ntls-auth-clients no\ntls-cert-file {}\n\
                 tls-key-file {}\ntls-ca-cert-file {}\n",
                certs.cert.display(),
                certs.key.display(),
                certs.ca.display()
            ),
            vec![
                "--tls".to_owned(),
                "--insecure".to_owned(),
                "--cacert".to_owned(),
                certs.ca.display().to_string(),
            ],
        ),
    };
    let cli: Vec<&str> = cli.iter().map(String::as_str).collect();
    let listen = |port: u16| match tls {
        None => format!("port {port}\n"),
        Some(_) => format!("port 0\ntls-port {port}\n"),
    };
    let server = |port: u16, extra: String| {
        let conf = dir.path().join(format!("redis-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "{}bind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\n{tls_conf}{extra}",
                listen(port),
                dir.path().display()
            ),
        )
        .unwrap();
        let mut command = Command::new("redis-server");
        command.arg(conf);
        command
    };
    let mut master = started(&mut server(master_port, String::new()))?;
    wait_listening(&mut master, master_port);
    let mut replica = started(&mut server(
        replica_port,
        format!("replicaof {host} {master_port}\nreplica-announce-ip {host}\n"),
    ))?;
    wait_listening(&mut replica, replica_port);
    until_cli(
        replica_port,
        &[cli.as_slice(), &["info", "replication"]].concat(),
        "master_link_status:up",
    );
    let conf = dir.path().join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "{}bind 127.0.0.1\ndir {}\n{tls_conf}\
             sentinel resolve-hostnames yes\nsentinel announce-hostnames yes\n\
             sentinel monitor mymaster {host} {master_port} 1\n\
             sentinel down-after-milliseconds mymaster 1000\n\
             sentinel failover-timeout mymaster 5000\n",
            listen(sentinel_port),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut sentinel = started(Command::new("redis-server").arg(&conf).arg("--sentinel"))?;
    wait_listening(&mut sentinel, sentinel_port);
    // The sentinel has found the replica (through the master's INFO).
    until_cli(
        sentinel_port,
        &[cli.as_slice(), &["sentinel", "replicas", "mymaster"]].concat(),
        &replica_port.to_string(),
    );
    Some(RedisSentinel {
        master: Some(KillOnDrop(master)),
        _replica: KillOnDrop(replica),
        _sentinel: KillOnDrop(sentinel),
        master_port,
        replica_port,
        sentinel_port,
        tls: tls.map(|certs| certs.ca.clone()),
        _dir: dir,
    })
}

/// A `redis-server` on a free port that wants `password` (`requirepass`);
/// `None` (skipped) without one, outside CI.
pub fn redis_with_password(password: &str) -> Option<(KillOnDrop, u16)> {
    let port = super::example::free_port();
    let mut command = Command::new("redis-server");
    command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--requirepass", password])
        .args(["--save", "", "--appendonly", "no"]);
    let mut child = started(&mut command)?;
    wait_listening(&mut child, port);
    Some((KillOnDrop(child), port))
}
