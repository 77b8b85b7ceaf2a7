//! The reference node image, built on the engine itself — no registry, no base image, no pull.
//!
//! The image holds exactly the `peerfleet-node` binary, the shared libraries `ldd` says it loads, and
//! the dynamic loader, at the paths the binary expects. The build context (a tar with a `FROM scratch`
//! Dockerfile) is made deterministically on this side, and the image is tagged with the first 16 hex
//! digits of its sha256, so:
//! - the tag is known before any engine is contacted (the planner puts it into container specs);
//! - a changed binary (or a changed system library) is a new tag, which rolls the containers out;
//! - the same binary is built once per engine: [`ensure_image`] builds only when the tag is missing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use peerfleet_core::provider::{ErrorKind, ProviderError};
use sha2::{Digest, Sha256};

use crate::error::{Error, PROVIDER, engine_error, is_not_found};

/// The repository of the reference node image: `peerfleet-node:<content hash>`.
pub const REPOSITORY: &str = "peerfleet-node";

/// Where the binary sits in the image, and the image's entrypoint.
pub const NODE_PATH_IN_IMAGE: &str = "/peerfleet-node";

/// The environment variable that names the `peerfleet-node` binary explicitly.
pub const NODE_BIN_ENV: &str = "PEERFLEET_NODE_BIN";

const DOCKERFILE: &str = "\
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin:/
LABEL peerfleet.image=\"reference\"
ENTRYPOINT [\"/peerfleet-node\"]
CMD [\"run\"]
";

/// Without it glibc asks DNS before `/etc/hosts`, and `localhost` may not resolve.
const NSSWITCH: &str = "hosts: files dns\n";

/// A reference image: its content tag and the build context it is built from.
#[derive(Clone, PartialEq, Eq)]
pub struct ReferenceImage {
    /// `peerfleet-node:<first 16 hex digits of sha256(context)>`.
    pub tag: String,
    /// The build context: a tar holding the Dockerfile and the image's files.
    pub context: Vec<u8>,
}

impl fmt::Debug for ReferenceImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReferenceImage")
            .field("tag", &self.tag)
            .field("context_bytes", &self.context.len())
            .finish()
    }
}

/// The reference image for the node binary at `binary`, tagged `peerfleet-node:<hash>`. Touches no
/// engine: it reads the binary and its libraries and runs `ldd`.
///
/// # Errors
/// When the binary or a library cannot be read, is not an ELF executable, or `ldd` fails or reports a
/// library as not found.
pub fn reference_image(binary: &Path) -> Result<ReferenceImage, Error> {
    reference_image_named(REPOSITORY, binary)
}

/// [`reference_image`] under another repository name (`<repository>:<hash>`), e.g. for test images.
///
/// # Errors
/// As [`reference_image`].
pub fn reference_image_named(repository: &str, binary: &Path) -> Result<ReferenceImage, Error> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source });
    let node = read(binary)?;
    let mut files = vec![(format!("rootfs{NODE_PATH_IN_IMAGE}"), node.clone())];
    if is_dynamic(&node, binary)? {
        for lib in shared_libraries(binary)? {
            // Libraries are often symlinks (the loader in /lib64 is); the image gets the file itself
            // at the path the binary asks for.
            files.push((format!("rootfs{}", lib.display()), read(&lib)?));
        }
    }
    files.push(("rootfs/etc/nsswitch.conf".into(), NSSWITCH.as_bytes().to_vec()));
    files.push(("Dockerfile".into(), DOCKERFILE.as_bytes().to_vec()));
    let context = build_context(files)?;
    let digest = hex::encode(Sha256::digest(&context));
    Ok(ReferenceImage { tag: format!("{repository}:{}", &digest[..16]), context })
}

/// Whether the ELF file asks for a dynamic loader (has a `PT_INTERP` program header).
fn is_dynamic(elf: &[u8], path: &Path) -> Result<bool, Error> {
    let not_elf = || Error::Command {
        command: format!("reading {}", path.display()),
        detail: "not an ELF executable for this machine".into(),
    };
    if elf.len() < 0x40 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        // Only 64-bit little-endian: the image runs on engines of the same architecture as this one.
        return Err(not_elf());
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().map_err(|_| not_elf())?) as usize;
    let (entsize, count) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..count {
        let at = phoff + i * entsize;
        let p_type = elf.get(at..at + 4).ok_or_else(not_elf)?;
        if u32::from_le_bytes(p_type.try_into().map_err(|_| not_elf())?) == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The absolute paths of the shared libraries and loader `ldd` lists for `binary`.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, Error> {
    let command = format!("ldd {}", binary.display());
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| Error::Command { command: command.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    parse_ldd(&String::from_utf8_lossy(&out.stdout)).map_err(|detail| Error::Command { command, detail })
}

/// Parses `ldd` output: `name => /path (0x…)` lines and the loader's `/path (0x…)` line; the vDSO has
/// no file and is skipped.
fn parse_ldd(output: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!("library {} not found", name.trim()));
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or_default().trim();
        if path.starts_with('/') {
            libs.push(PathBuf::from(path));
        }
    }
    libs.sort();
    libs.dedup();
    Ok(libs)
}

/// A tar of `files` (path, bytes) plus their parent directories, byte-for-byte the same for the same
/// input: sorted, with fixed owners, modes and times.
fn build_context(mut files: Vec<(String, Vec<u8>)>) -> Result<Vec<u8>, Error> {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dirs: Vec<String> = files
        .iter()
        .flat_map(|(path, _)| {
            let parts: Vec<&str> = path.split('/').collect();
            (1..parts.len()).map(move |n| parts[..n].join("/"))
        })
        .chain(["rootfs/tmp".to_string()])
        .collect();
    dirs.sort();
    dirs.dedup();
    let io = |source| Error::Io { path: PathBuf::from("<image build context>"), source };
    let mut tar = tar::Builder::new(Vec::new());
    for dir in &dirs {
        let mut header =
            header(tar::EntryType::Directory, 0, if dir == "rootfs/tmp" { 0o1777 } else { 0o755 });
        tar.append_data(&mut header, format!("{dir}/"), std::io::empty()).map_err(io)?;
    }
    for (path, bytes) in &files {
        let mode = if path.starts_with("rootfs/etc/") || path == "Dockerfile" { 0o644 } else { 0o755 };
        let mut header = header(tar::EntryType::Regular, bytes.len() as u64, mode);
        tar.append_data(&mut header, path, bytes.as_slice()).map_err(io)?;
    }
    tar.into_inner().map_err(io)
}

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

/// What [`ensure_image`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsureOutcome {
    /// The engine already had the tag.
    Present,
    /// The engine built it now.
    Built,
}

/// Makes sure the engine `docker` talks to has `image`, building it from its context only when the tag is missing.
///
/// # Errors
/// When the engine cannot be reached, or the build fails ([`ErrorKind::Invalid`], with the engine's
/// message).
pub async fn ensure_image(docker: &Docker, image: &ReferenceImage) -> Result<EnsureOutcome, ProviderError> {
    match docker.inspect_image(&image.tag).await {
        Ok(_) => return Ok(EnsureOutcome::Present),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(engine_error(e, format!("image {}", image.tag))),
    }
    tracing::info!(image = %image.tag, "building the reference node image");
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(&image.tag)
        .rm(true)
        .forcerm(true)
        .build();
    let body = bollard::body_full(image.context.clone().into());
    let mut progress = docker.build_image(options, None, Some(body));
    while let Some(step) = progress.next().await {
        let step = step.map_err(|e| engine_error(e, format!("building image {}", image.tag)))?;
        if let Some(detail) = step.error_detail {
            let message = detail.message.unwrap_or_else(|| "the engine reported an error".into());
            return Err(ProviderError::new(
                ErrorKind::Invalid,
                PROVIDER,
                format!("building image {}: {message}", image.tag),
            ));
        }
    }
    match docker.inspect_image(&image.tag).await {
        Ok(_) => Ok(EnsureOutcome::Built),
        Err(e) => Err(engine_error(e, format!("image {} after its build", image.tag))),
    }
}

/// Finds the `peerfleet-node` binary (shipped by the `peerfleet` package, so `cargo install` puts it
/// beside the CLI):
/// 1. `PEERFLEET_NODE_BIN`, when set;
/// 2. when running under Cargo (`CARGO` is set) and `workspace_manifest_dir` is given (pass
///    `env!("CARGO_MANIFEST_DIR")`), `cargo build --example peerfleet-node` there, in the profile this
///    crate was built in: quick when nothing changed, and never a stale binary in use. Without `-p`,
///    Cargo picks the package of that directory or the workspace's default members — in peerfleet's
///    workspace the examples package, whose build a `cargo run --example` has just made, so only the
///    node example is linked;
/// 3. `peerfleet-node` next to the running executable, or in its parent directory (examples and tests
///    run from subdirectories of the profile directory), or in its `examples/` subdirectory (the CLI
///    run by `cargo run -p peerfleet` from a source tree finds the node the examples built).
///
/// # Errors
/// [`Error::NodeBinaryNotFound`] naming what was tried, or [`Error::Command`] when the build fails.
pub fn locate_node_binary(workspace_manifest_dir: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(path) = std::env::var_os(NODE_BIN_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(Error::NodeBinaryNotFound(format!(
                "{NODE_BIN_ENV} names {}, which is not a file",
                path.display()
            )))
        };
    }
    if let (Some(cargo), Some(dir)) = (std::env::var_os("CARGO"), workspace_manifest_dir) {
        return cargo_build_node(Path::new(&cargo), dir);
    }
    let exe = std::env::current_exe().map_err(|e| Error::NodeBinaryNotFound(e.to_string()))?;
    let mut candidates: Vec<PathBuf> =
        exe.ancestors().skip(1).take(2).map(|dir| dir.join(binary_name())).collect();
    if let Some(dir) = exe.parent() {
        candidates.push(dir.join("examples").join(binary_name()));
    }
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Error::NodeBinaryNotFound(format!(
            "install it beside this program (`cargo install peerfleet` installs both) or set \
             {NODE_BIN_ENV} to its path (tried {})",
            tried.join(", ")
        ))
    })
}

/// Whether `key` is one of the variables Cargo sets for the program it runs (not one a person sets
/// for Cargo, such as `CARGO_TARGET_DIR` or `CARGO_HOME`; `CARGO` itself is kept).
fn set_by_cargo_for_the_program(key: &str) -> bool {
    key.starts_with("CARGO_PKG_")
        || matches!(
            key,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

fn binary_name() -> String {
    format!("peerfleet-node{}", std::env::consts::EXE_SUFFIX)
}

/// Builds `peerfleet-node` with Cargo and returns the executable Cargo reports.
fn cargo_build_node(cargo: &Path, manifest_dir: &Path) -> Result<PathBuf, Error> {
    let mut command = Command::new(cargo);
    command.current_dir(manifest_dir).args([
        "build",
        "--example",
        "peerfleet-node",
        "--message-format=json-render-diagnostics",
    ]);
    // A program run by `cargo run` carries the variables Cargo sets for the package it ran. Build
    // scripts watch some of them (`ring` reruns on `CARGO_PKG_NAME` and `CARGO_MANIFEST_DIR`), and
    // Cargo compares them with its own environment: passed on, they would rebuild `ring` and all that
    // depends on it here, and again in the next ordinary build.
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(set_by_cargo_for_the_program) {
            command.env_remove(&key);
        }
    }
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let described = format!("cargo build --example peerfleet-node (in {})", manifest_dir.display());
    let out =
        command.output().map_err(|e| Error::Command { command: described.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: described,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "peerfleet-node")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| Error::Command {
            command: described,
            detail: "Cargo reported no peerfleet-node executable".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nested_build_drops_what_cargo_set_for_the_running_program_and_keeps_what_a_person_set() {
        for key in ["CARGO_PKG_NAME", "CARGO_PKG_VERSION_MAJOR", "CARGO_MANIFEST_DIR", "CARGO_MANIFEST_PATH"]
        {
            assert!(set_by_cargo_for_the_program(key), "{key}");
        }
        for key in ["CARGO", "CARGO_HOME", "CARGO_TARGET_DIR", "CARGO_BUILD_JOBS", "RUSTFLAGS", "PATH"] {
            assert!(!set_by_cargo_for_the_program(key), "{key}");
        }
    }

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffc8a5f2000)
\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1a9d0000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1a7ef000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1aa3f000)
";

    #[test]
    fn ldd_output_yields_libraries_and_loader_but_not_the_vdso() {
        let libs = parse_ldd(LDD).unwrap();
        assert_eq!(
            libs,
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error_naming_it() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn build_context_is_deterministic_and_holds_parent_directories() {
        let files = vec![
            ("rootfs/a/b".to_string(), b"x".to_vec()),
            ("Dockerfile".to_string(), b"FROM scratch".to_vec()),
        ];
        let one = build_context(files.clone()).unwrap();
        let two = build_context(files.into_iter().rev().collect()).unwrap();
        assert_eq!(one, two);
        let mut archive = tar::Archive::new(one.as_slice());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, vec!["rootfs/", "rootfs/a/", "rootfs/tmp/", "Dockerfile", "rootfs/a/b"]);
    }

    #[test]
    fn reference_image_of_this_test_binary_is_tagged_by_content() {
        let exe = std::env::current_exe().unwrap();
        let image = reference_image(&exe).unwrap();
        let (repo, hash) = image.tag.split_once(':').unwrap();
        assert_eq!(repo, REPOSITORY);
        assert_eq!(hash.len(), 16);
        assert_eq!(reference_image(&exe).unwrap().tag, image.tag, "same input, same tag");
        let mut archive = tar::Archive::new(image.context.as_slice());
        let names: Vec<String> =
            archive.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert!(names.contains(&"rootfs/peerfleet-node".to_string()));
        assert!(names.iter().any(|n| n.contains("libc.so")), "{names:?}");
    }

    #[test]
    fn non_elf_files_are_refused() {
        let err = is_dynamic(b"#!/bin/sh\necho hi\n", Path::new("script")).unwrap_err();
        assert!(err.to_string().contains("not an ELF"), "{err}");
    }
}
