//! Writing a set of files so that readers see the old set or the new one,
//! never a mix: the files go into a staging directory next to the target
//! (each written and flushed to disk), which then replaces the target in one
//! atomic `renameat2(RENAME_EXCHANGE)`. A crash or a full disk midway leaves
//! the previous results untouched and at most a stale `.staging-*` sibling,
//! removed by the next write.
//!
//! Also: where outputs may go (checked before any work starts) and a safe
//! directory name derived from a case name.
#![forbid(unsafe_code)]

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};

/// Why outputs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicDirError {
    /// A file-system call failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The new set did not read back as written.
    #[error(
        "the new outputs for {path} did not read back as written ({why}); the previous ones are \
         kept: check the disk and the file system"
    )]
    Unverified {
        /// The directory.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// The target cannot be written.
    #[error(
        "{path} cannot be written ({reason}); choose another --output or fix its permissions \
         (nothing was run)"
    )]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

fn io<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> AtomicDirError + 'a {
    move |source| AtomicDirError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// A directory name made of `name`'s letters, digits, `.`, `_` and `-`
/// (anything else becomes `_`), never empty, never starting with `.`, at most
/// 100 bytes — so a case named `/tmp/x` or `../../x` stays inside `output/`.
#[must_use]
pub fn safe_dir_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while s.starts_with('.') {
        s.remove(0);
    }
    s.truncate(100);
    if s.is_empty() {
        "case".to_string()
    } else {
        s
    }
}

/// The staging sibling of `dir` for this process.
fn staging(dir: &Path) -> PathBuf {
    let name = dir
        .file_name()
        .map_or_else(|| "output".into(), |n| n.to_string_lossy().into_owned());
    dir.with_file_name(format!(".{name}.staging-{}", std::process::id()))
}

/// Where [`check_writable`] writes: per process, as ranks of an MPI job
/// check the same directory at once.
fn probe(dir: &Path) -> PathBuf {
    let mut p = staging(dir).into_os_string();
    p.push(".probe");
    PathBuf::from(p)
}

fn parent(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Check, before any work, that results can be published at `dir`: its
/// parent can be created and written, and an existing `dir` is a writable
/// directory.
///
/// # Errors
/// [`AtomicDirError::NotWritable`] saying why.
pub fn check_writable(dir: &Path) -> Result<(), AtomicDirError> {
    let not = |reason: String| AtomicDirError::NotWritable {
        path: dir.to_path_buf(),
        reason,
    };
    let parent = parent(dir);
    // The directories this check creates, deepest first: removed again
    // after the probe, so a check (or a dry run) leaves nothing behind.
    let created: Vec<PathBuf> = parent
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
        .map(Path::to_path_buf)
        .collect();
    std::fs::create_dir_all(&parent)
        .map_err(|e| not(format!("cannot create {}: {e}", parent.display())))?;
    if dir.exists() {
        if !dir.is_dir() {
            return Err(not("it exists and is not a directory".into()));
        }
        if std::fs::metadata(dir).is_ok_and(|m| m.permissions().readonly()) {
            return Err(not("it is read-only".into()));
        }
    }
    // A real write, in the place the staging directory will go: catches
    // read-only file systems and permissions alike, even for root.
    let probe = probe(dir);
    let result = std::fs::create_dir(&probe)
        .and_then(|()| File::create(probe.join("probe")).map(drop))
        .map_err(|e| not(format!("{e} (in {})", parent.display())));
    let _ = std::fs::remove_dir_all(&probe);
    for d in &created {
        // Only empty directories go: another process may have used them.
        let _ = std::fs::remove_dir(d);
    }
    result
}

/// What writes one file's contents.
pub type Contents<'a> = dyn Fn(&mut dyn Write) -> std::io::Result<()> + 'a;

/// Write `files` (name, what writes its contents) as the new contents of
/// `dir`, atomically. Contents are streamed through a buffer.
///
/// # Errors
/// [`AtomicDirError`] naming the path; `dir` then holds what it held before.
pub fn write_dir(dir: &Path, files: &[(&str, &Contents<'_>)]) -> Result<(), AtomicDirError> {
    write_dir_with(dir, files, &Carry::default())
}

/// A check of a finished staging directory: `Err(why)` keeps the old set.
pub type Verify<'a> = dyn Fn(&Path) -> Result<(), String> + 'a;

/// What a new set takes over from the one it replaces, and what it must pass
/// before it replaces it.
#[derive(Default)]
pub struct Carry<'a> {
    /// `(old name, new name)`: a file of the old set kept in the new one
    /// under another name (a hard link, so nothing is copied), when present.
    pub keep: &'a [(&'a str, &'a str)],
    /// Called on the finished staging directory, synced; an error keeps the
    /// old set in place.
    pub verify: Option<&'a Verify<'a>>,
}

/// [`write_dir`], carrying files of the old set over and checking the new
/// set before it goes in (see [`Carry`]).
///
/// # Errors
/// As [`write_dir`]; also when `carry.verify` refuses the new set.
pub fn write_dir_with(
    dir: &Path,
    files: &[(&str, &Contents<'_>)],
    carry: &Carry<'_>,
) -> Result<(), AtomicDirError> {
    let parent = parent(dir);
    std::fs::create_dir_all(&parent).map_err(io("create", &parent))?;
    remove_stale_staging(dir);
    let stage = staging(dir);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir(&stage).map_err(io("create", &stage))?;
    let result = fill(&stage, files)
        .and_then(|()| {
            for (old, new) in carry.keep {
                let from = dir.join(old);
                if from.is_file() {
                    let to = stage.join(new);
                    std::fs::hard_link(&from, &to)
                        .or_else(|_| std::fs::copy(&from, &to).map(|_| ()))
                        .map_err(io("keep", &from))?;
                }
            }
            match carry.verify {
                Some(check) => check(&stage).map_err(|why| AtomicDirError::Unverified {
                    path: dir.to_path_buf(),
                    why,
                }),
                None => Ok(()),
            }
        })
        .and_then(|()| swap_in(&stage, dir, &parent));
    let _ = std::fs::remove_dir_all(&stage);
    result
}

fn fill(stage: &Path, files: &[(&str, &Contents<'_>)]) -> Result<(), AtomicDirError> {
    for (name, contents) in files {
        let path = stage.join(name);
        let f = File::create(&path).map_err(io("create", &path))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        contents(&mut w).map_err(io("write", &path))?;
        let f = w
            .into_inner()
            .map_err(|e| io("write", &path)(e.into_error()))?;
        f.sync_all().map_err(io("flush", &path))?;
    }
    File::open(stage)
        .and_then(|d| d.sync_all())
        .map_err(io("flush", stage))
}

/// Put `stage` at `dir`: exchange them when `dir` exists (the old contents
/// end up in `stage`, removed by the caller), rename otherwise.
fn swap_in(stage: &Path, dir: &Path, parent: &Path) -> Result<(), AtomicDirError> {
    let exchanged = dir.exists()
        && renameat2(AT_FDCWD, stage, AT_FDCWD, dir, RenameFlags::RENAME_EXCHANGE).is_ok();
    if !exchanged {
        if dir.exists() {
            // A file system without RENAME_EXCHANGE: two renames, the old
            // results kept until the new ones are in place.
            let old = dir.with_file_name(format!(
                ".{}.old-{}",
                dir.file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                std::process::id()
            ));
            std::fs::rename(dir, &old).map_err(io("move aside", dir))?;
            if let Err(e) = std::fs::rename(stage, dir) {
                let _ = std::fs::rename(&old, dir);
                return Err(io("publish", dir)(e));
            }
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(stage, dir).map_err(io("publish", dir))?;
        }
    }
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io("flush", parent))
}

/// Remove staging directories of `dir` left by processes that are gone.
fn remove_stale_staging(dir: &Path) {
    let Some(name) = dir.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let prefix = format!(".{name}.staging-");
    let Ok(entries) = std::fs::read_dir(parent(dir)) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let file = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writability_probe_is_per_process() {
        let p = probe(Path::new("/tmp/out"));
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
        assert_eq!(
            name.as_deref(),
            Some(format!(".out.staging-{}.probe", std::process::id()).as_str())
        );
    }

    #[test]
    fn names_stay_inside_the_output_directory() {
        assert_eq!(safe_dir_name("/tmp/x"), "_tmp_x");
        assert_eq!(safe_dir_name("../../x"), "_.._x");
        assert_eq!(safe_dir_name(".."), "case");
        assert_eq!(safe_dir_name(""), "case");
        assert_eq!(safe_dir_name("hydro é"), "hydro__");
        assert_eq!(safe_dir_name(&"a".repeat(300)).len(), 100);
    }

    #[test]
    fn a_new_set_replaces_the_old_one_whole() {
        let root = std::env::temp_dir().join(format!("cobre-publish-{}", std::process::id()));
        let dir = root.join("out");
        let bytes = |b: &'static [u8]| move |w: &mut dyn Write| w.write_all(b);
        let (one, two) = (bytes(b"1"), bytes(b"2"));
        write_dir(&dir, &[("a", &one), ("b", &one)]).expect("first");
        write_dir(&dir, &[("a", &two)]).expect("second");
        assert_eq!(std::fs::read(dir.join("a")).expect("a"), b"2");
        assert!(!dir.join("b").exists(), "no file of the old set survives");
        // A writer that fails half-way leaves the previous set whole.
        let failing = |w: &mut dyn Write| {
            w.write_all(b"partial")?;
            Err(std::io::Error::other("disk gone"))
        };
        let err = write_dir(&dir, &[("c", &one), ("a", &failing)]).expect_err("fails");
        assert!(err.to_string().contains("disk gone"), "{err}");
        assert_eq!(std::fs::read(dir.join("a")).expect("a"), b"2");
        assert!(!dir.join("c").exists());
        let left: Vec<_> = std::fs::read_dir(&root)
            .expect("root")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left.len(), 1, "no staging left: {left:?}");
        check_writable(&dir).expect("writable");
        // A check creates no directory that stays (dry runs leave nothing).
        check_writable(&root.join("x/y/out")).expect("writable");
        assert!(!root.join("x").exists());
        let _ = std::fs::remove_dir_all(root);
    }
}
