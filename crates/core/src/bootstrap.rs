//! The machine bootstrap: cloud-init user data that turns a fresh cloud machine into a Docker engine
//! reachable only with mutual TLS.
//!
//! This is pure text generation, shared by every cloud provider (EC2 and DigitalOcean both run
//! cloud-init on their Debian/Ubuntu images). What it produces:
//!
//! - `package_update` + the distribution's Docker package (`docker.io` on Debian and Ubuntu);
//! - the network CA certificate, the machine's server certificate and its server key (mode 0600) under
//!   [`TLS_DIR`];
//! - a systemd drop-in for `docker.service` that keeps the unix socket (socket activation, `-H fd://`)
//!   and adds `tcp://0.0.0.0:PORT` with `--tlsverify` against the network CA, so only clients holding a
//!   certificate the network CA signed can talk to the engine;
//! - `systemctl daemon-reload`, `enable` and `restart` of docker, so the drop-in applies even when the
//!   package started dockerd before it was read.
//!
//! All flags live in the drop-in rather than `daemon.json`: dockerd refuses to start when an option is
//! set in both places, and the distribution unit already passes `-H fd://` on its command line.
//!
//! File contents are embedded base64-encoded (`encoding: b64`): the encoding is valid YAML for any
//! bytes, so no PEM quirk (a stray leading space, a missing final newline) can change what lands on disk.
//!
//! # Secrets
//! The server key's one legitimate destination is the user data, so the returned text contains it.
//! Callers must treat that text as a secret: send it to the provider, never log or print it. Nothing
//! in this module (errors, `Debug`) contains the key or the user data.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::network::ports;
use crate::provider::EngineTls;

/// Where the engine's TLS material is written on the machine.
pub const TLS_DIR: &str = "/etc/docker/tls";

/// EC2's limit on user data, in bytes, before the API's own base64 encoding.
pub const EC2_USER_DATA_LIMIT: usize = 16 * 1024;

/// DigitalOcean's limit on user data, in bytes.
pub const DIGITALOCEAN_USER_DATA_LIMIT: usize = 64 * 1024;

/// The path of the systemd drop-in that reconfigures dockerd.
pub const DOCKER_DROP_IN: &str = "/etc/systemd/system/docker.service.d/peerfleet-tls.conf";

/// Run once at first boot, after the package is installed and the files are written: the package may
/// already have started dockerd without the drop-in.
const RUNCMD: &[&[&str]] = &[
    &["systemctl", "daemon-reload"],
    &["systemctl", "enable", "docker"],
    &["systemctl", "restart", "docker"],
];

/// What may vary between providers and images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// The port dockerd serves its API on with mutual TLS.
    pub docker_tls_port: u16,
    /// The distribution package that provides dockerd (`docker.io` on Debian and Ubuntu).
    pub docker_package: String,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions { docker_tls_port: ports::DOCKER_TLS, docker_package: "docker.io".to_string() }
    }
}

/// User data larger than the provider accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "machine user data is {size} bytes, over the provider's limit of {limit} bytes (is the TLS material unusually large?)"
)]
pub struct UserDataTooLarge {
    /// Size of the generated user data.
    pub size: usize,
    /// The provider's limit.
    pub limit: usize,
}

/// Checks generated user data against a provider's size limit (e.g. [`EC2_USER_DATA_LIMIT`]).
///
/// # Errors
/// [`UserDataTooLarge`] when `user_data` is longer than `limit` bytes; the error names sizes only.
pub fn check_size(user_data: &str, limit: usize) -> Result<(), UserDataTooLarge> {
    if user_data.len() > limit { Err(UserDataTooLarge { size: user_data.len(), limit }) } else { Ok(()) }
}

/// The `#cloud-config` user data that installs Docker and serves its API with mutual TLS.
///
/// Deterministic: the same material and options give the same bytes. The result contains the server
/// key (see the module's note on secrets).
pub fn cloud_init(tls: &EngineTls, opts: &BootstrapOptions) -> String {
    let ca = format!("{TLS_DIR}/ca.pem");
    let cert = format!("{TLS_DIR}/server-cert.pem");
    let key = format!("{TLS_DIR}/server-key.pem");
    let drop_in = format!(
        "# Written by peerfleet: the unix socket stays (socket activation), the API is added on TCP with\n\
         # mutual TLS; only clients signed by the network CA are accepted.\n\
         [Service]\n\
         ExecStart=\n\
         ExecStart=dockerd -H fd:// -H tcp://0.0.0.0:{port} --tlsverify --tlscacert={ca} --tlscert={cert} --tlskey={key} --containerd=/run/containerd/containerd.sock\n",
        port = opts.docker_tls_port,
    );

    let mut out = String::with_capacity(8 * 1024);
    out.push_str("#cloud-config\n");
    out.push_str("# peerfleet machine bootstrap: Docker engine with its API behind mutual TLS.\n");
    out.push_str("package_update: true\n");
    out.push_str("packages:\n");
    push_item(&mut out, &opts.docker_package);
    out.push_str("write_files:\n");
    push_file(&mut out, &ca, "0644", tls.ca_cert_pem.as_bytes());
    push_file(&mut out, &cert, "0644", tls.server_cert_pem.as_bytes());
    push_file(&mut out, &key, "0600", tls.server_key_pem.expose().as_bytes());
    push_file(&mut out, DOCKER_DROP_IN, "0644", drop_in.as_bytes());
    out.push_str("runcmd:\n");
    for cmd in RUNCMD {
        out.push_str("  - [");
        for (i, word) in cmd.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_quoted(&mut out, word);
        }
        out.push_str("]\n");
    }
    out
}

fn push_item(out: &mut String, value: &str) {
    out.push_str("  - ");
    push_quoted(out, value);
    out.push('\n');
}

fn push_file(out: &mut String, path: &str, permissions: &str, content: &[u8]) {
    out.push_str("  - path: ");
    push_quoted(out, path);
    out.push_str("\n    owner: \"root:root\"\n    permissions: ");
    push_quoted(out, permissions);
    out.push_str("\n    encoding: b64\n    content: ");
    out.push_str(&BASE64.encode(content));
    out.push('\n');
}

/// A YAML double-quoted scalar (JSON string syntax is valid YAML), so names from a spec can never
/// break the document's structure.
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                // Infallible: writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::Secret;

    fn tls() -> EngineTls {
        EngineTls {
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nQ0E=\n-----END CERTIFICATE-----\n".into(),
            server_cert_pem: "-----BEGIN CERTIFICATE-----\nU0VSVkVS\n-----END CERTIFICATE-----\n".into(),
            server_key_pem: Secret::new("-----BEGIN PRIVATE KEY-----\nS0VZ\n-----END PRIVATE KEY-----\n"),
        }
    }

    /// The `content:` of the `write_files` entry for `path`, decoded.
    fn file_content(user_data: &str, path: &str) -> Option<String> {
        let at = user_data.find(&format!("path: \"{path}\""))?;
        let rest = &user_data[at..];
        let line = rest.lines().find_map(|l| l.trim().strip_prefix("content: "))?;
        String::from_utf8(BASE64.decode(line).ok()?).ok()
    }

    fn permissions_of(user_data: &str, path: &str) -> Option<String> {
        let at = user_data.find(&format!("path: \"{path}\""))?;
        let line = user_data[at..].lines().find_map(|l| l.trim().strip_prefix("permissions: "))?;
        Some(line.trim_matches('"').to_string())
    }

    #[test]
    fn user_data_starts_with_the_cloud_config_marker() {
        assert!(cloud_init(&tls(), &BootstrapOptions::default()).starts_with("#cloud-config\n"));
    }

    #[test]
    fn tls_material_lands_under_the_tls_dir_with_the_key_private() {
        let t = tls();
        let ud = cloud_init(&t, &BootstrapOptions::default());
        assert_eq!(file_content(&ud, "/etc/docker/tls/ca.pem").as_deref(), Some(t.ca_cert_pem.as_str()));
        assert_eq!(
            file_content(&ud, "/etc/docker/tls/server-cert.pem").as_deref(),
            Some(t.server_cert_pem.as_str())
        );
        assert_eq!(
            file_content(&ud, "/etc/docker/tls/server-key.pem").as_deref(),
            Some(t.server_key_pem.expose())
        );
        assert_eq!(permissions_of(&ud, "/etc/docker/tls/server-key.pem").as_deref(), Some("0600"));
        assert_eq!(permissions_of(&ud, "/etc/docker/tls/ca.pem").as_deref(), Some("0644"));
    }

    #[test]
    fn dockerd_keeps_the_unix_socket_and_serves_tcp_only_with_client_verification() {
        let ud = cloud_init(&tls(), &BootstrapOptions { docker_tls_port: 2400, ..Default::default() });
        let drop_in = file_content(&ud, DOCKER_DROP_IN).unwrap_or_default();
        // The empty ExecStart= clears the distribution's command line; without it systemd rejects a
        // second ExecStart for a simple service.
        assert!(drop_in.contains("ExecStart=\nExecStart=dockerd "), "{drop_in}");
        for flag in [
            "-H fd://",
            "-H tcp://0.0.0.0:2400",
            "--tlsverify",
            "--tlscacert=/etc/docker/tls/ca.pem",
            "--tlscert=/etc/docker/tls/server-cert.pem",
            "--tlskey=/etc/docker/tls/server-key.pem",
        ] {
            assert!(drop_in.contains(flag), "missing {flag} in {drop_in}");
        }
        assert!(ud.contains("  - \"docker.io\"\n"));
        assert!(ud.contains("[\"systemctl\", \"daemon-reload\"]"));
        assert!(ud.contains("[\"systemctl\", \"enable\", \"docker\"]"));
        assert!(ud.contains("[\"systemctl\", \"restart\", \"docker\"]"));
    }

    #[test]
    fn same_material_gives_the_same_bytes() {
        let o = BootstrapOptions::default();
        assert_eq!(cloud_init(&tls(), &o), cloud_init(&tls(), &o));
    }

    #[test]
    fn package_names_cannot_break_the_yaml() {
        let ud = cloud_init(
            &tls(),
            &BootstrapOptions { docker_package: "x\"\n- evil: 1".into(), ..Default::default() },
        );
        assert!(ud.contains("  - \"x\\\"\\u000a- evil: 1\"\n"), "{ud}");
    }

    #[test]
    fn size_check_rejects_one_byte_over_the_limit_and_names_sizes_only() {
        assert!(check_size(&"a".repeat(EC2_USER_DATA_LIMIT), EC2_USER_DATA_LIMIT).is_ok());
        let over = check_size(&"a".repeat(EC2_USER_DATA_LIMIT + 1), EC2_USER_DATA_LIMIT);
        assert_eq!(over, Err(UserDataTooLarge { size: 16385, limit: 16384 }));
        assert!(over.is_err_and(|e| !e.to_string().contains("aaaa")));
    }

    #[test]
    fn typical_material_fits_ec2s_limit() {
        // RSA-4096 sized material (the largest peerfleet could plausibly issue) still fits.
        let big = |label: &str, body: usize| {
            let line = "A".repeat(64);
            let body: String = (0..body / 64).map(|_| format!("{line}\n")).collect();
            format!("-----BEGIN {label}-----\n{body}-----END {label}-----\n")
        };
        let t = EngineTls {
            ca_cert_pem: big("CERTIFICATE", 1900),
            server_cert_pem: big("CERTIFICATE", 1900),
            server_key_pem: Secret::new(big("PRIVATE KEY", 3200)),
        };
        let ud = cloud_init(&t, &BootstrapOptions::default());
        assert!(check_size(&ud, EC2_USER_DATA_LIMIT).is_ok(), "{} bytes", ud.len());
    }
}
