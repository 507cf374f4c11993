//! The start-up check (issue 13, items 1 and 15), against the real binary:
//! bad setups refuse to start with one line naming the cause and the fix,
//! AccessDenied and an unreachable endpoint mount, and an HTTPS endpoint
//! signed by a private CA works with AWS_CA_BUNDLE (or the profile's
//! ca_bundle) and is refused with a certificate error without it. Every
//! server here listens on 127.0.0.1, in front of the tests' moto.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the issue asks of every bad setup: its behaviour within 5 s.
const BOUND: Duration = Duration::from_secs(5);

/// The daemon started in a clean environment (no AWS variable, no AWS
/// config or credentials file, no instance metadata) plus `env`; killed
/// and unmounted on drop if it is still running.
struct Daemon {
    child: Child,
    mnt: PathBuf,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Daemon {
    fn start(env: &[(&str, &str)], args: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretsfs"));
        cmd.args(args)
            .arg(&mnt)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .env("AWS_CONFIG_FILE", dir.path().join("no-aws-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-aws-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        // SAFETY: prctl with integer arguments, async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().expect("start secretsfs");
        Daemon {
            child,
            mnt,
            dir,
            started,
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }

    /// Waits for it to refuse within BOUND: its status, stderr and time.
    fn refusal(&mut self) -> (ExitStatus, String, Duration) {
        let mut status = None;
        wait_until(BOUND, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        let took = self.started.elapsed();
        let status = status.unwrap_or_else(|| {
            panic!(
                "still running after {BOUND:?} (mounted: {}): {}",
                mounted(&self.mnt),
                self.stderr()
            )
        });
        (status, self.stderr(), took)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_if_mounted(&self.mnt);
    }
}

/// A refusal: non-zero, not mounted, within the bound, the cause on one
/// line with every `needle`, and none of the SDK's multi-line debug dump.
fn assert_refused(d: &mut Daemon, needles: &[&str]) -> String {
    let (status, err, took) = d.refusal();
    assert!(!status.success(), "exit status 0: {err}");
    assert!(took < BOUND, "took {took:?}");
    assert!(!mounted(&d.mnt), "mounted all the same");
    // The error line: "secretsfs: ..." or the log's ERROR line (main.rs
    // decides which; either holds the whole cause).
    let line = err
        .lines()
        .find(|l| l.contains(needles[0]))
        .unwrap_or_else(|| panic!("no line with '{}': {err}", needles[0]));
    for n in needles {
        assert!(line.contains(n), "'{n}' missing from: {line}");
    }
    for dump in [
        "DispatchFailure",
        "ConnectorError {",
        "source: Some(",
        "\\n",
    ] {
        assert!(!err.contains(dump), "debug dump in: {err}");
    }
    line.to_string()
}

/// Credentials and region as the harness gives them, to `endpoint`.
fn aws_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_ENDPOINT_URL", endpoint.into()),
    ]
}

fn start_with(env: &[(&'static str, String)], args: &[&str]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start(&env, args)
}

#[test]
fn no_region_refuses_to_start_naming_aws_region_and_the_flag() {
    let mut env = aws_env(&moto_url());
    env.retain(|(k, _)| *k != "AWS_REGION");
    let mut d = start_with(&env, &[]);
    assert_refused(&mut d, &["no AWS region", "AWS_REGION", "--region"]);
}

#[test]
fn no_credentials_refuse_to_start_naming_the_credential_sources() {
    let mut env = aws_env(&moto_url());
    env.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    let mut d = start_with(&env, &[]);
    assert_refused(
        &mut d,
        &[
            "no AWS credentials",
            "AWS_PROFILE",
            "--profile",
            "AWS_ACCESS_KEY_ID",
        ],
    );
    // A profile that does not exist says so.
    env.push(("AWS_PROFILE", "nosuchprofile".into()));
    let mut d = start_with(&env, &[]);
    assert_refused(
        &mut d,
        &[
            "no AWS credentials",
            "profile 'nosuchprofile' is in neither",
        ],
    );
}

#[test]
fn credentials_the_api_rejects_refuse_to_start_naming_their_source() {
    let proxy = Proxy::start();
    for code in [
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
    ] {
        proxy.clear_faults();
        proxy.fault("*", None, Fault::Error { status: 400, code }, usize::MAX);
        let mut d = start_with(&aws_env(&proxy.url()), &[]);
        let line = assert_refused(
            &mut d,
            &[
                "rejected the credentials",
                code,
                "the environment (AWS_ACCESS_KEY_ID",
            ],
        );
        if code.starts_with("Expired") {
            assert!(line.contains("expired"), "{line}");
        }
    }
    // Keys from a profile: the line names the profile.
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::write(
        &creds,
        "[ops]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = wJalrXUtnFEMI\n",
    )
    .unwrap();
    let mut env = aws_env(&proxy.url());
    env.retain(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"));
    env.push((
        "AWS_SHARED_CREDENTIALS_FILE",
        creds.to_str().unwrap().into(),
    ));
    let mut d = start_with(&env, &["--profile", "ops"]);
    let line = assert_refused(&mut d, &["rejected the credentials", "profile 'ops'"]);
    assert!(!line.contains("wJalrXUtnFEMI"), "{line}");
}

#[test]
fn access_denied_on_the_first_call_mounts_and_is_logged_once() {
    let s = unique("st-denied");
    create(&s, "still readable");
    // ListSecrets denied (no --secret): the check lists.
    let proxy = Proxy::start();
    proxy.fault(
        "ListSecrets",
        None,
        Fault::Error {
            status: 400,
            code: "AccessDeniedException",
        },
        usize::MAX,
    );
    let t = Instant::now();
    let m = Mount::aws().endpoint(proxy.url()).start();
    assert!(t.elapsed() < BOUND, "mounted after {:?}", t.elapsed());
    assert_eq!(m.read_string(&format!("{s}/current")), "still readable");
    let e = std::fs::read_dir(&m.path)
        .and_then(|mut d| d.next().transpose())
        .unwrap_err();
    assert_eq!(errno_of(&e), libc::EACCES);
    let log = m.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ListSecrets was denied"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("secretsmanager:ListSecrets"), "{log}");
    assert!(lines[0].contains("credentials work"), "{log}");
    drop(m);

    // With --secret: the check describes the first secret, lists nothing.
    let proxy = Proxy::start();
    proxy.fault(
        "DescribeSecret",
        Some(&s),
        Fault::Error {
            status: 400,
            code: "AccessDeniedException",
        },
        1,
    );
    let m = Mount::aws()
        .endpoint(proxy.url())
        .args(["--secret", &s])
        .start();
    assert_eq!(m.read_string(&format!("{s}/current")), "still readable");
    let log = m.log_text();
    assert_eq!(log.matches("DescribeSecret was denied").count(), 1, "{log}");
    assert!(
        log.contains(&format!("secretsmanager:DescribeSecret on {s}")),
        "{log}"
    );
    assert_eq!(proxy.count("ListSecrets"), 0);
}

#[test]
fn a_good_setup_logs_the_check_with_the_credential_source() {
    let s = unique("st-good");
    create(&s, "v");
    let (proxy, m) = mount_via_proxy(&s, &[]);
    let log = m.log_text();
    assert!(log.contains("start-up check passed"), "{log}");
    assert!(log.contains("EnvironmentVariable"), "{log}");
    // One DescribeSecret for the check, no ListSecrets, and the resolved
    // credentials were not fetched again (nothing to see at the proxy, but
    // the read works).
    assert_eq!(proxy.count("ListSecrets"), 0);
    assert_eq!(proxy.count_for("DescribeSecret", Some(&s)), 1);
    assert_eq!(m.read_string(&format!("{s}/current")), "v");
}

#[test]
fn a_refused_endpoint_mounts_logs_why_and_recovers_when_it_answers() {
    let s = unique("st-down");
    create(&s, "after the outage");
    // A loopback port where nothing listens (yet).
    let port = free_port();
    let t = Instant::now();
    let m = Mount::aws()
        .endpoint(format!("http://127.0.0.1:{port}"))
        .args(["--secret", &s])
        .start();
    assert!(t.elapsed() < BOUND, "mounted after {:?}", t.elapsed());
    let log = m.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("unreachable at start"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("Connection refused"), "{line}");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let e = m.read(&format!("{s}/current")).unwrap_err();
    assert_eq!(errno_of(&e), libc::EIO);
    // The endpoint comes up: the background check says so, reads work.
    let _front = Front::plain(port, moto_port());
    assert!(
        wait_until(Duration::from_secs(15), || m
            .log_text()
            .contains("Secrets Manager answered")),
        "{}",
        m.log_text()
    );
    assert!(
        wait_until(Duration::from_secs(10), || m
            .read(&format!("{s}/current"))
            .is_ok_and(|v| v == b"after the outage")),
        "{}",
        m.log_text()
    );
}

/// A private CA and a certificate it signed for 127.0.0.1 and localhost.
struct Pki {
    dir: tempfile::TempDir,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

impl Pki {
    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
            KeyUsagePurpose,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "secretsfs test gateway CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            server_chain: vec![server.der().clone()],
            server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        }
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// Loopback servers in front of moto, on their own runtime: plain TCP
/// forwarding, TLS termination, or an HTTP CONNECT proxy. Counts the
/// connections it accepted; stops on drop.
struct Front {
    port: u16,
    accepted: Arc<AtomicUsize>,
    rt: Option<tokio::runtime::Runtime>,
}

enum Kind {
    Plain {
        upstream: u16,
    },
    Tls {
        upstream: u16,
        config: Arc<rustls::ServerConfig>,
    },
    Connect,
}

impl Front {
    fn plain(port: u16, upstream: u16) -> Front {
        Front::serve(port, Kind::Plain { upstream })
    }

    fn tls(pki: &Pki, upstream: u16) -> Front {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
            .unwrap();
        Front::serve(
            0,
            Kind::Tls {
                upstream,
                config: Arc::new(config),
            },
        )
    }

    fn connect_proxy() -> Front {
        Front::serve(0, Kind::Connect)
    }

    fn serve(port: u16, kind: Kind) -> Front {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(TcpListener::bind(("127.0.0.1", port)))
            .expect("bind the front");
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let kind = Arc::new(kind);
        rt.spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let kind = kind.clone();
                tokio::spawn(async move {
                    let _ = handle(&kind, conn).await;
                });
            }
        });
        Front {
            port,
            accepted,
            rt: Some(rt),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

async fn handle(kind: &Kind, mut conn: TcpStream) -> std::io::Result<()> {
    match kind {
        Kind::Plain { upstream } => {
            let mut up = TcpStream::connect(("127.0.0.1", *upstream)).await?;
            tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
        }
        Kind::Tls { upstream, config } => {
            let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
            let mut tls = acceptor.accept(conn).await?;
            let mut up = TcpStream::connect(("127.0.0.1", *upstream)).await?;
            tokio::io::copy_bidirectional(&mut tls, &mut up).await?;
        }
        Kind::Connect => {
            // `CONNECT host:port HTTP/1.1`, headers, blank line; only
            // loopback targets are served.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if conn.read(&mut byte).await? == 0 {
                    return Ok(());
                }
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_string();
            let target = head
                .strip_prefix("CONNECT ")
                .and_then(|r| r.split(' ').next())
                .unwrap_or("");
            let port = target
                .strip_prefix("127.0.0.1:")
                .or_else(|| target.strip_prefix("localhost:"))
                .and_then(|p| p.parse::<u16>().ok());
            let Some(port) = port else {
                conn.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n").await?;
                return Ok(());
            };
            let mut up = TcpStream::connect(("127.0.0.1", port)).await?;
            conn.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            tokio::io::copy_bidirectional(&mut conn, &mut up).await?;
        }
    }
    Ok(())
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[test]
fn a_private_ca_endpoint_works_with_aws_ca_bundle_and_is_refused_without() {
    let pki = Pki::new();
    let front = Front::tls(&pki, moto_port());
    let url = format!("https://127.0.0.1:{}", front.port);
    let s = unique("st-tls");
    create(&s, "through the gateway");

    // Without the CA: refused, one line with the certificate error.
    let mut d = start_with(&aws_env(&url), &["--secret", &s]);
    let line = assert_refused(
        &mut d,
        &["TLS certificate of", &url, "not trusted", "AWS_CA_BUNDLE"],
    );
    assert!(line.contains("UnknownIssuer"), "{line}");
    drop(d);

    // With AWS_CA_BUNDLE: mounts and reads through TLS.
    let t = Instant::now();
    let m = Mount::aws()
        .endpoint(url.clone())
        .env("AWS_CA_BUNDLE", pki.ca_path().to_str().unwrap())
        .args(["--secret", &s])
        .start();
    assert!(t.elapsed() < BOUND, "mounted after {:?}", t.elapsed());
    assert_eq!(
        m.read_string(&format!("{s}/current")),
        "through the gateway"
    );
    drop(m);

    // With --ca-bundle (AWS_CA_BUNDLE cleared).
    let m = Mount::aws()
        .endpoint(url.clone())
        .env("AWS_CA_BUNDLE", "")
        .args([
            "--ca-bundle",
            pki.ca_path().to_str().unwrap(),
            "--secret",
            &s,
        ])
        .start();
    assert_eq!(
        m.read_string(&format!("{s}/current")),
        "through the gateway"
    );
    drop(m);

    // With ca_bundle in the selected profile of the AWS config file.
    let config = pki.dir.path().join("aws-config");
    std::fs::write(
        &config,
        format!(
            "[profile gw]\nca_bundle = {}\nregion = us-east-1\n",
            pki.ca_path().display()
        ),
    )
    .unwrap();
    let mut env = aws_env(&url);
    env.retain(|(k, _)| *k != "AWS_REGION");
    env.push(("AWS_CONFIG_FILE", config.to_str().unwrap().into()));
    env.push(("AWS_PROFILE", "gw".into()));
    let mut d = start_with(&env, &["--secret", &s]);
    assert!(
        wait_until(BOUND, || mounted(&d.mnt)),
        "not mounted: {}",
        d.stderr()
    );
    assert_eq!(
        std::fs::read_to_string(d.mnt.join(&s).join("current")).unwrap(),
        "through the gateway"
    );
    assert!(d.child.try_wait().unwrap().is_none());
}

#[test]
fn a_ca_bundle_that_is_not_a_certificate_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bundle.pem");
    std::fs::write(&bad, "not a certificate\n").unwrap();
    let mut env = aws_env(&moto_url());
    env.push(("AWS_CA_BUNDLE", bad.to_str().unwrap().into()));
    let mut d = start_with(&env, &[]);
    assert_refused(&mut d, &["no PEM certificate", "AWS_CA_BUNDLE"]);
    let mut env = aws_env(&moto_url());
    env.push(("AWS_CA_BUNDLE", "/nonexistent/ca.pem".into()));
    let mut d = start_with(&env, &[]);
    assert_refused(&mut d, &["/nonexistent/ca.pem", "AWS_CA_BUNDLE"]);
}

#[test]
fn https_proxy_carries_the_calls_with_a_ca_bundle_and_no_proxy_bypasses_it() {
    let pki = Pki::new();
    let front = Front::tls(&pki, moto_port());
    let proxy = Front::connect_proxy();
    let url = format!("https://127.0.0.1:{}", front.port);
    let s = unique("st-proxy");
    create(&s, "via the proxy");
    let ca = pki.ca_path();
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let m = Mount::aws()
        .endpoint(url.clone())
        .env("AWS_CA_BUNDLE", ca.to_str().unwrap())
        .env("HTTPS_PROXY", &proxy_url)
        .env("NO_PROXY", "")
        .args(["--secret", &s])
        .start();
    assert_eq!(m.read_string(&format!("{s}/current")), "via the proxy");
    assert!(proxy.accepted() >= 1, "the proxy saw no connection");
    drop(m);
    let before = proxy.accepted();
    let m = Mount::aws()
        .endpoint(url)
        .env("AWS_CA_BUNDLE", ca.to_str().unwrap())
        .env("HTTPS_PROXY", &proxy_url)
        .env("NO_PROXY", "127.0.0.1")
        .args(["--secret", &s])
        .start();
    assert_eq!(m.read_string(&format!("{s}/current")), "via the proxy");
    assert_eq!(proxy.accepted(), before, "NO_PROXY was not honoured");
    drop(m);
    // Without a bundle (the machine's environment may name one) the SDK's
    // own client is used: SSL_CERT_FILE (which replaces the system's CAs)
    // and the proxy work there too.
    let m = Mount::aws()
        .endpoint(format!("https://127.0.0.1:{}", front.port))
        .env("AWS_CA_BUNDLE", "")
        .env("SSL_CERT_FILE", ca.to_str().unwrap())
        .env("HTTPS_PROXY", &proxy_url)
        .env("NO_PROXY", "")
        .args(["--secret", &s])
        .start();
    assert_eq!(m.read_string(&format!("{s}/current")), "via the proxy");
    assert!(proxy.accepted() > before, "the proxy saw no connection");
}
