//! A real PostgreSQL server for tests: Debian's `postgresql` binaries (installed by
//! `scripts/test.sh`), one server per test process on a free loopback port, a fresh database
//! per test. As root (CI) the server runs as the `postgres` user, which the package creates.
//! A watchdog shell stops the server and removes its files once the test process is gone,
//! so nothing outlives the run.
//!
//! Shared by the catalog's conformance tests and the gateway's integration tests (`#[path]`);
//! they include `certs.rs` beside it as the crate's `certs` module.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct PgServer {
    pub port: u16,
    dir: PathBuf,
    bin: PathBuf,
    next_db: AtomicUsize,
}

/// The test process's server, started on first use.
pub fn server() -> &'static PgServer {
    static SERVER: OnceLock<PgServer> = OnceLock::new();
    SERVER.get_or_init(PgServer::start)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// The newest installed server's binaries (`/usr/lib/postgresql/<major>/bin`).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (scripts/test.sh installs Debian's postgresql)")
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .expect("a PostgreSQL server under /usr/lib/postgresql/*/bin")
        .1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `program args...`, as the `postgres` user when we are root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgServer {
    fn start() -> Self {
        let bin = bin_dir();
        let dir = std::env::temp_dir().join(format!("datagate-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        // TLS offered (plain connections still accepted): a CA the tests trust, and the
        // server's certificate for 127.0.0.1 and localhost.
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        let tls = crate::certs::test_certificates(&dir.join("tls"));
        // PostgreSQL refuses a key others may read.
        std::fs::set_permissions(
            &tls.key,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.args(["-R", "postgres:postgres"]).arg(&dir);
                    c
                },
                "chown of the test database directory",
            );
        }
        let data = dir.join("data");
        let mut init = as_owner(&bin.join("initdb"));
        init.arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .args(["--locale=C.UTF-8"]);
        run(init, "initdb");
        let port = free_port();
        // The server, and a watchdog that stops it and removes its files when this process ends.
        let server = format!(
            "{owner}{postgres} -D {data} -p {port} -k {dir} -c listen_addresses=127.0.0.1 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
             -c max_connections=300 -c shared_buffers=32MB \
             -c ssl=on -c ssl_cert_file={cert} -c ssl_key_file={key} >{dir}/server.log 2>&1 &",
            cert = tls.cert,
            key = tls.key,
            owner = if is_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            postgres = bin.join("postgres").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let stop = format!(
            "{owner}{pg_ctl} stop -D {data} -m immediate >/dev/null 2>&1; rm -rf {dir}",
            owner = if is_root() {
                "runuser -u postgres -- "
            } else {
                ""
            },
            pg_ctl = bin.join("pg_ctl").display(),
            data = data.display(),
            dir = dir.display(),
        );
        let script = format!(
            "{server}\nwhile [ -d /proc/{parent} ]; do sleep 0.5; done\n{stop}\n",
            parent = std::process::id()
        );
        // `setsid -f`: in its own session, in the background, so it outlives no one but us.
        let started = Command::new("setsid")
            .args(["-f", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sh starts the PostgreSQL server");
        assert!(started.success(), "starting PostgreSQL: {started}");
        let s = Self {
            port,
            dir,
            bin,
            next_db: AtomicUsize::new(0),
        };
        for _ in 0..300 {
            let ready = Command::new(s.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .map(|st| st.success())
                .unwrap_or(false);
            if ready {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "PostgreSQL did not start: {}",
            std::fs::read_to_string(s.dir.join("server.log")).unwrap_or_default()
        );
    }

    /// The CA that signed the server's certificate (PEM file).
    pub fn ca_file(&self) -> String {
        self.dir.join("tls/ca.pem").to_str().unwrap().to_string()
    }

    /// The URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new empty database; its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next_db.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = Command::new(self.bin.join("createdb"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .arg(&name);
        run(c, "createdb");
        self.url(&name)
    }

    /// Runs `sql` in `db` with psql; its output (unaligned, tuples only).
    pub fn psql(&self, db_url: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db_url,
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
