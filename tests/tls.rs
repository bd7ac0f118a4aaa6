//! rediss:// against a private TLS-only redis-server that requires client certificates: the whole job path
//! (enqueue, a worker's blocking reads, acks) over TLS, and each way a TLS setting can be wrong.

mod support;

use std::time::Duration;

use rill::{Client, ClientConfig, Error, Tls};
use support::tls::TlsRedis;

fn client(url: &str, tls: Tls) -> rill::Result<Client> {
    Client::with_config(
        url,
        ClientConfig {
            namespace: support::namespace(),
            connect_timeout: Duration::from_secs(2),
            tls,
            ..Default::default()
        },
    )
}

fn trusted(redis: &TlsRedis) -> Tls {
    Tls {
        ca_pem: Some(redis.pem("ca.crt")),
        client_pem: Some((redis.pem("client.crt"), redis.pem("client.key"))),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_run_end_to_end_over_tls_with_a_private_ca_and_a_client_certificate() {
    let redis = TlsRedis::start();
    let client = client(&redis.url(), trusted(&redis)).unwrap();
    let queue = client.queue::<u32>("tls").unwrap();
    for n in 0..20 {
        queue.enqueue(&n).await.unwrap();
    }
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = rill::Worker::new(client.clone(), "tls")
        .unwrap()
        .concurrency(4);
    let run = tokio::spawn(async move {
        worker
            .run(
                move |job: rill::Job<u32>| {
                    let done = done_tx.clone();
                    async move {
                        done.send(*job.data()).unwrap();
                        rill::JobResult::Ok(())
                    }
                },
                tokio::time::sleep(Duration::from_secs(3600)),
            )
            .await
    });
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let n = tokio::time::timeout(Duration::from_secs(20), done_rx.recv())
            .await
            .expect("jobs keep completing over TLS")
            .unwrap();
        seen.push(n);
    }
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while queue.counts().await.unwrap().active > 0 {
        assert!(tokio::time::Instant::now() < deadline, "acks land over TLS");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    run.abort();
}

#[tokio::test]
async fn an_untrusted_server_certificate_is_refused() {
    let redis = TlsRedis::start();
    // The system's roots do not include the test CA.
    let system_roots = Tls {
        client_pem: Some((redis.pem("client.crt"), redis.pem("client.key"))),
        ..Default::default()
    };
    let c = client(&redis.url(), system_roots).unwrap();
    let e = c.connect().await.unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // Another CA than the one that signed the server's certificate.
    let wrong_ca = Tls {
        ca_pem: Some(redis.pem("other-ca.crt")),
        client_pem: Some((redis.pem("client.crt"), redis.pem("client.key"))),
        ..Default::default()
    };
    let c = client(&redis.url(), wrong_ca).unwrap();
    let e = c.connect().await.unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // The right CA, but the server requires a client certificate.
    let no_client_cert = Tls {
        ca_pem: Some(redis.pem("ca.crt")),
        ..Default::default()
    };
    let c = client(&redis.url(), no_client_cert).unwrap();
    let e = c.connect().await.unwrap_err();
    assert!(e.to_string().contains("CertificateRequired"), "{e}");
    // And everything right connects.
    client(&redis.url(), trusted(&redis))
        .unwrap()
        .connect()
        .await
        .unwrap();
}

#[tokio::test]
async fn insecure_accepts_any_certificate_only_when_asked() {
    let redis = TlsRedis::start();
    let insecure = Tls {
        client_pem: Some((redis.pem("client.crt"), redis.pem("client.key"))),
        insecure: true,
        ..Default::default()
    };
    client(&redis.url(), insecure)
        .unwrap()
        .connect()
        .await
        .unwrap();
}

#[test]
fn tls_settings_need_a_rediss_url_and_readable_pem() {
    let redis = TlsRedis::start();
    let plain = redis.url().replace("rediss://", "redis://");
    let e = client(&plain, trusted(&redis)).unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { option: "tls", .. }),
        "{e:?}"
    );
    let garbage = Tls {
        ca_pem: Some(b"not a certificate".to_vec()),
        ..Default::default()
    };
    let e = client(&redis.url(), garbage).unwrap_err();
    assert!(
        matches!(e, Error::InvalidOption { option: "tls", .. }),
        "{e:?}"
    );
    let key_as_cert = Tls {
        ca_pem: Some(redis.pem("ca.crt")),
        client_pem: Some((redis.pem("client.key"), redis.pem("client.key"))),
        ..Default::default()
    };
    let e = client(&redis.url(), key_as_cert).unwrap_err();
    assert!(e.to_string().contains("client certificate"), "{e}");
    let cert_as_key = Tls {
        ca_pem: Some(redis.pem("ca.crt")),
        client_pem: Some((redis.pem("client.crt"), redis.pem("client.crt"))),
        ..Default::default()
    };
    let e = client(&redis.url(), cert_as_key).unwrap_err();
    assert!(e.to_string().contains("private key"), "{e}");
}
