//! Mutual TLS against the real engine: `socat` terminates TLS in front of the engine's socket, verifying
//! client certificates against the network's CA, as a cloud machine's engine does.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use peerfleet_core::Address;
use peerfleet_core::provider::{ContainerEngine, ErrorKind};
use peerfleet_docker::{DockerEngine, Endpoint, NetworkCa};

use crate::support::*;

/// socat, killed (by its own process handle) and reaped when dropped.
struct Socat(Child);

impl Drop for Socat {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Where socat forwards to: the engine the other tests use.
fn engine_address() -> anyhow::Result<String> {
    match Endpoint::from_env()? {
        Endpoint::Unix(path) => Ok(format!("UNIX-CONNECT:{}", path.display())),
        Endpoint::Http(authority) => Ok(format!("TCP:{authority}")),
        Endpoint::Tls { .. } => bail!("the engine is itself behind TLS; point DOCKER_HOST at its socket"),
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents.as_bytes())?;
    Ok(())
}

fn start_socat(
    dir: &Path,
    port: u16,
    ca: &NetworkCa,
    server: &peerfleet_core::provider::EngineTls,
) -> anyhow::Result<Socat> {
    write_private(&dir.join("ca.pem"), ca.cert_pem())?;
    write_private(&dir.join("server.pem"), &server.server_cert_pem)?;
    write_private(&dir.join("server.key"), server.server_key_pem.expose())?;
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={},key={},cafile={},verify=1",
        dir.join("server.pem").display(),
        dir.join("server.key").display(),
        dir.join("ca.pem").display(),
    );
    let child = Command::new("socat")
        .args([listen, engine_address()?])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting socat")?;
    let socat = Socat(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
        if std::time::Instant::now() > deadline {
            bail!("socat did not listen on 127.0.0.1:{port} within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(socat)
}

fn socat_available() -> bool {
    let found = Command::new("socat").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    if !found {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but socat is missing; run scripts/setup-docker-tests.sh");
        }
        eprintln!("SKIPPED: socat is not installed (scripts/setup-docker-tests.sh installs it)");
    }
    found
}

#[tokio::test]
async fn engine_over_mutual_tls_takes_the_networks_client_and_refuses_others() -> anyhow::Result<()> {
    let Some(local) = engine().await else { return Ok(()) };
    if !socat_available() {
        return Ok(());
    }
    let net = unique("tls");
    let dir = tempfile::tempdir()?;
    let ca = NetworkCa::generate(&net)?;
    let address = Address::machine("edge", 0);
    let server = ca.issue_server_cert(&address, &["127.0.0.1".into()])?;
    let port = free_port()?;
    let _socat = start_socat(dir.path(), port, &ca, &server)?;
    let authority = format!("127.0.0.1:{port}");
    let tls = |identity, server_name: Option<String>| Endpoint::Tls {
        authority: authority.clone(),
        identity,
        server_name,
    };

    bounded(async {
        // The connector's way: dial the IP, verify the machine's name.
        let by_name =
            DockerEngine::connect(&tls(ca.client_identity()?, Some(ca.server_name(&address)))).await?;
        let direct = local.version().await?;
        assert_eq!(by_name.version().await?, direct, "the same engine, through TLS");
        assert!(by_name.list_containers(&net).await?.is_empty());
        // Verifying the IP SAN works as well.
        let by_ip = DockerEngine::connect(&tls(ca.client_identity()?, None)).await?;
        by_ip.version().await?;

        // A client certificate from another CA is refused by the engine side.
        let other = NetworkCa::generate(&net)?;
        let mut stranger = other.client_identity()?;
        stranger.ca_cert_pem = ca.cert_pem().to_string();
        let err = DockerEngine::connect(&tls(stranger, Some(ca.server_name(&address)))).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");

        // An engine whose certificate our CA did not sign is refused by our side.
        let err = DockerEngine::connect(&tls(other.client_identity()?, None)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");

        // A name the certificate does not carry is refused too.
        let err = DockerEngine::connect(&tls(
            ca.client_identity()?,
            Some(ca.server_name(&Address::machine("edge", 1))),
        ))
        .await
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unauthorized, "{err}");
        Ok(())
    })
    .await
}
