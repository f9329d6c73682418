//! Loading files and directories of documents into a validated [`Loaded`] set.
//!
//! # Guarantees
//!
//! All or nothing: either every document in every file is valid and a [`Loaded`] comes back
//! (with its warnings), or every problem found in every file comes back as [`Diagnostic`]s and
//! nothing is returned to act on.
//!
//! The walk of a directory reads each directory and each file once, by device and inode (by
//! canonical path on a file system that reports inode 0), however many links lead to it (a
//! link to `.` is a loop walked once, not an exponential walk). The directory named is the
//! policy tree: it may itself be a symbolic link (a git-sync checkout `current -> rev-123/`),
//! resolved once; the walk and the reads go beneath that canonical path, so a swap of
//! `current` during a load neither mixes two revisions nor makes the checkout's own links look
//! like links out of it (files are still named as the user spelt the directory). Links inside
//! the tree are followed while they lead to a place inside it. A link that leads out of the
//! tree is reported and not followed, and its target is never opened (a `*.yaml` link to
//! `/etc/shadow` is not read, so no line of it ends up in a message); a file swapped for such
//! a link (or anything else) between the walk and the read is not read either: it is opened
//! without following a link or blocking, and kept only if it is still the regular file the
//! walk checked (device and inode). A file named explicitly is read wherever it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::decode::{self, Document};
use crate::diagnostic::Diagnostic;
use crate::expiry::Timestamp;
use crate::intent::{Node, Policy};
use crate::model::PolicySet;
use crate::validate;
use crate::yaml::{self, Loc, PathSegment};

/// Policy files larger than this are refused before parsing: no real policy set comes close,
/// and it bounds the memory a hostile file can take.
pub const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// A validated set of documents.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Warnings about the documents (valid, but worth saying; see [`Severity::Warning`]).
    ///
    /// [`Severity::Warning`]: crate::diagnostic::Severity::Warning
    pub warnings: Vec<Diagnostic>,
    /// The policies, ready to evaluate and compile.
    pub policies: PolicySet,
    /// Nodes of every inventory found among the documents, in file order.
    pub nodes: Vec<Node>,
    /// How many inventory documents were found.
    pub inventories: usize,
    /// How many files were read.
    pub files: usize,
}

impl Loaded {
    /// The inventory node called `name`.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// Documents that do not load: every error, and the warnings found beside them (both located,
/// each kind at most [`MAX_DIAGNOSTICS_PER_FILE`] per file plus a note counting the rest).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Problems {
    /// What makes the documents invalid; never empty in an `Err`.
    pub errors: Vec<Diagnostic>,
    /// What is worth saying about them besides (see [`Loaded::warnings`]).
    pub warnings: Vec<Diagnostic>,
}

/// Loads files and directories (recursively, `*.yaml`/`*.yml` in any case, hidden entries such
/// as `.git` skipped; a file named explicitly is read whatever its extension).
///
/// # Errors
///
/// Every error in every file, located; see the module's guarantees. An empty file (nothing but
/// white space) is one: it is what a render that failed leaves behind. Errors only: the
/// warnings of a set that does not load are dropped ([`load_paths_with_warnings`] keeps them).
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Loaded, Vec<Diagnostic>> {
    load_paths_with_warnings(paths).map_err(|p| p.errors)
}

/// [`load_paths`], keeping the warnings when the documents do not load (what `validate`
/// shows beside the errors).
///
/// # Errors
///
/// As [`load_paths`], with the warnings.
pub fn load_paths_with_warnings<P: AsRef<Path>>(paths: &[P]) -> Result<Loaded, Problems> {
    let Walk { files, diags, .. } = walk(paths);
    test_hook::at(test_hook::Stage::Walked);
    let mut found = Problems {
        errors: diags,
        warnings: Vec::new(),
    };
    let mut accepted = Vec::new();
    for file in &files {
        load_file(file, &mut accepted, &mut found);
    }
    assemble(accepted, found, files.len())
}

/// The files [`load_paths`] reads for these paths, in the order it reads them, and problems
/// with paths that cannot be read. Watchers use it to notice changes.
pub fn policy_files<P: AsRef<Path>>(paths: &[P]) -> (Vec<PathBuf>, Vec<Diagnostic>) {
    let (files, diags) = policy_files_with_metadata(paths);
    (files.into_iter().map(|(path, _)| path).collect(), diags)
}

/// [`policy_files`] with the metadata the walk read for each file (`stat`, following
/// symlinks), so a watcher fingerprinting the files does not stat every one a second time.
pub fn policy_files_with_metadata<P: AsRef<Path>>(
    paths: &[P],
) -> (Vec<(PathBuf, fs::Metadata)>, Vec<Diagnostic>) {
    let walk = walk(paths);
    let files = walk.files.into_iter().map(|f| (f.shown, f.meta)).collect();
    (files, walk.diags)
}

fn walk<P: AsRef<Path>>(paths: &[P]) -> Walk {
    let mut walk = Walk::default();
    for p in paths {
        walk.root(p.as_ref());
    }
    walk
}

/// A document that passed decoding and validation, with what is needed to locate it later.
struct Accepted {
    at: Located,
    value: Valid,
}

/// A document's file, text and located tree, to point at its tokens.
struct Located {
    file: std::sync::Arc<str>,
    source: std::sync::Arc<str>,
    tree: yaml::Node,
}

enum Valid {
    Policy(Policy),
    Nodes(Vec<Node>),
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Whether a file found in a directory is a policy file: `*.yaml` or `*.yml`, in any case
/// (`WEB.YAML` is one; it used to be skipped without a word).
fn is_policy_name(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

fn cannot_read(path: &Path, e: &std::io::Error) -> Diagnostic {
    Diagnostic::file(
        &display(path),
        format!("cannot read: {e}"),
        Some("check the path; directories are read recursively for *.yaml and *.yml".into()),
    )
}

/// Tests change the tree at given points of a load, to race it deterministically; a no-op in
/// other builds.
mod test_hook {
    /// A point of a load.
    #[cfg_attr(not(test), allow(dead_code))]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub(super) enum Stage {
        /// The root directory is resolved; nothing of it is listed yet.
        RootResolved,
        /// The walk is done; no file is read yet.
        Walked,
    }

    /// What a test runs at each stage.
    #[cfg(test)]
    pub(super) type Hook = Box<dyn FnMut(Stage)>;

    #[cfg(test)]
    thread_local! {
        /// Run at each stage, on this thread.
        pub(super) static HOOK: std::cell::RefCell<Option<Hook>> =
            const { std::cell::RefCell::new(None) };
        /// Whether the walk sees every inode as 0, as some file systems report them.
        pub(super) static NO_INODES: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }

    #[cfg(test)]
    pub(super) fn at(stage: Stage) {
        HOOK.with(|h| {
            if let Some(f) = h.borrow_mut().as_mut() {
                f(stage)
            }
        })
    }

    #[cfg(not(test))]
    pub(super) fn at(_: Stage) {}

    #[cfg(test)]
    pub(super) fn inode(meta: &std::fs::Metadata) -> u64 {
        use std::os::unix::fs::MetadataExt;
        if NO_INODES.with(|n| n.get()) {
            0
        } else {
            meta.ino()
        }
    }

    #[cfg(not(test))]
    pub(super) fn inode(meta: &std::fs::Metadata) -> u64 {
        use std::os::unix::fs::MetadataExt;
        meta.ino()
    }
}

/// A file the walk takes: the name it is shown by, where it is opened, and what the walk found
/// there.
struct Found {
    /// As the user spelt it: the path given, then the names below it (links by their names).
    shown: PathBuf,
    /// Where it is opened: for a file found in a directory, its canonical path (no link on the
    /// way), so the read goes to the file the walk checked even if a link on the way moves.
    open: PathBuf,
    /// What the walk found there (`stat`, following links).
    meta: fs::Metadata,
    /// Whether it was found in a directory (then it is opened without following a link and
    /// read only if it is still that file); a file named explicitly is read whatever it is.
    in_tree: bool,
}

/// How the walk knows a directory or file it has been to: device and inode, or, on a file
/// system that reports inode 0 for everything, the canonical path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Visit {
    Inode(u64, u64),
    Path(PathBuf),
}

/// The canonical path of `path` and the metadata of what is there (following links).
fn resolve(path: &Path) -> std::io::Result<(PathBuf, fs::Metadata)> {
    fs::canonicalize(path).and_then(|t| fs::metadata(&t).map(|m| (t, m)))
}

/// One walk over the paths given; see the module's guarantees. A directory tree is walked
/// beneath its canonical path, so a git-sync swap of the directory named during the walk
/// does not mix two revisions; names are shown as the user spelt them.
#[derive(Default)]
struct Walk {
    files: Vec<Found>,
    diags: Vec<Diagnostic>,
    /// Directories walked and files taken.
    seen: HashSet<Visit>,
}

impl Walk {
    /// Whether this is the first visit of the directory or file `meta` describes, at the
    /// canonical path `real`.
    fn first_visit(&mut self, meta: &fs::Metadata, real: &Path) -> bool {
        let visit = match test_hook::inode(meta) {
            0 => Visit::Path(real.to_path_buf()),
            ino => Visit::Inode(meta.dev(), ino),
        };
        self.seen.insert(visit)
    }

    /// A path given: a directory is the root of a policy tree (followed if it is a link); a
    /// file is read whatever it is.
    fn root(&mut self, path: &Path) {
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) => return self.diags.push(cannot_read(path, &e)),
        };
        if !meta.is_dir() {
            // Named on the command line, `/dev/stdin` or a pipe is what the user meant.
            if self.first_visit(&meta, path) {
                self.files.push(Found {
                    shown: path.to_path_buf(),
                    open: path.to_path_buf(),
                    meta,
                    in_tree: false,
                });
            }
            return;
        }
        match resolve(path) {
            Ok((tree, meta)) if meta.is_dir() => {
                test_hook::at(test_hook::Stage::RootResolved);
                self.dir(&tree, path, &meta, &tree)
            }
            // Swapped for a file since the first look: a race, reported as what it is now.
            Ok(_) => self.diags.push(Diagnostic::file(
                &display(path),
                "is no longer a directory (it changed while it was read)".into(),
                Some("load again once it holds still".into()),
            )),
            Err(e) => self.diags.push(cannot_read(path, &e)),
        }
    }

    /// A directory of the tree whose canonical path is `tree`: at the canonical path `real`,
    /// shown as `shown`.
    fn dir(&mut self, real: &Path, shown: &Path, meta: &fs::Metadata, tree: &Path) {
        if !self.first_visit(meta, real) {
            return;
        }
        let entries = match fs::read_dir(real) {
            Ok(rd) => rd,
            Err(e) => {
                return self.diags.push(Diagnostic::file(
                    &display(shown),
                    format!("cannot list directory: {e}"),
                    None,
                ));
            }
        };
        let mut names: Vec<std::ffi::OsString> = entries
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort();
        for name in names {
            let hidden = name.to_str().is_some_and(|n| n.starts_with('.'));
            if !hidden {
                self.entry(&real.join(&name), &shown.join(&name), tree);
            }
        }
    }

    /// An entry found in a directory of the tree, at `real` (canonical up to its own name).
    fn entry(&mut self, real: &Path, shown: &Path, tree: &Path) {
        let (real, meta) = match fs::symlink_metadata(real) {
            Ok(m) if m.file_type().is_symlink() => match self.link(real, shown, tree) {
                Some(target) => target,
                None => return,
            },
            Ok(m) => (real.to_path_buf(), m),
            Err(e) => return self.diags.push(cannot_read(shown, &e)),
        };
        if meta.is_dir() {
            self.dir(&real, shown, &meta, tree);
        } else if !is_policy_name(shown) {
        } else if !meta.is_file() {
            // Reading a FIFO would block the agent forever, a device could be endless.
            // Reported, so the last good state stays until it is removed.
            self.diags.push(Diagnostic::file(
                &display(shown),
                "not a regular file (a FIFO, socket or device); it is not read".into(),
                Some("policy files must be regular files: remove it or replace it by one".into()),
            ));
        } else if self.first_visit(&meta, &real) {
            self.files.push(Found {
                shown: shown.to_path_buf(),
                open: real,
                meta,
                in_tree: true,
            });
        }
    }

    /// The canonical path and metadata of what a link in the tree leads to, when that is
    /// inside the tree. A link that leads out is reported when what it leads to would be read
    /// (a directory, or a `*.yaml` link), and skipped silently otherwise (a `LICENSE` link is
    /// never read anyway); a link that leads nowhere is reported.
    fn link(&mut self, real: &Path, shown: &Path, tree: &Path) -> Option<(PathBuf, fs::Metadata)> {
        let (target, meta) = match resolve(real) {
            Ok(resolved) => resolved,
            Err(e) => {
                self.diags.push(cannot_read(shown, &e));
                return None;
            }
        };
        if target.starts_with(tree) {
            return Some((target, meta));
        }
        if meta.is_dir() || is_policy_name(shown) {
            self.diags.push(Diagnostic::file(
                &display(shown),
                format!(
                    "symbolic link to {}, outside the policy directory {}; it is not followed",
                    target.display(),
                    tree.display()
                ),
                Some(
                    "links in a policy directory may only lead inside it: copy what it points to into the directory, or remove the link"
                        .into(),
                ),
            ));
        }
        None
    }
}

/// Most problems reported for one file; one last diagnostic says there were more. Together
/// with the limits per document (`decode::MAX_PROBLEMS`, `validate::MAX_ISSUES`) this bounds
/// the output and the memory of a file full of mistakes (a list of a million invalid ports).
pub const MAX_DIAGNOSTICS_PER_FILE: usize = 100;

fn too_large(name: &str) -> Diagnostic {
    Diagnostic::file(
        name,
        format!("file is larger than {} MiB", MAX_FILE_BYTES / (1024 * 1024)),
        Some("split the policies into several files".into()),
    )
}

fn replaced(name: &str, now: &str) -> Diagnostic {
    Diagnostic::file(
        name,
        format!(
            "replaced between listing its directory and reading it (it is now {now}); it is not read"
        ),
        Some(
            "load again once the directory holds still; links in a policy directory may only lead inside it"
                .into(),
        ),
    )
}

/// Opens a file the walk took. A file found in a directory is opened at its canonical path
/// without following a link (`O_NOFOLLOW`) or blocking (`O_NONBLOCK`: a FIFO put in its place
/// is not waited for), and kept only if it is still the regular file the walk checked (same
/// device and inode): someone who may write the policy directory cannot swap it, between the
/// walk and the read, for a link to a file outside the tree (whose first line would appear in
/// a message). A file named explicitly is opened as named.
///
/// # Caveats
///
/// On a file system that reports inode 0 for everything, only the file type is checked.
fn open(file: &Found, name: &str) -> Result<fs::File, Diagnostic> {
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| Diagnostic::file(name, format!("cannot read: {e}"), None);
    if !file.in_tree {
        return fs::File::open(&file.open).map_err(cannot);
    }
    let opened = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&file.open);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(replaced(name, "a symbolic link"));
        }
        Err(e) => return Err(cannot(e)),
    };
    let now = f.metadata().map_err(cannot)?;
    if !now.is_file() {
        return Err(replaced(name, "not a regular file"));
    }
    if (now.dev(), now.ino()) != (file.meta.dev(), file.meta.ino()) {
        return Err(replaced(name, "another file"));
    }
    Ok(f)
}

/// Reads a file's bytes within [`MAX_FILE_BYTES`] (never more is read into memory).
fn read_bytes(file: fs::File, name: &str) -> Result<Vec<u8>, Diagnostic> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Diagnostic::file(name, format!("cannot read: {e}"), None))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large(name));
    }
    Ok(bytes)
}

/// The bytes as UTF-8 text, or a diagnostic at the first invalid byte.
fn text_of(bytes: Vec<u8>, name: &str) -> Result<String, Diagnostic> {
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let text = String::from_utf8_lossy(good);
        // Counted as YAML counts lines (`\r\n`, `\n` or `\r` ends one).
        let lines: Vec<&str> = crate::diagnostic::yaml_lines(&text).collect();
        let ends_at_break = text.ends_with(['\n', '\r']) || text.is_empty();
        let (line, last) = if ends_at_break {
            (lines.len() + 1, "")
        } else {
            (lines.len(), lines.last().copied().unwrap_or(""))
        };
        let line = u32::try_from(line).unwrap_or(u32::MAX);
        let column = last.chars().count() as u32 + 1;
        Diagnostic {
            severity: crate::diagnostic::Severity::Error,
            file: name.to_string(),
            loc: Some(Loc {
                line,
                column,
                len: 1,
            }),
            message: "file is not valid UTF-8".into(),
            help: Some("save the file as UTF-8".into()),
            line_text: None,
            line_skip: 0,
        }
    })
}

/// Loads the documents of one file given as bytes, exactly as [`load_paths`] loads a file
/// called `name` with this content (same limits, same checks, same diagnostics).
///
/// # Errors
///
/// Every error in the content, located; see the module's guarantees.
pub fn load_source(name: &str, bytes: &[u8]) -> Result<Loaded, Vec<Diagnostic>> {
    load_source_with_warnings(name, bytes).map_err(|p| p.errors)
}

/// [`load_source`], keeping the warnings when the documents do not load.
///
/// # Errors
///
/// As [`load_source`], with the warnings.
pub fn load_source_with_warnings(name: &str, bytes: &[u8]) -> Result<Loaded, Problems> {
    let mut found = Problems::default();
    let mut accepted = Vec::new();
    if bytes.len() as u64 > MAX_FILE_BYTES {
        found.errors.push(too_large(name));
    } else {
        load_text(
            name,
            text_of(bytes.to_vec(), name),
            &mut accepted,
            &mut found,
        );
    }
    assemble(accepted, found, 1)
}

fn load_file(file: &Found, accepted: &mut Vec<Accepted>, found: &mut Problems) {
    let name = display(&file.shown);
    let text = open(file, &name)
        .and_then(|f| read_bytes(f, &name))
        .and_then(|b| text_of(b, &name));
    load_text(&name, text, accepted, found);
}

/// Collects one kind of one file's diagnostics (errors or warnings) up to
/// [`MAX_DIAGNOSTICS_PER_FILE`], counting the rest.
struct Share<'a> {
    out: &'a mut Vec<Diagnostic>,
    shown: usize,
    more: usize,
}

impl<'a> Share<'a> {
    fn new(out: &'a mut Vec<Diagnostic>) -> Self {
        Share {
            out,
            shown: 0,
            more: 0,
        }
    }

    /// Adds the diagnostic `make` builds, unless the file has its share already (then `make`
    /// is not run: finding the snippet line scans the file).
    fn push(&mut self, make: impl FnOnce() -> Diagnostic) {
        if self.shown < MAX_DIAGNOSTICS_PER_FILE {
            self.out.push(make());
            self.shown += 1;
        } else {
            self.more += 1;
        }
    }
}

/// Loads one file's text: its documents, decoded and validated, go to `accepted`; its
/// problems to `found`, at most [`MAX_DIAGNOSTICS_PER_FILE`] errors and as many warnings.
fn load_text(
    name: &str,
    text: Result<String, Diagnostic>,
    accepted: &mut Vec<Accepted>,
    found: &mut Problems,
) {
    let Some(source) = non_empty_source(name, text, found) else {
        return;
    };
    let trees = match yaml::parse_stream(&source) {
        Ok(t) => t,
        Err(e) => {
            let d = match e.loc {
                Some(loc) => Diagnostic::at(name, &source, loc, e.message, None),
                None => Diagnostic::file(name, e.message, None),
            };
            found.errors.push(d);
            return;
        }
    };
    let file: std::sync::Arc<str> = name.into();
    // Warnings have a share of their own: 100 nodes without addresses must not hide an error.
    let mut errors = Share::new(&mut found.errors);
    let mut warnings = Share::new(&mut found.warnings);
    for tree in trees {
        let at = Located {
            file: file.clone(),
            source: source.clone(),
            tree,
        };
        if let Some(value) = load_document(&at, &mut errors, &mut warnings) {
            accepted.push(Accepted { at, value });
        }
    }
    note_not_shown(name, errors, warnings);
}

/// The file's text, or `None` after reporting why there is none to load: it could not be
/// read, or it is empty.
fn non_empty_source(
    name: &str,
    text: Result<String, Diagnostic>,
    found: &mut Problems,
) -> Option<std::sync::Arc<str>> {
    let source: std::sync::Arc<str> = match text {
        Ok(s) => s.into(),
        Err(d) => {
            found.errors.push(d);
            return None;
        }
    };
    if source.trim().is_empty() {
        // A file with comments only is deliberate; one with nothing at all is what
        // `render > policy.yaml` leaves when the render fails. Taking it for "no policies"
        // would drop the policies it held.
        found.errors.push(Diagnostic::file(
            name,
            "file is empty: it holds no documents (a render that failed, or a write cut short?)"
                .into(),
            Some(
                "write its documents again, or delete the file if it is meant to hold none".into(),
            ),
        ));
        return None;
    }
    Some(source)
}

/// Decodes and validates one document of a file: its value when it has no problem; its
/// problems (decoding first, then validation of what decoding left sound) and warnings go to
/// the file's shares.
fn load_document(at: &Located, errors: &mut Share<'_>, warnings: &mut Share<'_>) -> Option<Valid> {
    let (name, source, tree) = (&*at.file, &at.source, &at.tree);
    let (doc, problems) = decode::decode(tree);
    for p in &problems {
        errors.push(|| Diagnostic::at(name, source, p.loc, p.message.clone(), p.help.clone()));
    }
    let doc = doc?;
    let validated = match &doc {
        Document::Policy(p) => validate::policy(p).map(|v| {
            let said = validate::policy_warnings(&v, Timestamp::now());
            (Valid::Policy(v), said)
        }),
        Document::Inventory(i) => validate::inventory(i)
            .map(|nodes| (Valid::Nodes(nodes), validate::inventory_warnings(i))),
    };
    match validated {
        Ok((value, said)) if problems.is_empty() => {
            for w in said {
                let loc = tree.locate(&w.path);
                warnings.push(|| Diagnostic::at(name, source, loc, w.message, w.help).warning());
            }
            Some(value)
        }
        Ok(_) => None,
        Err(issues) => {
            let below_problem =
                |path: &[PathSegment]| problems.iter().any(|p| path.starts_with(&p.path));
            for i in issues.into_iter().filter(|i| !below_problem(&i.path)) {
                let loc = tree.locate(&i.path);
                errors.push(|| Diagnostic::at(name, source, loc, i.message, i.help));
            }
            None
        }
    }
}

/// One note per share that was used up, saying how many more were found in file `name`.
fn note_not_shown(name: &str, errors: Share<'_>, warnings: Share<'_>) {
    if errors.more > 0 {
        // Documents count what they leave out themselves, so this count is a lower bound.
        errors.out.push(Diagnostic::file(
            name,
            format!(
                "more problems in this file not shown (at most {MAX_DIAGNOSTICS_PER_FILE} are reported per file)"
            ),
            Some(crate::diagnostic::NOT_SHOWN_HELP.into()),
        ));
    }
    if warnings.more > 0 {
        // A note about warnings is one: it must not make valid documents invalid.
        let more = warnings.more;
        warnings.out.push(
            Diagnostic::file(
                name,
                format!(
                    "{more} more warning{} in this file not shown (at most {MAX_DIAGNOSTICS_PER_FILE} are reported per file)",
                    if more == 1 { "" } else { "s" }
                ),
                None,
            )
            .warning(),
        );
    }
}

/// The problems found across documents (duplicate names and addresses), reported up to
/// [`MAX_DIAGNOSTICS_PER_FILE`] in all, like the problems of one file; one note says there
/// were more.
struct CrossDocument<'a> {
    out: &'a mut Vec<Diagnostic>,
    shown: usize,
    unreported: Option<String>,
}

impl CrossDocument<'_> {
    /// Adds the diagnostic `make` builds (its message starts with "duplicate"), unless the
    /// share is used up (then `make` is not run).
    fn push(&mut self, file: &str, make: impl FnOnce() -> Diagnostic) {
        if self.shown < MAX_DIAGNOSTICS_PER_FILE {
            self.out.push(make());
            self.shown += 1;
        } else {
            self.unreported = Some(file.to_string());
        }
    }

    fn finish(self) {
        if let Some(file) = self.unreported {
            self.out.push(Diagnostic::file(
                &file,
                format!(
                    "more duplicate names and addresses not shown (at most {MAX_DIAGNOSTICS_PER_FILE} are reported)"
                ),
                Some(crate::diagnostic::NOT_SHOWN_HELP.into()),
            ));
        }
    }
}

/// Where a name or address was first defined, shown as `FILE:LINE:COLUMN` only when a
/// duplicate is reported.
#[derive(Clone)]
struct Place {
    file: std::sync::Arc<str>,
    loc: Loc,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.loc.line, self.loc.column)
    }
}

/// Where an inventory address was first listed: by the node at this index of the nodes taken.
struct FirstAddress {
    node: usize,
    at: Place,
}

/// Reports each address of `node` (the `index`th of its document `a`) that an earlier node
/// has already: each address belongs to one node, because verify compares what it sees at an
/// address with the intent of the node listed there, so two nodes at one address would be
/// judged by one. Records the new ones as the `taken`th node's. (An address listed twice for
/// one node is found by `validate::inventory`.)
fn check_addresses(
    a: &Located,
    index: usize,
    node: &Node,
    (taken, nodes): (usize, &[Node]),
    first: &mut HashMap<IpAddr, FirstAddress>,
    report: &mut CrossDocument<'_>,
) {
    for (j, addr) in node.addresses.iter().enumerate() {
        let path = [
            PathSegment::Key("nodes".into()),
            PathSegment::Index(index),
            PathSegment::Key("addresses".into()),
            PathSegment::Index(j),
        ];
        let loc = a.tree.locate(&path);
        match first.get(addr) {
            Some(f) => report.push(&a.file, || {
                Diagnostic::at(
                    &a.file,
                    &a.source,
                    loc,
                    format!(
                        "duplicate address {addr}: also an address of node \"{}\" ({})",
                        nodes[f.node].name, f.at
                    ),
                    Some("an address belongs to one node (verify judges what it sees there by that node's intent): remove it from one of them".into()),
                )
            }),
            None => {
                let at = Place {
                    file: a.file.clone(),
                    loc,
                };
                first.insert(*addr, FirstAddress { node: taken, at });
            }
        }
    }
}

/// Cross-document checks (unique policy and node names, each address of one node), then the
/// final set, or all of the diagnostics (`found` holds those of the files already).
fn assemble(
    accepted: Vec<Accepted>,
    mut found: Problems,
    files: usize,
) -> Result<Loaded, Problems> {
    let mut set = Assembly {
        report: CrossDocument {
            out: &mut found.errors,
            shown: 0,
            unreported: None,
        },
        policies: Vec::new(),
        nodes: Vec::new(),
        inventories: 0,
        first_policy: BTreeMap::new(),
        first_node: BTreeMap::new(),
        first_address: HashMap::new(),
    };
    for Accepted { at, value } in accepted {
        match value {
            Valid::Policy(p) => set.take_policy(&at, p),
            Valid::Nodes(ns) => set.take_nodes(&at, ns),
        }
    }
    let Assembly {
        report,
        policies,
        nodes,
        inventories,
        ..
    } = set;
    report.finish();
    if !found.errors.is_empty() {
        return Err(found);
    }
    Ok(Loaded {
        warnings: found.warnings,
        policies: PolicySet::new(policies),
        nodes,
        inventories,
        files,
    })
}

/// The documents taken so far, in file order, and where each name and address was first
/// defined.
struct Assembly<'a> {
    report: CrossDocument<'a>,
    policies: Vec<Policy>,
    nodes: Vec<Node>,
    inventories: usize,
    first_policy: BTreeMap<String, Place>,
    first_node: BTreeMap<String, Place>,
    first_address: HashMap<IpAddr, FirstAddress>,
}

impl Assembly<'_> {
    /// Takes policy `p`, or reports it as a duplicate of an earlier one of the same name.
    fn take_policy(&mut self, a: &Located, p: Policy) {
        let name_path = [
            PathSegment::Key("metadata".into()),
            PathSegment::Key("name".into()),
        ];
        let loc = a.tree.locate(&name_path);
        if let Some(first) = self.first_policy.get(&p.name) {
            self.report.push(&a.file, || {
                Diagnostic::at(
                    &a.file,
                    &a.source,
                    loc,
                    format!(
                        "duplicate policy name \"{}\" (first defined at {first})",
                        p.name
                    ),
                    Some("policy names must be unique; rename one of them".into()),
                )
            });
            return;
        }
        let here = Place {
            file: a.file.clone(),
            loc,
        };
        self.first_policy.insert(p.name.clone(), here);
        self.policies.push(p);
    }

    /// Takes the nodes of one inventory, reporting each whose name an earlier node has, and
    /// each address an earlier node has.
    fn take_nodes(&mut self, a: &Located, nodes: Vec<Node>) {
        self.inventories += 1;
        for (i, n) in nodes.into_iter().enumerate() {
            let path = [
                PathSegment::Key("nodes".into()),
                PathSegment::Index(i),
                PathSegment::Key("name".into()),
            ];
            let loc = a.tree.locate(&path);
            if let Some(first) = self.first_node.get(&n.name) {
                self.report.push(&a.file, || {
                    Diagnostic::at(
                        &a.file,
                        &a.source,
                        loc,
                        format!(
                            "duplicate node name \"{}\" (first defined at {first})",
                            n.name
                        ),
                        None,
                    )
                });
                continue;
            }
            let here = Place {
                file: a.file.clone(),
                loc,
            };
            self.first_node.insert(n.name.clone(), here);
            check_addresses(
                a,
                i,
                &n,
                (self.nodes.len(), &self.nodes),
                &mut self.first_address,
                &mut self.report,
            );
            self.nodes.push(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::File::create(&p).unwrap().write_all(text).unwrap();
        p
    }

    const POLICY: &str = "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: NAME\nspec:\n  ports:\n    - ports: 80\n      state: closed\n";

    #[test]
    fn directories_recursive_hidden_skipped_and_multi_document() {
        let dir = tempfile::tempdir().unwrap();
        let a = POLICY.replace("NAME", "a");
        let b = POLICY.replace("NAME", "b");
        write(dir.path(), "x/a.yaml", format!("{a}---\n{b}").as_bytes());
        write(dir.path(), "c.yml", POLICY.replace("NAME", "c").as_bytes());
        write(dir.path(), ".git/d.yaml", b"not: [valid");
        write(dir.path(), "readme.txt", b"ignored");
        let loaded = load_paths(&[dir.path()]).unwrap();
        assert_eq!(loaded.policies.policies().len(), 3);
        assert_eq!(loaded.files, 2);
    }

    #[test]
    fn duplicate_names_point_at_second_definition() {
        let dir = tempfile::tempdir().unwrap();
        let a = POLICY.replace("NAME", "a");
        write(dir.path(), "one.yaml", a.as_bytes());
        write(dir.path(), "two.yaml", a.as_bytes());
        let diags = load_paths(&[dir.path()]).unwrap_err();
        assert_eq!(diags.len(), 1);
        assert!(diags[0].file.ends_with("two.yaml"));
        assert!(
            diags[0].message.contains("first defined at"),
            "{}",
            diags[0]
        );
        assert_eq!(diags[0].loc.unwrap().line, 4);
    }

    #[test]
    fn all_files_are_reported_and_nothing_returned() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "good.yaml",
            POLICY.replace("NAME", "a").as_bytes(),
        );
        write(
            dir.path(),
            "bad1.yaml",
            POLICY
                .replace("NAME", "b")
                .replace("closed", "shut")
                .as_bytes(),
        );
        write(
            dir.path(),
            "bad2.yaml",
            POLICY
                .replace("NAME", "c")
                .replace("80", "99999")
                .as_bytes(),
        );
        let diags = load_paths(&[dir.path()]).unwrap_err();
        assert_eq!(diags.len(), 2);
        assert_eq!(
            diags[0].headline(),
            format!(
                "{}:8:14: error: unknown state \"shut\" (expected open, closed or filtered)",
                dir.path().join("bad1.yaml").display()
            )
        );
        assert!(
            diags[1]
                .headline()
                .contains("bad2.yaml:7:14: error: port 99999 is out of range"),
            "{}",
            diags[1]
        );
    }

    #[test]
    fn structural_and_semantic_problems_in_one_document() {
        let dir = tempfile::tempdir().unwrap();
        let text = "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: p\nspec:\n  ports:\n    - ports: 80\n      state: opne\n    - ports: 81\n      state: open\n      from: [10.0.0.1/8]\n";
        write(dir.path(), "p.yaml", text.as_bytes());
        let diags = load_paths(&[dir.path()]).unwrap_err();
        assert_eq!(diags.len(), 2, "{diags:?}");
        assert!(diags[0].message.contains("unknown state \"opne\""));
        assert!(diags[1].message.contains("host bits"));
        assert_eq!(diags[1].loc.unwrap().line, 11);
    }

    #[test]
    fn hostile_files() {
        let dir = tempfile::tempdir().unwrap();
        let big = write(
            dir.path(),
            "big.yaml",
            &vec![b'#'; (MAX_FILE_BYTES + 10) as usize],
        );
        let d = load_paths(&[&big]).unwrap_err();
        assert!(d[0].message.contains("larger than"));
        let bin = write(dir.path(), "bin.yaml", b"a: 1\nb: \xff\xfe\n");
        let d = load_paths(&[&bin]).unwrap_err();
        assert!(d[0].message.contains("UTF-8"));
        assert_eq!(d[0].loc.unwrap().line, 2);
        let missing = dir.path().join("nope.yaml");
        let d = load_paths(&[&missing]).unwrap_err();
        assert!(d[0].message.contains("cannot read"));
    }

    #[test]
    fn a_fifo_in_a_policy_directory_is_reported_not_read() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ok.yaml",
            POLICY.replace("NAME", "a").as_bytes(),
        );
        let fifo = dir.path().join("pipe.yaml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Would block forever if the FIFO were opened (nobody writes to it).
        let d = load_paths(&[dir.path()]).err().unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("not a regular file"), "{d:?}");
        let (files, diags) = policy_files(&[dir.path()]);
        assert_eq!(files.len(), 1);
        assert_eq!(diags.len(), 1);
    }

    /// Runs `policy_files` on `dir` in a thread and waits for it with a deadline, so a walk
    /// that never ends fails the test instead of hanging it.
    fn walk_within_deadline(dir: &Path) -> (Vec<PathBuf>, Vec<Diagnostic>) {
        let dir = dir.to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(policy_files(&[&dir]));
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("the walk did not finish within 20 s: a directory is walked more than once")
    }

    #[test]
    fn a_symlink_loop_of_two_links_is_walked_once() {
        // `ln -s . a; ln -s . b` made the walk exponential: a/b/a/b/... until paths hit
        // PATH_MAX, at 100 % CPU and ~20 MB/s more memory.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ok.yaml",
            POLICY.replace("NAME", "a").as_bytes(),
        );
        std::os::unix::fs::symlink(".", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("b")).unwrap();
        let (files, diags) = walk_within_deadline(dir.path());
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(files, vec![dir.path().join("ok.yaml")]);
    }

    #[test]
    fn one_link_to_the_directory_itself_gives_no_duplicates() {
        // `ln -s . a` gave 41 "duplicate policy name" errors (a/, a/a/, ... until ELOOP).
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ok.yaml",
            POLICY.replace("NAME", "a").as_bytes(),
        );
        std::os::unix::fs::symlink(".", dir.path().join("a")).unwrap();
        let loaded = load_paths(&[dir.path()]).unwrap();
        assert_eq!(loaded.policies.policies().len(), 1);
        assert_eq!(loaded.files, 1);
        // A link to a file or directory inside the tree is followed, and each file read once.
        write(
            dir.path(),
            "sub/b.yaml",
            POLICY.replace("NAME", "b").as_bytes(),
        );
        std::os::unix::fs::symlink("sub", dir.path().join("also-sub")).unwrap();
        std::os::unix::fs::symlink("ok.yaml", dir.path().join("same.yaml")).unwrap();
        std::os::unix::fs::symlink("sub/b.yaml", dir.path().join("c.yaml")).unwrap();
        let loaded = load_paths(&[dir.path()]).unwrap();
        assert_eq!(loaded.policies.policies().len(), 2);
        assert_eq!(loaded.files, 2);
    }

    #[test]
    fn links_out_of_the_tree_are_reported_and_never_read() {
        let dir = tempfile::tempdir().unwrap();
        // Outside the policy directory: a secret whose first line is not YAML (a parse error
        // used to print it as the snippet), and a directory of policies.
        let secret = write(dir.path(), "secret", b"root:$6$SECRETHASH:19000:0:::\n");
        write(
            dir.path(),
            "elsewhere/p.yaml",
            POLICY.replace("NAME", "x").as_bytes(),
        );
        let policies = dir.path().join("policies");
        write(&policies, "ok.yaml", POLICY.replace("NAME", "a").as_bytes());
        std::os::unix::fs::symlink(&secret, policies.join("shadow.yaml")).unwrap();
        std::os::unix::fs::symlink("../elsewhere", policies.join("more")).unwrap();
        // A non-policy file pointing out (a README, a licence) is never read: no problem.
        std::os::unix::fs::symlink(&secret, policies.join("NOTES.txt")).unwrap();
        let d = load_paths(&[&policies]).unwrap_err();
        let text: String = d.iter().map(|d| d.to_string()).collect();
        assert!(!text.contains("SECRETHASH"), "the content was read: {text}");
        assert_eq!(d.len(), 2, "{text}");
        assert!(d[0].file.ends_with("more"), "{text}");
        assert!(d[1].file.ends_with("shadow.yaml"), "{text}");
        for d in &d {
            assert!(d.message.contains("outside the policy directory"), "{d}");
            assert!(d.loc.is_none() && d.line_text.is_none(), "{d}");
        }
        // Named explicitly, a file is read wherever it is (the user asked for it).
        let loaded = load_paths(&[policies.join("ok.yaml")]).unwrap();
        assert_eq!(loaded.files, 1);
    }

    /// Runs `f` on a thread whose loads call `hook` at each stage, and waits for it with a
    /// deadline, so a load that blocks (on a FIFO) or never ends fails the test instead of
    /// hanging it.
    fn within_deadline<T: Send + 'static>(
        hook: impl FnMut(test_hook::Stage) + 'static + Send,
        no_inodes: bool,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            test_hook::HOOK.with(|h| *h.borrow_mut() = Some(Box::new(hook)));
            test_hook::NO_INODES.with(|n| n.set(no_inodes));
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("the load did not finish within 20 s")
    }

    /// Replaces `path` by a symbolic link to `target` in one rename, as an attacker would.
    fn swap_for_link(path: &Path, target: &Path) {
        let tmp = path.with_extension("swap");
        std::os::unix::fs::symlink(target, &tmp).unwrap();
        fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_file_swapped_after_the_walk_is_not_read() {
        // The walk checked x.yaml (a file in the tree); before the read, someone who may write
        // the policy directory renames a link to a secret over it. Reading the path again
        // printed the secret's first line as a parse error's snippet.
        let dir = tempfile::tempdir().unwrap();
        let secret = write(dir.path(), "secret", b"root:$6$SECRETHASH:19000:0:::\n");
        let policies = dir.path().join("policies");
        write(&policies, "ok.yaml", POLICY.replace("NAME", "a").as_bytes());
        let x = write(&policies, "x.yaml", POLICY.replace("NAME", "x").as_bytes());
        let (root, link) = (policies.clone(), x.clone());
        let d = within_deadline(
            move |stage| {
                if stage == test_hook::Stage::Walked {
                    swap_for_link(&link, &secret)
                }
            },
            false,
            move || load_paths(&[&root]).unwrap_err(),
        );
        let text: String = d.iter().map(|d| d.to_string()).collect();
        assert!(!text.contains("SECRETHASH"), "the secret was read: {text}");
        assert_eq!(d.len(), 1, "{text}");
        assert_eq!(d[0].file, x.display().to_string(), "{text}");
        assert!(d[0].message.contains("replaced"), "{text}");
        // Swapped for a FIFO: never opened for reading (it would block the load forever).
        let y = write(&policies, "y.yaml", POLICY.replace("NAME", "y").as_bytes());
        fs::remove_file(&x).unwrap();
        let (root, fifo) = (policies.clone(), y.clone());
        let d = within_deadline(
            move |stage| {
                if stage == test_hook::Stage::Walked {
                    fs::remove_file(&fifo).unwrap();
                    let made = std::process::Command::new("mkfifo")
                        .arg(&fifo)
                        .status()
                        .unwrap();
                    assert!(made.success());
                }
            },
            false,
            move || load_paths(&[&root]).unwrap_err(),
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].message.contains("replaced"), "{}", d[0]);
        // A directory on the way swapped for a link out of the tree: the last component is
        // no link, so only the identity check (device and inode of what was opened against
        // what the walk checked) keeps the secret out.
        fs::remove_file(&y).unwrap();
        write(
            &policies,
            "sub/z.yaml",
            POLICY.replace("NAME", "z").as_bytes(),
        );
        write(
            dir.path(),
            "outside/z.yaml",
            b"root:$6$SECRETHASH:19000:0:::\n",
        );
        let (root, sub, outside) = (
            policies.clone(),
            policies.join("sub"),
            dir.path().join("outside"),
        );
        let d = within_deadline(
            move |stage| {
                if stage == test_hook::Stage::Walked {
                    fs::rename(&sub, sub.with_extension("old")).unwrap();
                    std::os::unix::fs::symlink(&outside, &sub).unwrap();
                }
            },
            false,
            move || load_paths(&[&root]).unwrap_err(),
        );
        let text: String = d.iter().map(|d| d.to_string()).collect();
        assert!(!text.contains("SECRETHASH"), "the secret was read: {text}");
        assert_eq!(d.len(), 1, "{text}");
        assert!(d[0].file.ends_with("sub/z.yaml"), "{text}");
        assert!(d[0].message.contains("it is now another file"), "{text}");
    }

    #[test]
    fn a_root_swapped_during_the_walk_is_read_from_one_revision() {
        // git-sync: `current` moves from rev-1 to rev-2 while a load walks it. The walk went
        // on through current/, so the checkout's own links seemed to lead out of the tree
        // resolved before the swap, and files of both revisions were read.
        let dir = tempfile::tempdir().unwrap();
        for (rev, name) in [("rev-1", "a"), ("rev-2", "b")] {
            let rev = dir.path().join(rev);
            write(
                &rev,
                &format!("sub/{name}.yaml"),
                POLICY.replace("NAME", name).as_bytes(),
            );
            write(
                &rev,
                "top.yaml",
                POLICY.replace("NAME", &format!("top-{name}")).as_bytes(),
            );
            std::os::unix::fs::symlink("sub", rev.join("link")).unwrap();
        }
        let current = dir.path().join("current");
        std::os::unix::fs::symlink("rev-1", &current).unwrap();
        let (root, target) = (current.clone(), dir.path().join("rev-2"));
        let loaded = within_deadline(
            move |stage| {
                if stage == test_hook::Stage::RootResolved {
                    swap_for_link(&root, &target)
                }
            },
            false,
            {
                let current = current.clone();
                move || load_paths(&[&current])
            },
        )
        .unwrap_or_else(|d| panic!("{d:?}"));
        let names: Vec<&str> = loaded
            .policies
            .policies()
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["a", "top-a"],
            "one revision, the one resolved first"
        );
        // Files are named as the user spelt the directory.
        let (files, _) = policy_files(&[&current]);
        assert_eq!(
            files,
            [current.join("link/b.yaml"), current.join("top.yaml")]
        );
    }

    #[test]
    fn without_inode_numbers_a_symlink_loop_is_still_walked_once() {
        // A file system reporting inode 0 for everything switched the dedup off: `ln -s . a;
        // ln -s . b` was exponential again.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "ok.yaml",
            POLICY.replace("NAME", "a").as_bytes(),
        );
        std::os::unix::fs::symlink(".", dir.path().join("a")).unwrap();
        std::os::unix::fs::symlink(".", dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink("ok.yaml", dir.path().join("same.yaml")).unwrap();
        let root = dir.path().to_path_buf();
        let loaded = within_deadline(|_| {}, true, move || load_paths(&[&root]))
            .unwrap_or_else(|d| panic!("{d:?}"));
        assert_eq!((loaded.files, loaded.policies.policies().len()), (1, 1));
    }

    #[test]
    fn a_symlinked_root_is_followed_and_links_inside_it_stay_inside() {
        // git-sync: /etc/pw/current -> rev-123/, the checkout's own links are relative.
        let dir = tempfile::tempdir().unwrap();
        let rev = dir.path().join("rev-123");
        write(&rev, "sub/a.yaml", POLICY.replace("NAME", "a").as_bytes());
        std::os::unix::fs::symlink("sub", rev.join("link")).unwrap();
        let current = dir.path().join("current");
        std::os::unix::fs::symlink("rev-123", &current).unwrap();
        let (files, diags) = policy_files(&[&current]);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(files, vec![current.join("link/a.yaml")]);
    }

    #[test]
    fn upper_case_extensions_are_read() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "A.YAML", POLICY.replace("NAME", "a").as_bytes());
        write(dir.path(), "b.Yml", POLICY.replace("NAME", "b").as_bytes());
        write(dir.path(), "c.yaml.bak", b"ignored");
        let loaded = load_paths(&[dir.path()]).unwrap();
        assert_eq!(loaded.policies.policies().len(), 2);
        assert_eq!(loaded.files, 2);
    }

    #[test]
    fn an_empty_file_is_an_error_a_comment_only_file_is_not() {
        // `render > web.yaml` with a failing render leaves an empty file: it used to drop
        // that file's policies silently.
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", POLICY.replace("NAME", "a").as_bytes());
        write(dir.path(), "b.yaml", b"");
        write(dir.path(), "c.yaml", b"\n  \n");
        write(dir.path(), "d.yaml", b"# nothing here yet\n");
        let d = load_paths(&[dir.path()]).unwrap_err();
        assert_eq!(d.len(), 2, "{d:?}");
        for (d, name) in d.iter().zip(["b.yaml", "c.yaml"]) {
            assert!(d.file.ends_with(name), "{d}");
            assert!(d.message.contains("file is empty"), "{d}");
        }
        let explicit = load_paths(&[dir.path().join("b.yaml")]).unwrap_err();
        assert!(
            explicit[0].message.contains("file is empty"),
            "{explicit:?}"
        );
    }

    #[test]
    fn duplicate_inventory_addresses_are_errors() {
        let inv = |nodes: &str| {
            format!("apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n{nodes}")
        };
        // Two nodes at one address: verify would compare one host with two intents.
        let text = inv(
            "  - name: a\n    addresses: [\"10.0.0.1\"]\n  - name: b\n    addresses: [\"10.0.0.2\", \"10.0.0.1\"]\n",
        );
        let d = load_source("inv.yaml", text.as_bytes()).unwrap_err();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].headline(),
            "inv.yaml:7:29: error: duplicate address 10.0.0.1: also an address of node \"a\" (inv.yaml:5:17)"
        );
        // Twice for one node: found by validate, at the second.
        let text = inv("  - name: a\n    addresses: [\"10.0.0.1\", \"10.0.0.1\"]\n");
        let d = load_source("inv.yaml", text.as_bytes()).unwrap_err();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(
            d[0].headline(),
            "inv.yaml:5:29: error: duplicate address 10.0.0.1: listed twice for node \"a\" (first as item 0)"
        );
        // Across files, too.
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "one.yaml",
            inv("  - {name: a, addresses: [\"fd00::1\"]}\n").as_bytes(),
        );
        write(
            dir.path(),
            "two.yaml",
            inv("  - {name: b, addresses: [\"fd00:0::1\"]}\n").as_bytes(),
        );
        let d = load_paths(&[dir.path()]).unwrap_err();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].file.ends_with("two.yaml") && d[0].message.contains("fd00::1"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn a_node_without_addresses_is_a_warning() {
        let inv = |nodes: &str| {
            format!("apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n{nodes}")
        };
        // A node without addresses is enforced by its agent but cannot be verified: a warning.
        let text = inv("  - name: a\n    addresses: []\n  - name: b\n");
        let loaded = load_source("inv.yaml", text.as_bytes()).unwrap();
        assert_eq!(loaded.nodes.len(), 2);
        let w: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
        assert_eq!(
            w,
            [
                "inv.yaml:5:16: warning: node \"a\" has no addresses: its agent enforces its rules, but verify and peer scans cannot check it",
                "inv.yaml:6:5: warning: node \"b\" has no addresses: its agent enforces its rules, but verify and peer scans cannot check it",
            ]
        );
    }

    #[test]
    fn expiries_are_checked_at_their_token_and_expired_entries_warned_about() {
        let policy = |expires: &str| {
            format!(
                "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: p\nspec:\n  ports:\n    - ports: 8080\n      state: filtered\n      expires: {expires}\n    - ports: 8080\n      state: closed\n"
            )
        };
        let d = load_source("p.yaml", policy("2026-12-24T18:00:00").as_bytes()).unwrap_err();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].headline()
                .starts_with("p.yaml:9:16: error: time \"2026-12-24T18:00:00\" has no UTC offset"),
            "{}",
            d[0].headline()
        );
        // quoted or not, and a number is no time
        assert!(load_source("p.yaml", policy("\"2026-12-24T18:00:00+01:00\"").as_bytes()).is_ok());
        let d = load_source("p.yaml", policy("1798135200").as_bytes()).unwrap_err();
        assert!(
            d[0].headline()
                .contains("9:16: error: expires must be a string"),
            "{}",
            d[0].headline()
        );
        // long expired: valid, with a warning at the token; the entry is left out of the rules
        let loaded = load_source("p.yaml", policy("2001-01-01T00:00:00Z").as_bytes()).unwrap();
        let w: Vec<String> = loaded.warnings.iter().map(|w| w.headline()).collect();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "p.yaml:9:16: warning: entry 0 of policy \"p\" expired at 2001-01-01T00:00:00Z ("
            ),
            "{}",
            w[0]
        );
        let intent = loaded.policies.compile(&BTreeMap::new());
        assert_eq!(intent.rules.len(), 1);
        assert_eq!(intent.rules[0].entry, 1);
        // in the future: no warning, carried into the rules
        let loaded = load_source("p.yaml", policy("2038-12-24T18:00:00Z").as_bytes()).unwrap();
        assert!(loaded.warnings.is_empty());
        let intent = loaded.policies.compile(&BTreeMap::new());
        assert_eq!(
            intent.rules[0].expires.map(|t| t.to_string()).as_deref(),
            Some("2038-12-24T18:00:00Z")
        );
    }

    #[test]
    fn warnings_have_their_own_share_and_never_hide_an_error() {
        let inv = |nodes: usize, last: &str| {
            let nodes: String = (0..nodes).map(|i| format!("  - name: n{i}\n")).collect();
            format!("apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n{nodes}{last}")
        };
        // 150 nodes without addresses are valid: 100 warnings, then a note that is a warning.
        let loaded = load_source("many.yaml", inv(150, "").as_bytes()).unwrap();
        assert_eq!(loaded.nodes.len(), 150);
        assert_eq!(loaded.warnings.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
        assert!(loaded.warnings.iter().all(|w| !w.is_error()));
        assert_eq!(
            loaded.warnings[MAX_DIAGNOSTICS_PER_FILE].headline(),
            "many.yaml: warning: 50 more warnings in this file not shown (at most 100 are reported per file)"
        );
        // An error after them is the one problem returned: warnings took slots of the share
        // and hid it behind "more problems in this file not shown".
        let text = format!(
            "{}---\n{}",
            inv(101, ""),
            inv(0, "  - {name: bad, addresses: [\"10.0.0.300\"]}\n")
        );
        let d = load_source("bad.yaml", text.as_bytes()).unwrap_err();
        assert_eq!(d.len(), 1, "{:?}", d.last());
        assert_eq!(
            d[0].headline(),
            "bad.yaml:109:29: error: \"10.0.0.300\" is not an IP address"
        );
        // The warnings come apart from the errors, for validate to show beside them.
        let p = load_source_with_warnings("bad.yaml", text.as_bytes()).unwrap_err();
        assert_eq!(p.errors, d);
        assert_eq!(p.warnings.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
        assert!(p.warnings.iter().all(|w| !w.is_error()));
    }

    #[test]
    fn inventory_is_loaded_and_merged() {
        let dir = tempfile::tempdir().unwrap();
        let inv = "apiVersion: portwarden.io/v1alpha1\nkind: Inventory\nnodes:\n  - name: web-1\n    addresses: [\"10.0.0.1\"]\n    labels: {role: web}\n";
        write(dir.path(), "inv.yaml", inv.as_bytes());
        let loaded = load_paths(&[dir.path()]).unwrap();
        assert_eq!(loaded.inventories, 1);
        assert_eq!(loaded.node("web-1").unwrap().labels["role"], "web");
    }

    #[test]
    fn load_source_is_load_paths_without_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let text = POLICY.replace("NAME", "a").replace("80", "0");
        let p = write(dir.path(), "p.yaml", text.as_bytes());
        let from_file = load_paths(&[&p]).unwrap_err();
        let from_bytes = load_source(&p.display().to_string(), text.as_bytes()).unwrap_err();
        assert_eq!(from_file, from_bytes);
        let ok = load_source("ok.yaml", POLICY.replace("NAME", "a").as_bytes()).unwrap();
        assert_eq!((ok.files, ok.policies.policies().len()), (1, 1));
        let big = vec![b' '; MAX_FILE_BYTES as usize + 1];
        assert!(
            load_source("big.yaml", &big).unwrap_err()[0]
                .message
                .contains("larger than")
        );
    }

    #[test]
    fn a_file_full_of_mistakes_reports_the_first_hundred() {
        // 200,000 invalid ports on one line: each problem used to copy the whole line, and all
        // of them were kept (gigabytes); now 100 are shown, with a short snippet, then a count.
        let ports = vec!["0"; 200_000].join(",");
        let text = format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata: {{name: a}}\nspec: {{ports: [{{ports: [{ports}], state: open}}]}}\n"
        );
        let d = load_source("many.yaml", text.as_bytes()).unwrap_err();
        assert_eq!(d.len(), validate::MAX_ISSUES + 1, "{:?}", &d[..3]);
        assert!(d[0].message.contains("port 0"), "{}", d[0]);
        assert_eq!(d[0].loc.unwrap().line, 4);
        assert!(d[0].line_text.as_ref().unwrap().len() < 200);
        let last = d.last().unwrap();
        assert_eq!(
            last.message,
            format!(
                "{} more problems in this document not shown",
                200_000 - validate::MAX_ISSUES
            )
        );
        // Structural problems (decoder) are limited the same way: 5,000 unknown fields.
        let fields: String = (0..5_000).map(|i| format!("  f{i}: 1\n")).collect();
        let text = format!(
            "apiVersion: portwarden.io/v1alpha1\nkind: PortPolicy\nmetadata:\n  name: a\n{fields}spec:\n  ports: [{{ports: 1, state: open}}]\n"
        );
        let d = load_source("fields.yaml", text.as_bytes()).unwrap_err();
        assert_eq!(d.len(), decode::MAX_PROBLEMS + 1);
        assert!(d[0].message.contains("unknown field \"f0\""), "{}", d[0]);
        assert!(
            d[decode::MAX_PROBLEMS]
                .message
                .contains("4960 more problems")
        );
        // Many small bad documents in one file, too.
        let docs = "---\nkind: PortPolicy\n".repeat(10_000);
        let d = load_source("docs.yaml", docs.as_bytes()).unwrap_err();
        assert_eq!(d.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
        let last = d.last().unwrap();
        assert!(last.loc.is_none());
        assert!(
            last.message
                .contains("more problems in this file not shown"),
            "{last}"
        );
        // And 5,000 copies of one valid policy: 100 duplicate names, then a note.
        let docs = format!("---\n{}", POLICY.replace("NAME", "a")).repeat(5_000);
        let d = load_source("dups.yaml", docs.as_bytes()).unwrap_err();
        assert_eq!(d.len(), MAX_DIAGNOSTICS_PER_FILE + 1);
        assert!(d[0].message.contains("duplicate policy name"), "{}", d[0]);
        assert!(
            d[100].message.contains("more duplicate names"),
            "{}",
            d[100]
        );
    }
}
