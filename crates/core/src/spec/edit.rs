//! Editing a spec file in place: the `scale` command's "slider".
//!
//! The spec file stays the source of truth, so scaling rewrites the one number in it rather than
//! keeping the count anywhere else. The edit goes through `toml_edit`, which keeps every comment,
//! blank line and key order; the edited text is validated like any spec before it replaces the
//! file, and the replacement is atomic (a temporary file renamed over the original), so a failed
//! or interrupted scale leaves the old file intact.

use std::fs;
use std::path::Path;

use toml_edit::{DocumentMut, Item, TableLike, Value};

use crate::atomic::{self, FileMode};
use crate::network::{Network, Strategy};

use super::error::{SpecError, SpecErrorKind, SpecErrors};
use super::validate::MAX_CONTAINERS;
use super::{base_dir_of, parse};

/// The outcome of [`set_containers`].
#[derive(Debug, Clone)]
pub struct Scaled {
    /// The service's container count before the edit.
    pub before: u32,
    /// The count now written.
    pub after: u32,
    /// The network as the edited file now declares it.
    pub network: Network,
}

/// Sets the `containers` of service `service` in the spec file at `path` to `containers`.
///
/// Only that value changes (the key is added to the service's table if absent); comments and
/// layout are kept byte for byte. Nothing is written when the count is already `containers`.
///
/// # Errors
/// The file cannot be read or written, the service does not exist or is `every_node` (its count
/// follows the nodes), `containers` is out of range, or the edited spec fails validation; the file
/// is then left as it was.
pub fn set_containers(path: &Path, service: &str, containers: u32) -> Result<Scaled, SpecErrors> {
    let text = crate::input::read_regular_text(path, super::MAX_SPEC_BYTES)
        .map_err(|cause| SpecError::new("", SpecErrorKind::ReadSpec { cause }).in_file(path))?;
    let before = parse(&text, path, base_dir_of(path))?;
    let (index, current) =
        before.services.iter().enumerate().find(|(_, s)| s.name == service).ok_or_else(|| {
            let known = before.services.iter().map(|s| s.name.clone()).collect();
            SpecError::new("", SpecErrorKind::UnknownService { name: service.to_string(), known })
                .in_file(path)
        })?;
    let at = format!("services[{index}].containers");
    if current.strategy == Strategy::EveryNode {
        return Err(SpecError::new(at, SpecErrorKind::EveryNodeScaled).in_file(path).into());
    }
    if containers > MAX_CONTAINERS {
        let kind = SpecErrorKind::Invalid {
            expected: format!("0..={MAX_CONTAINERS}"),
            found: containers.to_string(),
        };
        return Err(SpecError::new(at, kind).in_file(path).into());
    }
    let edited = with_containers(&text, index, containers).map_err(|e| e.in_file(path))?;
    // The edited text must hold up as a whole (a genesis service cannot be scaled to 2, say).
    let network = parse(&edited, path, base_dir_of(path))?;
    if edited != text {
        write_atomically(path, &edited)?;
    }
    Ok(Scaled { before: current.containers, after: containers, network })
}

/// `text` with the `containers` of the `index`th service set; `index` comes from a validated parse.
fn with_containers(text: &str, index: usize, containers: u32) -> Result<String, SpecError> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        SpecError::new("", SpecErrorKind::Syntax { message: e.message().trim().to_string() })
    })?;
    let table = service_table(doc.as_item_mut(), index).ok_or_else(|| {
        // Invariant: the text parsed and validated, so `services[index]` is a table.
        SpecError::new(format!("services[{index}]"), SpecErrorKind::Missing)
    })?;
    let mut value = Value::from(i64::from(containers));
    match table.get_mut("containers").and_then(Item::as_value_mut) {
        Some(old) => {
            // Keep the spaces around the number and any comment after it.
            *value.decor_mut() = old.decor().clone();
            *old = value;
        }
        None => {
            table.insert("containers", Item::Value(value));
        }
    }
    Ok(doc.to_string())
}

/// The `index`th service, written either as `[[services]]` or as an inline table in an array.
fn service_table(root: &mut Item, index: usize) -> Option<&mut dyn TableLike> {
    match root.get_mut("services")? {
        Item::ArrayOfTables(tables) => tables.get_mut(index).map(|t| t as &mut dyn TableLike),
        Item::Value(Value::Array(items)) => {
            items.get_mut(index)?.as_inline_table_mut().map(|t| t as &mut dyn TableLike)
        }
        _ => None,
    }
}

/// Replaces the file at `path` (through a symlink, if it is one) with `text`, atomically, keeping
/// its mode (a spec may be deliberately private).
fn write_atomically(path: &Path, text: &str) -> Result<(), SpecError> {
    let target = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    atomic::write(&target, text.as_bytes(), FileMode::KeepExisting).map_err(|cause| {
        SpecError::new("", SpecErrorKind::Write { path: target.clone(), cause }).in_file(path)
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    const EXAMPLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples");

    /// A directory holding a copy of `example` (as `net.toml`) and the genesis file.
    fn workspace(example: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::copy(Path::new(EXAMPLES).join("genesis.json"), dir.path().join("genesis.json")).unwrap();
        let spec = dir.path().join("net.toml");
        fs::copy(Path::new(EXAMPLES).join(example), &spec).unwrap();
        (dir, spec)
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn set_containers_changes_only_the_number() {
        let (dir, spec) = workspace("nine_regions_local.toml");
        let before = fs::read_to_string(&spec).unwrap();
        let scaled = set_containers(&spec, "relay", 12).unwrap();
        assert_eq!((scaled.before, scaled.after), (9, 12));
        assert_eq!(scaled.network.service("relay").unwrap().containers, 12);
        let after = fs::read_to_string(&spec).unwrap();
        assert_eq!(before.matches("containers = 9\n").count(), 1);
        assert_eq!(after, before.replace("containers = 9\n", "containers = 12\n"));
        assert_eq!(files_in(dir.path()), ["genesis.json", "net.toml"], "no temporary file is left behind");
    }

    #[test]
    fn set_containers_keeps_a_comment_on_the_same_line() {
        let (_dir, spec) = workspace("nine_regions_local.toml");
        let text = fs::read_to_string(&spec)
            .unwrap()
            .replace("containers = 9\n", "containers   =  9   # the slider\n");
        fs::write(&spec, &text).unwrap();
        set_containers(&spec, "relay", 0).unwrap();
        assert_eq!(
            fs::read_to_string(&spec).unwrap(),
            text.replace("containers   =  9   # the slider\n", "containers   =  0   # the slider\n")
        );
    }

    #[test]
    fn set_containers_inserts_the_key_when_absent() {
        let (_dir, spec) = workspace("nine_regions_local.toml");
        let text = fs::read_to_string(&spec).unwrap().replace("containers = 9\n", "");
        fs::write(&spec, &text).unwrap();
        let scaled = set_containers(&spec, "relay", 3).unwrap();
        assert_eq!((scaled.before, scaled.after), (1, 3));
        let after = fs::read_to_string(&spec).unwrap();
        assert_eq!(after, format!("{text}containers = 3\n"));
        assert_eq!(crate::spec::load(&spec).unwrap().service("relay").unwrap().containers, 3);
    }

    #[test]
    fn an_inserted_key_stays_in_its_service_before_a_subtable() {
        let (_dir, spec) = workspace("nine_regions_local.toml");
        // The relay service is the file's last table, so this health table is the relay's.
        let text = fs::read_to_string(&spec).unwrap().replace("containers = 9\n", "")
            + "\n# how relays report health\n[services.health]\ncommand = [\"/probe\"]\n";
        fs::write(&spec, &text).unwrap();
        set_containers(&spec, "relay", 4).unwrap();
        let after = fs::read_to_string(&spec).unwrap();
        let at = after.rfind("[services.health]").unwrap();
        assert!(after[..at].ends_with("containers = 4\n\n# how relays report health\n"), "{after}");
        assert_eq!(crate::spec::load(&spec).unwrap().service("relay").unwrap().containers, 4);
    }

    #[test]
    fn set_containers_edits_inline_service_tables_too() {
        let (dir, _) = workspace("nine_regions_local.toml");
        let spec = dir.path().join("inline.toml");
        let text = "name = \"n\"\nchain = { genesis = \"genesis.json\" }\n\
                    clusters = [{ name = \"a\", provider = \"local\", region = \"London\" }]\n\
                    services = [\n  { name = \"genesis\", role = \"genesis\" },\n  { name = \"master\", role = \"master\" },\n  \
                    { name = \"relay\", role = \"relay\", containers = 2 }, # relays\n]\n";
        fs::write(&spec, text).unwrap();
        set_containers(&spec, "relay", 5).unwrap();
        assert_eq!(fs::read_to_string(&spec).unwrap(), text.replace("containers = 2 }", "containers = 5 }"));
    }

    #[test]
    fn set_containers_refuses_what_validation_refuses_and_leaves_the_file() {
        let (_dir, spec) = workspace("nine_regions_local.toml");
        let original = fs::read_to_string(&spec).unwrap();
        let e = set_containers(&spec, "relay", MAX_CONTAINERS + 1).unwrap_err();
        assert!(e.to_string().ends_with("services[2].containers: expected 0..=100000, found 100001"), "{e}");
        let e = set_containers(&spec, "master", 2).unwrap_err();
        assert!(e.to_string().contains(": services[1].containers: expected 1 (a master service"), "{e}");
        let e = set_containers(&spec, "relais", 2).unwrap_err();
        assert!(
            e.to_string().ends_with("no service named \"relais\" (services: genesis, master, relay)"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&spec).unwrap(), original);
    }

    #[test]
    fn set_containers_refuses_every_node_services() {
        let (_dir, spec) = workspace("nine_regions_local.toml");
        let text = fs::read_to_string(&spec)
            .unwrap()
            .replace("containers = 9\nstrategy = \"emptiest_node\"", "strategy = \"every_node\"");
        fs::write(&spec, &text).unwrap();
        let e = set_containers(&spec, "relay", 4).unwrap_err();
        assert!(
            e.to_string().contains("net.toml: services[2].containers: scaling an every_node service"),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&spec).unwrap(), text);
    }

    #[cfg(unix)]
    #[test]
    fn set_containers_keeps_the_file_mode_and_writes_through_symlinks() {
        use std::os::unix::fs::{PermissionsExt, symlink};
        let (dir, spec) = workspace("nine_regions_local.toml");
        fs::set_permissions(&spec, fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.toml");
        symlink(&spec, &link).unwrap();
        set_containers(&link, "relay", 7).unwrap();
        assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(fs::metadata(&spec).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(fs::read_to_string(&spec).unwrap().contains("containers = 7\n"));
    }
}
