//! The `rill` command against a TLS-only Redis that requires client certificates: --tls-ca, --tls-cert,
//! --tls-key, --tls-insecure, and the one-line errors when they are missing or wrong.

use std::process::{Command, Output};

use super::support::tls::TlsRedis;

fn rill(redis: &TlsRedis, args: &[&str]) -> Output {
    static NAMESPACE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    Command::new(env!("CARGO_BIN_EXE_rill"))
        .args([
            "--redis",
            &redis.url(),
            "--namespace",
            NAMESPACE.get_or_init(super::support::namespace),
        ])
        .args(args)
        .env_remove("REDIS_URL")
        .env("RUST_LOG", "off")
        .output()
        .expect("run rill")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn rill_speaks_tls_with_the_files_it_is_given() {
    let redis = TlsRedis::start();
    let path = |f: &str| redis.file(f).to_str().unwrap().to_owned();
    let (ca, cert, key) = (path("ca.crt"), path("client.crt"), path("client.key"));
    let tls = ["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key];

    let out = rill(
        &redis,
        &[
            &["enqueue", "mail", "{\"to\":\"a\"}", "--id", "m1"][..],
            &tls,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = rill(
        &redis,
        &[&["jobs", "show", "m1", "--json"][..], &tls].concat(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["state"], "waiting");

    // --tls-insecure skips the server's certificate check (the server still wants a client certificate).
    let out = rill(
        &redis,
        &[
            "stats",
            "--tls-insecure",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Without the CA: one error naming the address and the certificate problem.
    let out = rill(&redis, &["stats", "--tls-cert", &cert, "--tls-key", &key]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect to Redis at rediss://") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // A certificate without its key, a missing file, TLS flags on a plain URL: refused before any I/O.
    let out = rill(&redis, &["stats", "--tls-ca", &ca, "--tls-cert", &cert]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--tls-key"),
        "{}",
        text(&out.stderr)
    );
    let out = rill(&redis, &["stats", "--tls-ca", "/nonexistent/ca.crt"]);
    assert!(
        text(&out.stderr).contains("--tls-ca /nonexistent/ca.crt: cannot read it"),
        "{}",
        text(&out.stderr)
    );
    let plain = redis.url().replace("rediss://", "redis://");
    let out = Command::new(env!("CARGO_BIN_EXE_rill"))
        .args(["--redis", &plain, "stats", "--tls-ca", &ca])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("need a rediss:// URL"),
        "{}",
        text(&out.stderr)
    );
}
