//! Spec errors: where (file, line, column, field path) and what (expected, found).
//!
//! Every error carries the field path (`services[2].strategy`) because that is what a person reading
//! the message, or a builder user without a file, can act on. Line and column are added when the
//! spec came from text: they are computed from byte spans, 1-based, columns counted in characters so
//! `São Paulo` does not shift what follows.

use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::network::{ProviderKind, Role};

use super::catalog::RegionError;
pub(crate) use crate::text::escaped;
pub use crate::text::{MAX_ECHO_CHARS, quoted, terminal_safe};

/// A line and column in a spec file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl Location {
    /// The location of byte `offset` in `text` (clamped to the text, and to a character boundary).
    ///
    /// Scans the text from the start: for one location. Many locations in one text go through a
    /// [`LineIndex`], built once.
    pub fn of_offset(text: &str, offset: usize) -> Location {
        LineIndex::new(text).locate(offset)
    }
}

/// The start of every line of a text, so that locating a byte offset is a binary search instead of
/// a scan from the start (a spec with 100,000 mistakes would otherwise be read 100,000 times).
#[derive(Debug, Clone)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `text`: one pass over its bytes.
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i + 1));
        LineIndex { text, starts: starts.collect() }
    }

    /// The location of byte `offset` (clamped to the text, and to a character boundary).
    pub fn locate(&self, offset: usize) -> Location {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        // `starts[0]` is 0, so at least one start is <= offset.
        let line = self.starts.partition_point(|&s| s <= offset);
        let line_start = self.starts.get(line.wrapping_sub(1)).copied().unwrap_or(0);
        Location { line, column: self.text[line_start..offset].chars().count() + 1 }
    }
}

/// One problem in a spec.
///
/// Displayed as `FILE:LINE:COLUMN: FIELD: MESSAGE`; parts that are unknown are left out (a builder
/// error has no file or line, a missing top-level key has no line).
#[derive(Debug)]
pub struct SpecError(Box<Inner>);

// Boxed: errors travel in `Result`s through every spec function, and should stay one pointer wide.
#[derive(Debug)]
struct Inner {
    file: Option<PathBuf>,
    location: Option<Location>,
    path: String,
    kind: SpecErrorKind,
}

impl SpecError {
    /// An error at `path` (a field path such as `clusters[0].region`), without a location.
    pub fn new(path: impl Into<String>, kind: SpecErrorKind) -> Self {
        SpecError(Box::new(Inner { file: None, location: None, path: path.into(), kind }))
    }

    /// Sets the file the error is in.
    pub fn in_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.0.file = Some(file.into());
        self
    }

    /// Sets the line and column.
    pub fn at(mut self, location: Location) -> Self {
        self.0.location = Some(location);
        self
    }

    /// The spec file, when the spec came from one.
    pub fn file(&self) -> Option<&Path> {
        self.0.file.as_deref()
    }

    /// Line and column, when known.
    pub fn location(&self) -> Option<Location> {
        self.0.location
    }

    /// The line, when known.
    pub fn line(&self) -> Option<usize> {
        self.0.location.map(|l| l.line)
    }

    /// The column, when known.
    pub fn column(&self) -> Option<usize> {
        self.0.location.map(|l| l.column)
    }

    /// The field path (`services[2].strategy`; indexes from 0); empty for the document as a whole.
    pub fn path(&self) -> &str {
        &self.0.path
    }

    /// What is wrong.
    pub fn kind(&self) -> &SpecErrorKind {
        &self.0.kind
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.0.file {
            write!(f, "{}:", file.display())?;
            if let Some(Location { line, column }) = self.0.location {
                write!(f, "{line}:{column}:")?;
            }
            f.write_str(" ")?;
        }
        if !self.0.path.is_empty() {
            write!(f, "{}: ", self.0.path)?;
        }
        write!(f, "{}", self.0.kind)
    }
}

impl std::error::Error for SpecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.kind.source()
    }
}

/// What is wrong with a spec.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecErrorKind {
    /// The spec file cannot be read.
    #[error("cannot read the spec file: {cause}")]
    ReadSpec {
        /// The I/O error.
        cause: io::Error,
    },
    /// The text is not valid TOML.
    #[error("invalid TOML: {message}")]
    Syntax {
        /// The parser's message.
        message: String,
    },
    /// The TOML does not have the spec's shape: an unknown key, or a value of the wrong type.
    #[error("{message}")]
    Schema {
        /// The deserializer's message (it names the key or type expected).
        message: String,
    },
    /// A required key is absent.
    #[error("required key is missing")]
    Missing,
    /// A value is not one the field accepts.
    #[error("expected {expected}, found {found}")]
    Invalid {
        /// What the field accepts.
        expected: String,
        /// What was written, as written in TOML (strings quoted).
        found: String,
    },
    /// Two clusters or two services have the same name.
    #[error("duplicate {what} name {}; first declared at {first}", quoted(name))]
    Duplicate {
        /// `cluster` or `service`.
        what: &'static str,
        /// The name.
        name: String,
        /// Where the first one is: its field path, and line when known.
        first: String,
    },
    /// Not exactly one genesis or master service.
    #[error("expected exactly one {role} service, found {found}{}", first.as_ref().map(|f| format!(" (the first is {f})")).unwrap_or_default())]
    RoleCount {
        /// The role.
        role: Role,
        /// How many there are.
        found: usize,
        /// The path of the first one, when this error points at a later one.
        first: Option<String>,
    },
    /// A region the cluster's provider does not serve, or does not know.
    #[error(transparent)]
    Region(#[from] RegionError),
    /// `containers` given for an `every_node` service.
    #[error(
        "scaling an every_node service: it runs one container on every matching node, so its count follows the nodes; remove `containers` or choose another strategy"
    )]
    EveryNodeScaled,
    /// An environment variable the role sets itself.
    #[error("{key} is set by peerfleet for the service's role and cannot be overridden")]
    ReservedEnv {
        /// The variable.
        key: String,
    },
    /// A service with containers whose deploy tags no node carries.
    #[error("deploy tags [{}] match {}", tags.join(", "), if *clusters_match { "only clusters with 0 nodes" } else { "no cluster's tags" })]
    NoMatchingNode {
        /// The service's deploy tags.
        tags: Vec<String>,
        /// Some cluster carries the tags, but none has nodes.
        clusters_match: bool,
    },
    /// An admin CIDR that opens the administrative ports to everyone.
    #[error(
        "{cidr} opens the Docker API and SSH ports to the whole internet; set access.force_open_admin = true if that is really meant"
    )]
    OpenAdmin {
        /// The CIDR.
        cidr: String,
    },
    /// Cloud clusters without `access.admin_cidrs`.
    #[error(
        "required (non-empty) because a cluster is on {provider}: it says who may reach the machines' Docker API port"
    )]
    AdminCidrsRequired {
        /// The first cloud provider found.
        provider: ProviderKind,
    },
    /// `profile` on a provider other than AWS.
    #[error("profile is only for aws clusters (a named AWS credentials profile), not {provider}")]
    ProfileNotAws {
        /// The cluster's provider.
        provider: ProviderKind,
    },
    /// The genesis file cannot be read.
    #[error("cannot read the genesis file {}: {cause}", path.display())]
    Genesis {
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// `scale` named a service that is not in the spec.
    #[error("no service named \"{name}\" (services: {})", known.join(", "))]
    UnknownService {
        /// The name given.
        name: String,
        /// The services declared.
        known: Vec<String>,
    },
    /// The edited spec cannot be written back.
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
}

/// Every problem found in a spec, in document order (at least one).
///
/// Syntax errors stop parsing, so a file with bad TOML yields exactly one; semantic checks all run,
/// so a file with several mistakes yields them all at once.
#[derive(Debug)]
pub struct SpecErrors(Vec<SpecError>, usize);

/// Most problems one validation reports; the rest are counted. A person fixes the first ones
/// first, and a hostile spec with a million mistakes must not cost a million located messages.
pub const MAX_REPORTED_ERRORS: usize = 100;

impl SpecErrors {
    /// The errors, in document order (errors without a line last).
    pub fn errors(&self) -> &[SpecError] {
        &self.0
    }

    /// The first error.
    pub fn first(&self) -> &SpecError {
        // Invariant: a `SpecErrors` is only built from a non-empty list (see `From` and `with_omitted`).
        &self.0[0]
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false; present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The errors, owned.
    pub fn into_vec(self) -> Vec<SpecError> {
        self.0
    }

    /// How many further problems were found but not reported (past [`MAX_REPORTED_ERRORS`]).
    pub fn omitted(&self) -> usize {
        self.1
    }

    /// Errors sorted by location, noting `omitted` more problems that were not reported; `None`
    /// when `errors` is empty.
    pub(crate) fn with_omitted(mut errors: Vec<SpecError>, omitted: usize) -> Option<Self> {
        // Unlocated errors (whole-document checks) read best after the located ones.
        errors.sort_by_key(|e| (e.0.location.is_none(), e.0.location));
        (!errors.is_empty()).then_some(SpecErrors(errors, omitted))
    }
}

impl From<SpecError> for SpecErrors {
    fn from(error: SpecError) -> Self {
        SpecErrors(vec![error], 0)
    }
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.1 > 0 {
            write!(f, "\n... and {} more problems (fix the ones above first)", self.1)?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // With one error its cause is the natural source; several have no single one.
        match self.0.as_slice() {
            [one] => one.0.kind.source(),
            _ => None,
        }
    }
}

impl IntoIterator for SpecErrors {
    type Item = SpecError;
    type IntoIter = std::vec::IntoIter<SpecError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl<'a> IntoIterator for &'a SpecErrors {
    type Item = &'a SpecError;
    type IntoIter = std::slice::Iter<'a, SpecError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Where a spec came from, to turn byte spans into located errors.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin<'a> {
    /// The file, for messages.
    pub file: Option<&'a Path>,
    /// The lines of the text the spans point into.
    pub lines: Option<&'a LineIndex<'a>>,
}

impl Origin<'_> {
    /// An error at `path`, located at `span` when both the span and the text are known.
    pub fn error(
        &self,
        span: Option<Range<usize>>,
        path: impl Into<String>,
        kind: SpecErrorKind,
    ) -> SpecError {
        let mut e = SpecError::new(path, kind);
        if let Some(file) = self.file {
            e = e.in_file(file);
        }
        if let Some(location) = self.locate(span) {
            e = e.at(location);
        }
        e
    }

    /// The location of a span's start.
    pub fn locate(&self, span: Option<Range<usize>>) -> Option<Location> {
        Some(self.lines?.locate(span?.start))
    }

    /// `path` with `, line N` when the span can be located: how one error names another place.
    pub fn describe(&self, span: Option<Range<usize>>, path: &str) -> String {
        match self.locate(span) {
            Some(l) => format!("{path} (line {})", l.line),
            None => path.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_one_based_and_count_characters_not_bytes() {
        let text = "a = 1\nregion = \"São Paulo\" x";
        let x = text.rfind('x').unwrap();
        assert_eq!(Location::of_offset(text, 0), Location { line: 1, column: 1 });
        assert_eq!(Location::of_offset(text, 6), Location { line: 2, column: 1 });
        assert_eq!(Location::of_offset(text, x), Location { line: 2, column: 22 });
    }

    #[test]
    fn display_leaves_out_what_is_unknown() {
        let kind = || SpecErrorKind::Invalid { expected: "1..=65535".into(), found: "0".into() };
        let builder = SpecError::new("services[0].ports[0]", kind());
        assert_eq!(builder.to_string(), "services[0].ports[0]: expected 1..=65535, found 0");
        let located = SpecError::new("services[0].ports[0]", kind())
            .in_file("net.toml")
            .at(Location { line: 3, column: 9 });
        assert_eq!(located.to_string(), "net.toml:3:9: services[0].ports[0]: expected 1..=65535, found 0");
        let unlocated = SpecError::new("name", SpecErrorKind::Missing).in_file("net.toml");
        assert_eq!(unlocated.to_string(), "net.toml: name: required key is missing");
    }

    #[test]
    fn errors_are_sorted_by_location_with_unlocated_last() {
        let at =
            |line| SpecError::new("x", SpecErrorKind::Missing).in_file("f").at(Location { line, column: 1 });
        let errors = SpecErrors::with_omitted(
            vec![SpecError::new("services", SpecErrorKind::Missing), at(9), at(2)],
            0,
        )
        .unwrap();
        let lines: Vec<_> = errors.errors().iter().map(SpecError::line).collect();
        assert_eq!(lines, [Some(2), Some(9), None]);
        assert!(SpecErrors::with_omitted(Vec::new(), 0).is_none());
    }
}
