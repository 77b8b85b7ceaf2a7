//! A moto server (`moto[server]`, the EC2 stand-in) on a free loopback port, stopped on drop.

use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ImageLookup;

/// The image the default lookup must pick in the `aws` partition (the newest Debian 12 amd64 one).
pub const DEBIAN_AMI: &str = "ami-0de12a2025060100a";
/// The image the default lookup must pick in the `aws-cn` partition.
pub const DEBIAN_AMI_CN: &str = "ami-0de12c2025060100c";

/// How long moto may take to answer after it was spawned.
const STARTUP: Duration = Duration::from_secs(30);

/// Why moto could not be started.
#[derive(Debug, thiserror::Error)]
pub enum MotoError {
    /// `moto_server` was not found (run `scripts/setup-moto.sh`, or set `PEERFLEET_MOTO`).
    #[error("moto_server not found at {0} (run scripts/setup-moto.sh, or set PEERFLEET_MOTO)")]
    Missing(PathBuf),
    /// It was found but did not come up.
    #[error("moto did not start: {0}")]
    Start(String),
}

/// How to start moto.
#[derive(Debug, Clone, Copy, Default)]
pub struct MotoOptions {
    /// Refuse `RunInstances` with an image moto does not serve (`InvalidAMIID.NotFound`), as EC2
    /// does; by default moto accepts any image ID.
    pub validate_images: bool,
}

/// A running moto server. Dropping it stops the server; so does the death of the test process (the
/// server runs under a shell that stops it when its stdin, a pipe from this process, closes).
#[derive(Debug)]
pub struct Moto {
    child: Child,
    stdin: Option<ChildStdin>,
    addr: SocketAddr,
    scratch: PathBuf,
}

impl Moto {
    /// Where `moto_server` is: `PEERFLEET_MOTO`, else the repository's `.venv/bin/moto_server`.
    pub fn location() -> PathBuf {
        match std::env::var_os("PEERFLEET_MOTO") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server"),
        }
    }

    /// Starts moto on a free loopback port, with the Debian images the default image lookup finds
    /// (see [`DEBIAN_AMI`]) in every region.
    ///
    /// # Errors
    /// [`MotoError::Missing`] when it is not installed, [`MotoError::Start`] when it does not answer.
    pub fn start() -> Result<Moto, MotoError> {
        Self::start_with(MotoOptions::default())
    }

    /// [`Moto::start`] with `options`.
    ///
    /// # Errors
    /// As [`Moto::start`].
    pub fn start_with(options: MotoOptions) -> Result<Moto, MotoError> {
        let program = Self::location();
        if !program.exists() {
            return Err(MotoError::Missing(program));
        }
        let port = free_port().map_err(|e| MotoError::Start(format!("no free port: {e}")))?;
        let scratch = std::env::temp_dir().join(format!("peerfleet-moto-{}-{port}", std::process::id()));
        fs::create_dir_all(&scratch).map_err(|e| MotoError::Start(format!("{}: {e}", scratch.display())))?;
        let amis = scratch.join("amis.json");
        fs::write(&amis, amis_json()).map_err(|e| MotoError::Start(format!("{}: {e}", amis.display())))?;
        let log = fs::File::create(scratch.join("moto.log")).map_err(|e| MotoError::Start(e.to_string()))?;

        // `read` returns when our end of the pipe closes (drop, or this process dying in any way);
        // the shell then stops moto, so no server outlives its test.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" -H 127.0.0.1 -p "$1" & pid=$!; read -r _; kill "$pid" 2>/dev/null; wait "$pid""#)
            .arg(&program)
            .arg(port.to_string())
            .env("MOTO_AMIS_PATH", &amis)
            .env("MOTO_ENABLE_AMI_VALIDATION", if options.validate_images { "true" } else { "" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| MotoError::Start(format!("spawning {}: {e}", program.display())))?;
        let stdin = child.stdin.take();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let moto = Moto { child, stdin, addr, scratch };
        moto.wait_ready()?;
        Ok(moto)
    }

    /// [`Moto::start`] for a test: `Ok(None)` (after printing that the test is SKIPPED) when moto is
    /// not installed, except under `CI=true`, where a missing moto is an error.
    ///
    /// # Errors
    /// When moto is installed but does not start, or is missing under CI.
    pub fn for_test(test: &str) -> Result<Option<Moto>, MotoError> {
        Self::for_test_with(test, MotoOptions::default())
    }

    /// [`Moto::for_test`] with `options`.
    ///
    /// # Errors
    /// As [`Moto::for_test`].
    pub fn for_test_with(test: &str, options: MotoOptions) -> Result<Option<Moto>, MotoError> {
        match Self::start_with(options) {
            Ok(m) => Ok(Some(m)),
            Err(MotoError::Missing(path)) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!(
                    "\n*** SKIPPED {test}: moto_server not found at {} (run scripts/setup-moto.sh or set \
                     PEERFLEET_MOTO) ***\n",
                    path.display()
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Its socket address (loopback).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its endpoint URL, for [`crate::AwsSettings::endpoint_url`] or `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Forgets every object in every region (moto's reset API).
    ///
    /// # Errors
    /// When moto does not answer 200.
    pub fn reset(&self) -> Result<(), MotoError> {
        let status =
            http(self.addr, "POST", "/moto-api/reset").map_err(|e| MotoError::Start(e.to_string()))?;
        if status == 200 { Ok(()) } else { Err(MotoError::Start(format!("reset answered HTTP {status}"))) }
    }

    fn wait_ready(&self) -> Result<(), MotoError> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if matches!(http(self.addr, "GET", "/moto-api/"), Ok(200)) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = fs::read_to_string(self.scratch.join("moto.log")).unwrap_or_default();
                let tail: String = log
                    .lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n");
                return Err(MotoError::Start(format!(
                    "no answer on {} within {STARTUP:?}; log:\n{tail}",
                    self.addr
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        // Closing the pipe makes the shell stop moto; killing the shell covers a shell that is stuck.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = fs::remove_dir_all(&self.scratch);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.scratch);
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One HTTP/1.0 request to loopback; the status code.
fn http(addr: SocketAddr, method: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let text = String::from_utf8_lossy(&head);
    text.get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text}")))
}

/// The images moto serves in every region: Debian 12 by Debian's publishers (old and new, amd64 and
/// arm64), and a same-named lookalike by a stranger, which the lookup must never pick.
fn amis_json() -> String {
    let image = |id: &str, name: &str, owner: &str, arch: &str, date: &str| {
        serde_json::json!({
            "ami_id": id,
            "name": name,
            "description": format!("{name} (test image)"),
            "owner_id": owner,
            "public": true,
            "virtualization_type": "hvm",
            "architecture": arch,
            "state": "available",
            "platform": null,
            "image_type": "machine",
            "hypervisor": "xen",
            "root_device_name": "/dev/xvda",
            "root_device_type": "ebs",
            "sriov": "simple",
            "creation_date": date,
        })
    };
    let debian = ImageLookup::DEBIAN_OWNER;
    let debian_cn = ImageLookup::DEBIAN_OWNER_CN;
    serde_json::json!([
        image(
            "ami-0de12a2024010100a",
            "debian-12-amd64-20240101-1000",
            debian,
            "x86_64",
            "2024-01-01T00:00:00.000Z"
        ),
        image(DEBIAN_AMI, "debian-12-amd64-20250601-2000", debian, "x86_64", "2025-06-01T00:00:00.000Z"),
        image(
            "ami-0de12a2025070100b",
            "debian-12-arm64-20250701-2100",
            debian,
            "arm64",
            "2025-07-01T00:00:00.000Z"
        ),
        image(
            "ami-0bad0000000000000",
            "debian-12-amd64-20991231-9999",
            "111122223333",
            "x86_64",
            "2099-12-31T00:00:00.000Z"
        ),
        image(
            DEBIAN_AMI_CN,
            "debian-12-amd64-20250601-2000",
            debian_cn,
            "x86_64",
            "2025-06-01T00:00:00.000Z"
        ),
    ])
    .to_string()
}
