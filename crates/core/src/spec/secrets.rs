//! Env values declared by where they come from: `{ from_env = "NODE_API_KEY", secret = true }`,
//! `{ from_file = "db.url" }`, `{ value = "...", secret = true }`.
//!
//! A secret never has to be written into `network.toml`: it is read from the operator's environment or
//! a file each time the spec is loaded, and from then on it travels as a [`Secret`] (whose `Debug`
//! is redacted) and is sealed wherever it is recorded (see [`crate::seal`]). A table-form value is
//! secret unless it says `secret = false`: a value someone bothered to keep out of the spec is
//! presumably one they do not want shown.
//!
//! A variable that is unset or a file that cannot be read is an error located at the `from_env` /
//! `from_file` key, reported with the spec's other problems; the value itself is never part of a
//! message.

use std::ffi::OsString;
use std::path::Path;

use crate::provider::Secret;

use super::error::{Origin, SpecError, SpecErrorKind};
use super::raw::{Located, RawEnvSource, RawEnvValue, RawSpec};

/// Looks up one variable of the operator's environment (`std::env::var_os` outside tests).
pub(crate) type Lookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

const SOURCES: &str = "exactly one of from_env, from_file, value";

/// Reads every `from_env` and `from_file` value of `raw` into its [`RawEnvSource::resolved`];
/// returns what could not be read, or was declared wrongly.
pub(crate) fn resolve(
    raw: &mut RawSpec,
    base_dir: &Path,
    lookup: Lookup<'_>,
    origin: Origin<'_>,
) -> Vec<SpecError> {
    let mut errors = Vec::new();
    for (i, service) in raw.services.iter_mut().enumerate() {
        let Some(env) = service.value.env.as_mut() else { continue };
        for (key, value) in env.value.iter_mut() {
            let Located { value: RawEnvValue::Source(source), span } = value else { continue };
            let path = format!("services[{i}].env.{}", key.value);
            match read(source, base_dir, lookup) {
                Ok(resolved) => source.resolved = resolved,
                Err(Problem { at, expected, found }) => {
                    let span = at.map_or(span.clone(), |at| source_span(source, at));
                    let path = at.map_or(path.clone(), |at| format!("{path}.{at}"));
                    errors.push(origin.error(span, path, SpecErrorKind::Invalid { expected, found }));
                }
            }
        }
    }
    errors
}

struct Problem {
    /// The key of the table the problem is at (`from_env`), or the table itself.
    at: Option<&'static str>,
    expected: String,
    found: String,
}

fn source_span(source: &RawEnvSource, at: &str) -> Option<std::ops::Range<usize>> {
    match at {
        "from_env" => source.from_env.as_ref().and_then(|v| v.span.clone()),
        _ => source.from_file.as_ref().and_then(|v| v.span.clone()),
    }
}

/// The value `source` names (`None` for `value`, which needs no reading).
fn read(source: &RawEnvSource, base_dir: &Path, lookup: Lookup<'_>) -> Result<Option<Secret>, Problem> {
    let given: Vec<&str> = [
        source.from_env.as_ref().map(|_| "from_env"),
        source.from_file.as_ref().map(|_| "from_file"),
        source.value.as_ref().map(|_| "value"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        let found = if given.is_empty() { "none".to_string() } else { given.join(" and ") };
        return Err(Problem { at: None, expected: SOURCES.into(), found });
    }
    let problem = |at, expected: &str, found: &str| Problem {
        at: Some(at),
        expected: expected.into(),
        found: found.into(),
    };
    if let Some(name) = &source.from_env {
        let expected = format!("the environment variable {} to be set", name.value);
        let value = match lookup(&name.value) {
            None => return Err(problem("from_env", &expected, "it unset")),
            Some(v) => {
                v.into_string().map_err(|_| problem("from_env", &expected, "a value that is not UTF-8"))?
            }
        };
        return checked(value).map(Some).map_err(|found| problem("from_env", &expected, found));
    }
    if let Some(file) = &source.from_file {
        let path = base_dir.join(&file.value);
        let expected = format!("a readable UTF-8 file at {}", path.display());
        let mut text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| problem("from_file", &expected, "bytes that are not UTF-8"))?,
            Err(e) => return Err(Problem { at: Some("from_file"), expected, found: e.to_string() }),
        };
        // Files written by editors and `echo` end in a newline that is not part of the secret.
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        return checked(text).map(Some).map_err(|found| problem("from_file", &expected, found));
    }
    Ok(None)
}

/// A value an environment variable can carry, and that is worth declaring.
fn checked(value: String) -> Result<Secret, &'static str> {
    if value.is_empty() {
        Err("an empty value")
    } else if value.contains('\0') {
        Err("a value containing a NUL byte")
    } else {
        Ok(Secret::new(value))
    }
}

/// The value of a table-form env entry once resolved, and whether it is secret; `None` when it was
/// not read (an error [`resolve`] reported).
pub(crate) fn value_of(source: &RawEnvSource) -> Option<(String, bool)> {
    let secret = source.secret.as_ref().is_none_or(|s| s.value);
    let value = match &source.value {
        Some(v) => v.value.clone(),
        None => source.resolved.as_ref()?.expose().to_string(),
    };
    Some((value, secret))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use crate::spec::SpecErrors;

    const BASE: &str = "name = \"n\"\n[chain]\ngenesis = \"g.json\"\n\
        [[clusters]]\nname = \"home\"\nprovider = \"local\"\nregion = \"Frankfurt\"\nnodes = 1\n\
        [[services]]\nname = \"genesis\"\nrole = \"genesis\"\n\
        [[services]]\nname = \"master\"\nrole = \"master\"\n";

    fn load(env: &str, vars: &[(&str, &str)]) -> (tempfile::TempDir, Result<crate::Network, SpecErrors>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("g.json"), b"{}").unwrap();
        std::fs::write(dir.path().join("db.url"), b"postgres://u:filepw@db/x\n").unwrap();
        let text = format!("{BASE}env = {env}\n");
        let vars: BTreeMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| vars.get(name).map(Into::into);
        let result = super::super::parse_with(&text, Path::new("network.toml"), dir.path(), &lookup);
        (dir, result)
    }

    #[test]
    fn declared_secrets_are_read_from_the_environment_and_files() {
        let env = "{ API_KEY = { from_env = \"NODE_API_KEY\", secret = true }, \
                   DATABASE_URL = { from_file = \"db.url\" }, LOG = { from_env = \"LVL\", secret = false }, \
                   CREDENTIALS = { value = \"lit\" }, PLAIN = \"x\" }";
        let (_dir, net) = load(env, &[("NODE_API_KEY", "envpw"), ("LVL", "debug")]);
        let master = net.unwrap().services.into_iter().find(|s| s.name == "master").unwrap();
        let secrets: BTreeMap<&str, &str> =
            master.secrets.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(
            secrets,
            BTreeMap::from([
                ("API_KEY", "envpw"),
                ("CREDENTIALS", "lit"),
                ("DATABASE_URL", "postgres://u:filepw@db/x")
            ])
        );
        assert_eq!(
            master.env,
            BTreeMap::from([("LOG".into(), "debug".into()), ("PLAIN".into(), "x".into())])
        );
        assert!(!format!("{master:?}").contains("envpw"), "a secret's Debug is redacted");
    }

    #[test]
    fn missing_variable_is_an_error_at_its_from_env_key() {
        let (_dir, net) = load("{ API_KEY = { from_env = \"NODE_API_KEY\", secret = true } }", &[]);
        let e = net.unwrap_err();
        let e = e.first();
        assert_eq!(e.path(), "services[1].env.API_KEY.from_env");
        assert_eq!(e.line(), Some(15));
        let text = e.to_string();
        assert!(text.starts_with("network.toml:15:"), "{text}");
        assert!(
            text.contains("expected the environment variable NODE_API_KEY to be set, found it unset"),
            "{text}"
        );
    }

    #[test]
    fn missing_file_and_bad_declarations_are_all_reported() {
        let env = "{ A = { from_file = \"nope.txt\" }, B = { secret = true }, \
                   C = { from_env = \"X\", value = \"v\" }, D = { from_env = \"EMPTY\" } }";
        let (_dir, net) = load(env, &[("EMPTY", "")]);
        let errors = net.unwrap_err();
        let got: Vec<(String, String)> =
            errors.errors().iter().map(|e| (e.path().to_string(), e.kind().to_string())).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].0, "services[1].env.A.from_file");
        assert!(got[0].1.contains("nope.txt"), "{got:?}");
        assert_eq!(got[1], ("services[1].env.B".into(), format!("expected {}, found none", super::SOURCES)));
        assert_eq!(got[2].1, format!("expected {}, found from_env and value", super::SOURCES));
        assert_eq!(got[3].0, "services[1].env.D.from_env");
        assert!(got[3].1.ends_with("found an empty value"), "{got:?}");
    }

    #[test]
    fn unknown_key_in_a_source_table_is_a_schema_error() {
        let (_dir, net) = load("{ A = { from_envv = \"X\" } }", &[]);
        let e = net.unwrap_err();
        assert!(e.first().to_string().contains("from_envv"), "{e}");
    }
}
