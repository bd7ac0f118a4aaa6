//! A private redis-server that speaks only TLS, with a certificate authority, server and client certificates
//! made for it by `openssl` (.ci/run installs it) in its temp dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::ChildGuard;

/// A TLS-only redis-server on 127.0.0.1 that requires client certificates. Killed on drop.
pub struct TlsRedis {
    _server: ChildGuard,
    port: u16,
    dir: tempfile::TempDir,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl on PATH (.ci/run installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `name.key` and `name.crt` signed by `ca` (or self-signed when `ca` is None), valid for 127.0.0.1.
fn certificate(dir: &Path, name: &str, ca: Option<&str>) {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    let subject = format!("/CN=rill test {name}");
    match ca {
        None => openssl(
            dir,
            &[
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &crt,
                "-days", "2", "-subj", &subject,
            ],
        ),
        Some(ca) => {
            let csr = format!("{name}.csr");
            openssl(
                dir,
                &[
                    "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                    &subject,
                ],
            );
            std::fs::write(
                dir.join("san.ext"),
                "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
            )
            .unwrap();
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.crt"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                ],
            );
        }
    }
}

impl TlsRedis {
    /// Makes `ca`, `server` and `client` (signed by `ca`) and an unrelated `other-ca`, then starts the server.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        certificate(dir.path(), "ca", None);
        certificate(dir.path(), "other-ca", None);
        certificate(dir.path(), "server", Some("ca"));
        certificate(dir.path(), "client", Some("ca"));
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port");
            let p = |f: &str| dir.path().join(f);
            let child = Command::new(super::server_binary())
                .args([
                    "--port",
                    "0",
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--tls-port")
                .arg(port.to_string())
                .arg("--tls-cert-file")
                .arg(p("server.crt"))
                .arg("--tls-key-file")
                .arg(p("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(p("ca.crt"))
                .args(["--tls-auth-clients", "yes"])
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn redis-server");
            let mut server = ChildGuard(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(server.0.try_wait(), Ok(Some(_))) {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return TlsRedis {
                        _server: server,
                        port,
                        dir,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            server.kill();
        }
        panic!("could not start a TLS redis-server (built without TLS?)");
    }

    /// `rediss://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("rediss://127.0.0.1:{}", self.port)
    }

    /// A file this server's certificates were written to: `ca.crt`, `client.crt`, `client.key`, `other-ca.crt`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The contents of [`TlsRedis::file`].
    pub fn pem(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.file(name)).unwrap()
    }
}
