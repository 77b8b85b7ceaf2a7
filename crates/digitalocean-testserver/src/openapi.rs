//! Conformance with DigitalOcean's official OpenAPI 3.0 description.
//!
//! The description is data, not code: it is loaded at run time from the file beside the repository
//! (never copied into it), rewritten into plain JSON Schema (draft 4, which OpenAPI 3.0 schemas are a
//! dialect of), and every request and response is checked against the operation it belongs to.
//!
//! The rewrites, each for a documented difference between OpenAPI 3.0 and JSON Schema:
//! - `nullable: true` becomes a `null` alternative; without it DigitalOcean's own example droplet
//!   (`"kernel": null`) fails;
//! - a property that is `readOnly` is not required in requests, one that is `writeOnly` not in
//!   responses (OpenAPI 3.0 says `required` applies only in the direction the property travels), so
//!   the description is rewritten twice, once per direction.
//!
//! Unknown formats (`uint32`, `uuid` in draft 4) are ignored rather than rejected.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use jsonschema::{Draft, Registry, Validator};
use serde_json::{Map, Value};

/// Env var naming the bundled description file, overriding the default location.
pub const OPENAPI_ENV: &str = "PEERFLEET_DO_OPENAPI";

/// The default location: the `shared` directory beside the repository.
pub fn default_location() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/digitalocean-openapi/DigitalOcean-public.v2.bundled.json")
}

/// Where the description is looked for: `PEERFLEET_DO_OPENAPI`, else [`default_location`].
pub fn location() -> PathBuf {
    std::env::var_os(OPENAPI_ENV).map(PathBuf::from).unwrap_or_else(default_location)
}

/// Why the description could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is not there.
    #[error("DigitalOcean's OpenAPI description was not found at {0} (set {OPENAPI_ENV} to its path)")]
    Missing(PathBuf),
    /// The file is there but unreadable or not a usable description.
    #[error("DigitalOcean's OpenAPI description at {path} is unusable: {reason}")]
    Unusable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// Which way a message travels; decides which rewrite of the description applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// One path template of the description, split into segments.
#[derive(Debug)]
struct Template {
    text: String,
    /// `None` for a `{parameter}` segment.
    segments: Vec<Option<String>>,
}

/// A loaded, rewritten description with compiled validators cached per schema location.
pub struct Description {
    path: PathBuf,
    request: Arc<Value>,
    templates: Vec<Template>,
    registries: BTreeMap<Direction, Registry<'static>>,
    cache: Mutex<HashMap<(Direction, String), Arc<Validator>>>,
}

impl std::fmt::Debug for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Description").field("path", &self.path).finish_non_exhaustive()
    }
}

const BASE_URI: &str = "https://openapi.peerfleet.invalid/digitalocean";

fn base_uri(direction: Direction) -> String {
    match direction {
        Direction::Request => format!("{BASE_URI}/request.json"),
        Direction::Response => format!("{BASE_URI}/response.json"),
    }
}

impl Description {
    /// The process-wide description, loaded once from [`location`].
    pub fn shared() -> Result<Arc<Description>, Arc<LoadError>> {
        static SHARED: OnceLock<Result<Arc<Description>, Arc<LoadError>>> = OnceLock::new();
        SHARED.get_or_init(|| Description::load(&location()).map(Arc::new).map_err(Arc::new)).clone()
    }

    /// Loads and rewrites the description at `path`.
    pub fn load(path: &Path) -> Result<Description, LoadError> {
        let unusable = |reason: String| LoadError::Unusable { path: path.to_path_buf(), reason };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LoadError::Missing(path.to_path_buf()));
            }
            Err(e) => return Err(unusable(e.to_string())),
        };
        let raw: Value = serde_json::from_str(&text).map_err(|e| unusable(e.to_string()))?;
        let paths =
            raw.get("paths").and_then(Value::as_object).ok_or_else(|| unusable("no `paths`".into()))?;
        let templates = paths
            .keys()
            .map(|text| Template {
                text: text.clone(),
                segments: text
                    .trim_start_matches('/')
                    .split('/')
                    .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_string()))
                    .collect(),
            })
            .collect();
        let mut registries = BTreeMap::new();
        let mut request = None;
        for direction in [Direction::Request, Direction::Response] {
            let mut doc = raw.clone();
            rewrite(&mut doc, direction);
            let registry = Registry::new()
                .draft(Draft::Draft4)
                .add(base_uri(direction), doc.clone())
                .and_then(|b| b.prepare())
                .map_err(|e| unusable(e.to_string()))?;
            registries.insert(direction, registry);
            if direction == Direction::Request {
                request = Some(Arc::new(doc));
            }
        }
        let request = request.ok_or_else(|| unusable("internal: request rewrite missing".into()))?;
        Ok(Description { path: path.to_path_buf(), request, templates, registries, cache: Mutex::default() })
    }

    /// The file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The description's path template for a concrete request path (`/v2/droplets/12` →
    /// `/v2/droplets/{droplet_id}`), preferring the template with the most literal segments.
    pub fn template_for(&self, path: &str) -> Option<&str> {
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        self.templates
            .iter()
            .filter(|t| {
                t.segments.len() == segs.len()
                    && t.segments.iter().zip(&segs).all(|(t, s)| t.as_deref().is_none_or(|lit| lit == *s))
            })
            .max_by_key(|t| t.segments.iter().filter(|s| s.is_some()).count())
            .map(|t| t.text.as_str())
    }

    /// The operation object for `method` on `template`, and its JSON pointer.
    fn operation(&self, template: &str, method: &str) -> Option<(&Value, String)> {
        let m = method.to_ascii_lowercase();
        let op = self.request.get("paths")?.get(template)?.get(&m)?;
        Some((op, format!("/paths/{}/{}", escape_pointer(template), m)))
    }

    /// The operation ID of `method` on the concrete `path`, if the description has it.
    pub fn operation_id(&self, method: &str, path: &str) -> Option<String> {
        let template = self.template_for(path)?;
        let (op, _) = self.operation(template, method)?;
        op.get("operationId").and_then(Value::as_str).map(str::to_string)
    }

    /// Checks a request; returns what is wrong with it (empty = conforms).
    pub fn check_request(&self, req: &RequestParts<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(template) = self.template_for(req.path) else {
            return vec![format!("no path in the description matches {}", req.path)];
        };
        let Some((op, op_ptr)) = self.operation(template, req.method) else {
            return vec![format!("{} {template} is not an operation of the description", req.method)];
        };
        let params = self.parameters(template, op, &op_ptr);
        // Path parameters.
        let segs: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
        let tsegs: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        for (t, s) in tsegs.iter().zip(&segs) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                match params.iter().find(|(p, _)| p.get("in") == Some(&"path".into()) && p["name"] == *name) {
                    Some((p, ptr)) => {
                        let value = coerce(s, p.get("schema"));
                        self.check_value(
                            Direction::Request,
                            &format!("{ptr}/schema"),
                            &value,
                            &mut problems,
                            &format!("path parameter `{name}`"),
                        );
                    }
                    None => problems.push(format!("path parameter `{name}` is not declared")),
                }
            }
        }
        // Query parameters: every given one must be declared and valid, every required one given.
        let mut given: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in &req.query {
            given.entry(k.as_str()).or_default().push(v.as_str());
        }
        for (name, values) in &given {
            match params.iter().find(|(p, _)| p.get("in") == Some(&"query".into()) && p["name"] == **name) {
                Some((p, ptr)) => {
                    let schema = p.get("schema");
                    let value = if schema.and_then(|s| s.get("type")) == Some(&"array".into()) {
                        Value::Array(
                            values.iter().map(|v| coerce(v, schema.and_then(|s| s.get("items")))).collect(),
                        )
                    } else if values.len() > 1 {
                        problems.push(format!("query parameter `{name}` given {} times", values.len()));
                        continue;
                    } else {
                        coerce(values[0], schema)
                    };
                    self.check_value(
                        Direction::Request,
                        &format!("{ptr}/schema"),
                        &value,
                        &mut problems,
                        &format!("query parameter `{name}`"),
                    );
                }
                None => problems
                    .push(format!("query parameter `{name}` is not declared for {} {template}", req.method)),
            }
        }
        for (p, _) in &params {
            if p.get("in") == Some(&"query".into())
                && p.get("required") == Some(&Value::Bool(true))
                && let Some(name) = p.get("name").and_then(Value::as_str)
                && !given.contains_key(name)
            {
                problems.push(format!("required query parameter `{name}` is missing"));
            }
        }
        // Body.
        let body_decl = op.get("requestBody").map(|b| self.deref(b, &format!("{op_ptr}/requestBody")));
        match (body_decl, req.body) {
            (None, Some(_)) => problems.push("the operation takes no request body, but one was sent".into()),
            (None, None) => {}
            (Some((decl, _)), None) => {
                if decl.get("required") == Some(&Value::Bool(true)) {
                    problems.push("the request body is required but missing".into());
                }
            }
            (Some((decl, ptr)), Some(body)) => {
                let json = decl.get("content").and_then(|c| c.get("application/json"));
                match (json, req.content_type.is_some_and(|c| c.starts_with("application/json"))) {
                    (None, _) => problems.push("the operation declares no JSON request body".into()),
                    (Some(_), false) => problems.push(format!(
                        "request body content type is {:?}, not application/json",
                        req.content_type.unwrap_or("(none)")
                    )),
                    (Some(_), true) => match serde_json::from_slice::<Value>(body) {
                        Ok(v) => self.check_value(
                            Direction::Request,
                            &format!("{ptr}/content/application~1json/schema"),
                            &v,
                            &mut problems,
                            "request body",
                        ),
                        Err(e) => problems.push(format!("request body is not JSON: {e}")),
                    },
                }
            }
        }
        problems
    }

    /// Checks a response to a request on `method` + `path`; returns what is wrong (empty = conforms).
    pub fn check_response(
        &self,
        method: &str,
        path: &str,
        status: u16,
        headers: &[(String, String)],
        body: Option<&Value>,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(template) = self.template_for(path) else {
            return vec![format!("no path in the description matches {path}")];
        };
        let Some((op, op_ptr)) = self.operation(template, method) else {
            return vec![format!("{method} {template} is not an operation of the description")];
        };
        let Some(responses) = op.get("responses").and_then(Value::as_object) else {
            return vec![format!("{method} {template} declares no responses")];
        };
        let code = status.to_string();
        let class = format!("{}XX", status / 100);
        let Some(key) =
            [code.as_str(), class.as_str(), "default"].into_iter().find(|k| responses.contains_key(*k))
        else {
            return vec![format!("status {status} is not declared for {method} {template}")];
        };
        let (decl, ptr) = self.deref(&responses[key], &format!("{op_ptr}/responses/{key}"));
        if let Some(hs) = decl.get("headers").and_then(Value::as_object) {
            for (name, h) in hs {
                let (h, hptr) = self.deref(h, &format!("{ptr}/headers/{}", escape_pointer(name)));
                let given = headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
                match given {
                    Some((_, v)) => {
                        let value = coerce(v, h.get("schema"));
                        self.check_value(
                            Direction::Response,
                            &format!("{hptr}/schema"),
                            &value,
                            &mut problems,
                            &format!("header `{name}`"),
                        );
                    }
                    None if h.get("required") == Some(&Value::Bool(true)) => {
                        problems.push(format!("required header `{name}` is missing"));
                    }
                    None => {}
                }
            }
        }
        let json = decl.get("content").and_then(|c| c.get("application/json"));
        match (json, body) {
            (None, Some(_)) => {
                problems.push(format!("status {status} declares no JSON body, but one was sent"))
            }
            (Some(_), None) => {
                problems.push(format!("status {status} declares a JSON body, but none was sent"))
            }
            (None, None) => {}
            (Some(_), Some(v)) => self.check_value(
                Direction::Response,
                &format!("{ptr}/content/application~1json/schema"),
                v,
                &mut problems,
                &format!("response body ({status})"),
            ),
        }
        problems
    }

    /// Validates one value against the schema at `pointer` (a JSON pointer into the description).
    pub fn check_value(
        &self,
        direction: Direction,
        pointer: &str,
        value: &Value,
        problems: &mut Vec<String>,
        what: &str,
    ) {
        let pointer = self.resolve_schema_pointer(pointer);
        let validator = match self.validator(direction, &pointer) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{what}: schema at {pointer} does not compile: {e}"));
                return;
            }
        };
        for err in validator.iter_errors(value).take(20) {
            problems.push(format!("{what}: at `{}`: {err}", err.instance_path()));
        }
    }

    /// Follows a pointer whose target is itself just a `$ref`, so schemas shared through
    /// `components` compile once and the URI never needs percent-encoding of path templates.
    fn resolve_schema_pointer(&self, pointer: &str) -> String {
        let mut pointer = pointer.to_string();
        for _ in 0..16 {
            match self.request.pointer(&pointer).and_then(|v| v.get("$ref")).and_then(Value::as_str) {
                Some(r) if r.starts_with("#/") => pointer = r[1..].to_string(),
                _ => break,
            }
        }
        pointer
    }

    fn validator(&self, direction: Direction, pointer: &str) -> Result<Arc<Validator>, String> {
        let key = (direction, pointer.to_string());
        if let Some(v) = self.cache.lock().map_err(|_| "validator cache poisoned".to_string())?.get(&key) {
            return Ok(v.clone());
        }
        let registry = self.registries.get(&direction).ok_or("internal: no registry for direction")?;
        let schema =
            serde_json::json!({ "$ref": format!("{}#{}", base_uri(direction), encode_fragment(pointer)) });
        let validator = jsonschema::options()
            .with_draft(Draft::Draft4)
            .with_registry(registry)
            .should_validate_formats(true)
            .should_ignore_unknown_formats(true)
            .build(&schema)
            .map_err(|e| e.to_string())?;
        let validator = Arc::new(validator);
        self.cache.lock().map_err(|_| "validator cache poisoned".to_string())?.insert(key, validator.clone());
        Ok(validator)
    }

    /// The parameters of an operation (path-level and operation-level, `$ref`s followed), each with
    /// its JSON pointer.
    fn parameters<'a>(&'a self, template: &str, op: &'a Value, op_ptr: &str) -> Vec<(&'a Value, String)> {
        let path_ptr = format!("/paths/{}", escape_pointer(template));
        let mut out = Vec::new();
        let sources = [
            (self.request.pointer(&format!("{path_ptr}/parameters")), format!("{path_ptr}/parameters")),
            (op.get("parameters"), format!("{op_ptr}/parameters")),
        ];
        for (list, base) in sources {
            let Some(list) = list.and_then(Value::as_array) else { continue };
            for (i, p) in list.iter().enumerate() {
                out.push(self.deref(p, &format!("{base}/{i}")));
            }
        }
        out
    }

    /// Follows `$ref` (to `#/...`) from `value` at `pointer`.
    fn deref<'a>(&'a self, value: &'a Value, pointer: &str) -> (&'a Value, String) {
        let mut value = value;
        let mut pointer = pointer.to_string();
        for _ in 0..16 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(r) if r.starts_with("#/") => match self.request.pointer(&r[1..]) {
                    Some(v) => {
                        value = v;
                        pointer = r[1..].to_string();
                    }
                    None => break,
                },
                _ => break,
            }
        }
        (value, pointer)
    }
}

/// The parts of a request the check needs.
#[derive(Debug)]
pub struct RequestParts<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path without the query.
    pub path: &'a str,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// `Content-Type`.
    pub content_type: Option<&'a str>,
    /// The body, when not empty.
    pub body: Option<&'a [u8]>,
}

/// A query or path string as the JSON value its schema expects, so `per_page=abc` fails as a
/// non-integer instead of passing as a string.
fn coerce(raw: &str, schema: Option<&Value>) -> Value {
    match schema.and_then(|s| s.get("type")).and_then(Value::as_str) {
        Some("integer") => raw.parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(raw.into())),
        Some("number") => raw.parse::<f64>().map(Value::from).unwrap_or_else(|_| Value::String(raw.into())),
        Some("boolean") => match raw {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(raw.into()),
        },
        _ => Value::String(raw.into()),
    }
}

fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Percent-encodes what a URI fragment cannot hold (`{`, `}` of path templates, spaces).
fn encode_fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Rewrites OpenAPI 3.0 schema idioms into JSON Schema for one direction (see the module header).
fn rewrite(value: &mut Value, direction: Direction) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite(v, direction)),
        Value::Object(map) => {
            for v in map.values_mut() {
                rewrite(v, direction);
            }
            drop_one_way_required(map, direction);
            if map.get("nullable") == Some(&Value::Bool(true)) {
                map.remove("nullable");
                make_nullable(map);
            }
        }
        _ => {}
    }
}

fn make_nullable(map: &mut Map<String, Value>) {
    if let Some(Value::String(t)) = map.get("type").cloned() {
        map.insert("type".into(), Value::Array(vec![Value::String(t), Value::String("null".into())]));
        if let Some(Value::Array(e)) = map.get_mut("enum")
            && !e.contains(&Value::Null)
        {
            e.push(Value::Null);
        }
        return;
    }
    // No single type to widen (a `$ref`, `allOf`, ...): offer null as an alternative.
    let inner = std::mem::take(map);
    map.insert(
        "anyOf".into(),
        Value::Array(vec![serde_json::json!({ "type": "null" }), Value::Object(inner)]),
    );
}

fn drop_one_way_required(map: &mut Map<String, Value>, direction: Direction) {
    let flag = match direction {
        Direction::Request => "readOnly",
        Direction::Response => "writeOnly",
    };
    let one_way: Vec<String> = match map.get("properties").and_then(Value::as_object) {
        Some(props) => props
            .iter()
            .filter(|(_, s)| s.get(flag) == Some(&Value::Bool(true)))
            .map(|(k, _)| k.clone())
            .collect(),
        None => return,
    };
    if one_way.is_empty() {
        return;
    }
    if let Some(Value::Array(req)) = map.get_mut("required") {
        req.retain(|r| r.as_str().is_none_or(|r| !one_way.iter().any(|o| o == r)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nullable_with_a_type_admits_null() {
        let mut v = json!({ "type": "object", "nullable": true, "properties": {} });
        rewrite(&mut v, Direction::Response);
        assert_eq!(v["type"], json!(["object", "null"]));
        assert!(v.get("nullable").is_none());
    }

    #[test]
    fn nullable_without_a_type_becomes_a_null_alternative() {
        let mut v = json!({ "allOf": [{ "$ref": "#/x" }], "nullable": true });
        rewrite(&mut v, Direction::Response);
        assert_eq!(v["anyOf"][0], json!({ "type": "null" }));
        assert_eq!(v["anyOf"][1], json!({ "allOf": [{ "$ref": "#/x" }] }));
    }

    #[test]
    fn nullable_enums_gain_null() {
        let mut v = json!({ "type": "string", "enum": ["a"], "nullable": true });
        rewrite(&mut v, Direction::Request);
        assert_eq!(v["enum"], json!(["a", null]));
    }

    #[test]
    fn a_property_named_nullable_is_not_a_flag() {
        let mut v = json!({ "properties": { "nullable": { "type": "boolean" } } });
        let before = v.clone();
        rewrite(&mut v, Direction::Request);
        assert_eq!(v, before);
    }

    #[test]
    fn read_only_properties_are_not_required_in_requests_but_are_in_responses() {
        let schema =
            json!({ "properties": { "id": { "readOnly": true }, "name": {} }, "required": ["id", "name"] });
        let mut req = schema.clone();
        rewrite(&mut req, Direction::Request);
        assert_eq!(req["required"], json!(["name"]));
        let mut resp = schema;
        rewrite(&mut resp, Direction::Response);
        assert_eq!(resp["required"], json!(["id", "name"]));
    }

    #[test]
    fn fragments_percent_encode_template_braces() {
        assert_eq!(
            encode_fragment("/paths/~1v2~1droplets~1{droplet_id}"),
            "/paths/~1v2~1droplets~1%7Bdroplet_id%7D"
        );
    }
}
