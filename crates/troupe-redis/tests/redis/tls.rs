//! `rediss://`: a real TLS Redis with a private certificate authority, and
//! URLs that must fail cleanly where no TLS server answers.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use troupe_core::AgentId;
use troupe_core::bus::{Bus, BusError};
use troupe_redis::{RedisBus, RedisBusConfig};
use troupe_testkit::conformance::bus::sample_envelope;

use troupe_testkit::services::LocalRedis;

use crate::support::{next_within, skip, topic};

/// Makes a certificate authority and a server certificate for 127.0.0.1
/// signed by it, in `dir`: `ca.crt`, `server.crt`, `server.key`. `false`
/// when `openssl` cannot be run.
fn make_certificates(dir: &Path) -> bool {
    let run = |args: &[&str]| {
        Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=troupe test CA",
        ],
    ]
    .concat())
        && run(&[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat())
        && run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "san.ext",
        ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bus_works_over_tls_with_a_private_authority() {
    let test = "tls_private_ca";
    let dir = tempfile::tempdir().unwrap();
    if !make_certificates(dir.path()) {
        skip(test, "cannot make certificates (install openssl)");
        return;
    }
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    let Some(server) = LocalRedis::start_tls(
        test,
        &file("server.crt"),
        &file("server.key"),
        &file("ca.crt"),
    ) else {
        return;
    };
    let config = RedisBusConfig {
        tls_root_cert_pem: Some(std::fs::read_to_string(dir.path().join("ca.crt")).unwrap()),
        ..RedisBusConfig::default()
    };
    let bus = RedisBus::connect(&server.url(), config.clone())
        .await
        .unwrap();
    let t = topic("tls");
    let mut sub = bus
        .subscribe(&t, "g", &AgentId::new("c-1").unwrap())
        .await
        .unwrap();
    let sent = sample_envelope(1);
    bus.publish(&t, sent.clone()).await.unwrap();
    let got = next_within(&mut sub, Duration::from_secs(5), "over TLS").await;
    assert_eq!(got.envelope, sent);
    got.ack().await.unwrap();

    // Without the authority, the system's roots do not vouch for this server.
    let untrusted = RedisBus::connect(
        &server.url(),
        RedisBusConfig {
            tls_root_cert_pem: None,
            connect_timeout: Duration::from_secs(2),
            ..config
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(untrusted, BusError::Unavailable(_)),
        "{untrusted:?}"
    );
}

#[tokio::test]
async fn a_rediss_url_without_a_tls_server_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("rediss://user:secret@127.0.0.1:{port}/0");
    let err = RedisBus::connect(&url, RedisBusConfig::default())
        .await
        .unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("rediss://127.0.0.1:{port}")),
        "{message}"
    );
    assert!(
        !message.contains("secret"),
        "the password leaked: {message}"
    );
}

#[tokio::test]
async fn a_rediss_url_to_a_plain_redis_fails_cleanly() {
    let Some(url) = troupe_testkit::services::redis_url("rediss_to_plain").await else {
        return;
    };
    // The TLS handshake meets a server that does not speak TLS.
    let url = url.replacen("redis://", "rediss://", 1);
    let config = RedisBusConfig {
        connect_timeout: Duration::from_millis(500),
        ..RedisBusConfig::default()
    };
    let err = RedisBus::connect(&url, config).await.unwrap_err();
    assert!(matches!(err, BusError::Unavailable(_)), "{err:?}");
}
