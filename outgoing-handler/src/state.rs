//! The schedule state: the last round opening, kept in one small JSON file in the state directory
//! (`BUTTONPARTY_STATE_DIR`), so that a restart never opens a round inside the minimum gap.
//!
//! The file is replaced atomically: the new content is written to a temporary file in the same
//! directory, fsynced, renamed over the old file, and the directory is fsynced, so after a crash
//! (even `SIGKILL` or a power cut) the file holds either the old or the new opening, never a mix.
//!
//! Reading distinguishes three cases (what the scheduler makes of them is in
//! [`crate::scheduler`]):
//! - the file does not exist: nothing recorded ([`Store::load`] returns `Ok(None)`);
//! - the file holds a valid opening: `Ok(Some(..))`;
//! - the file cannot be read or does not hold a valid opening: [`StateError`].
//!
//! **A missing file means "a round just opened".** The daemon prepares its state with
//! [`StateFile::check_writable`] before the scheduler reads it, and that records the start as an
//! opening ([`ASSUMED_ROUND_ID`]) when there is no file. A missing file is what a replaced
//! instance, a rebuilt volume or a deleted directory looks like, and in each of those cases the
//! previous scheduler may have opened a round moments ago; the cost of assuming it did is one
//! minimum gap without a round, the cost of assuming it did not is two rounds inside the gap.
//! A corrupt file is treated the same way by the scheduler. To let a brand-new deployment open
//! its first round at once, run `outgoing-handler open-round`.
//!
//! The file is tiny and written once per round, so it is read and written with blocking calls.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Name of the state file inside the state directory.
pub const STATE_FILE_NAME: &str = "schedule.json";

/// Version of the file format written by this build.
const FORMAT_VERSION: u32 = 1;

/// A valid state file is far smaller; anything larger is corrupt (and is not read into memory).
const MAX_FILE_BYTES: u64 = 4 * 1024;

/// Most characters of a round id (as in the timestamp queue messages).
const MAX_ROUND_ID_CHARS: usize = 64;

/// The round id recorded when the daemon starts without a state file: no real round has this
/// id (real ones are `<opens_at_ms>-<hex>`), so the log shows the opening was assumed.
pub const ASSUMED_ROUND_ID: &str = "assumed-at-start-no-state-file";

/// The last round opening that was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastOpening {
    /// The round's id.
    pub round_id: String,
    /// When it opened, epoch ms.
    pub opens_at_ms: i64,
}

/// The schedule state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file (or its directory) failed. A retry helps when the cause is
    /// passing (a full disk that is cleaned up, an I/O hiccup), not when it is a permission or a
    /// missing-directory problem, which needs an operator.
    #[error("state file {path}: {op} failed: {error}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done ("read", "write", "rename", ...).
        op: &'static str,
        /// The underlying error (part of the message, not a separate `source()`).
        error: io::Error,
    },
    /// The file exists but does not hold a valid opening. A retry does not help: the file must
    /// be rewritten (the next round opening does it) or removed by an operator.
    #[error("state file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl StateError {
    /// Whether trying the same operation again may succeed without an operator's help.
    pub fn retry_helps(&self) -> bool {
        match self {
            StateError::Io { error, .. } => !matches!(
                error.kind(),
                io::ErrorKind::PermissionDenied
                    | io::ErrorKind::NotFound
                    | io::ErrorKind::ReadOnlyFilesystem
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::IsADirectory
            ),
            StateError::Corrupt { .. } => false,
        }
    }
}

/// Where the last opening is kept. [`StateFile`] is the real one; tests may keep it in memory.
pub trait Store: Send + Sync {
    /// The recorded opening: `Ok(None)` when nothing was ever recorded (first start).
    fn load(&self) -> Result<Option<LastOpening>, StateError>;
    /// Records `last` durably, replacing what was there.
    fn save(&self, last: &LastOpening) -> Result<(), StateError>;
    /// Where the state lives, for log lines.
    fn location(&self) -> &Path;
}

impl<T: Store + ?Sized> Store for std::sync::Arc<T> {
    fn load(&self) -> Result<Option<LastOpening>, StateError> {
        (**self).load()
    }
    fn save(&self, last: &LastOpening) -> Result<(), StateError> {
        (**self).save(last)
    }
    fn location(&self) -> &Path {
        (**self).location()
    }
}

/// The on-disk format.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OnDisk {
    version: u32,
    last_round_id: String,
    last_opens_at_ms: i64,
}

/// The state file `<dir>/schedule.json`.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl StateFile {
    /// The state file in `dir` (nothing is read or created yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let path = dir.join(STATE_FILE_NAME);
        Self { dir, path }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Prepares the state for the daemon, so that problems show at start-up rather than when the
    /// first round is due: creates the directory if it is missing and makes sure a file can be
    /// written, fsynced and renamed in it. When there is no state file, the write is the real
    /// one: the start is recorded as an opening now ([`ASSUMED_ROUND_ID`]), so a scheduler that
    /// lost its state (a replaced instance, a new volume) waits out the minimum gap instead of
    /// risking a second round inside it. An existing file, valid or not, is left as it is.
    pub fn check_writable(&self) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, "create directory", e))?;
        match fs::symlink_metadata(&self.path) {
            Ok(_) => {
                let probe = self.temp_path();
                let result =
                    write_synced(&probe, b"probe\n").map_err(|e| self.io(&probe, "write", e));
                let _ = fs::remove_file(&probe);
                result
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let assumed = LastOpening {
                    round_id: ASSUMED_ROUND_ID.to_owned(),
                    opens_at_ms: now_ms(),
                };
                if self.create_if_missing(&assumed)? {
                    tracing::warn!(
                        state_file = %self.path.display(),
                        opens_at_ms = assumed.opens_at_ms,
                        "no schedule state file: recording the start as a round opening, so no round opens within the minimum gap (outgoing-handler open-round opens one now if wanted)"
                    );
                }
                Ok(())
            }
            Err(e) => Err(self.io(&self.path, "stat", e)),
        }
    }

    /// Records `last` only if there is no state file: an opening saved meanwhile by another
    /// process (`open-round`) is never replaced. `Ok(false)` when a file was already there.
    fn create_if_missing(&self, last: &LastOpening) -> Result<bool, StateError> {
        let temp = self.temp_path();
        if let Err(e) = write_synced(&temp, &encode(last)) {
            let _ = fs::remove_file(&temp);
            return Err(self.io(&temp, "write", e));
        }
        // A hard link, unlike a rename, fails when the target exists: atomic and no-clobber.
        let linked = fs::hard_link(&temp, &self.path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(self.io(&self.path, "link", e)),
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(&self.dir, "fsync directory", e))?;
        Ok(true)
    }

    fn temp_path(&self) -> PathBuf {
        self.dir.join(format!(
            ".{STATE_FILE_NAME}.tmp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ))
    }

    fn io(&self, path: &Path, op: &'static str, error: io::Error) -> StateError {
        StateError::Io {
            path: path.to_owned(),
            op,
            error,
        }
    }

    fn corrupt(&self, reason: impl Into<String>) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            reason: reason.into(),
        }
    }
}

impl Store for StateFile {
    fn load(&self) -> Result<Option<LastOpening>, StateError> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&self.path, "open", e)),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io(&self.path, "read", e))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(self.corrupt(format!("larger than {MAX_FILE_BYTES} bytes")));
        }
        let on_disk: OnDisk = serde_json::from_slice(&bytes)
            .map_err(|e| self.corrupt(format!("not a schedule state: {e}")))?;
        if on_disk.version != FORMAT_VERSION {
            return Err(self.corrupt(format!(
                "format version {} (this build reads {FORMAT_VERSION})",
                on_disk.version
            )));
        }
        if on_disk.last_opens_at_ms < 0 {
            return Err(self.corrupt("negative opening time"));
        }
        let id = &on_disk.last_round_id;
        if id.is_empty()
            || id.chars().count() > MAX_ROUND_ID_CHARS
            || id.chars().any(char::is_control)
        {
            return Err(self.corrupt("invalid round id"));
        }
        Ok(Some(LastOpening {
            round_id: on_disk.last_round_id,
            opens_at_ms: on_disk.last_opens_at_ms,
        }))
    }

    fn save(&self, last: &LastOpening) -> Result<(), StateError> {
        let body = encode(last);
        fs::create_dir_all(&self.dir).map_err(|e| self.io(&self.dir, "create directory", e))?;
        let temp = self.temp_path();
        if let Err(e) = write_synced(&temp, &body) {
            let _ = fs::remove_file(&temp);
            return Err(self.io(&temp, "write", e));
        }
        if let Err(e) = fs::rename(&temp, &self.path) {
            let _ = fs::remove_file(&temp);
            return Err(self.io(&self.path, "rename", e));
        }
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(&self.dir, "fsync directory", e))
    }

    fn location(&self) -> &Path {
        &self.path
    }
}

/// The file's content for `last`.
fn encode(last: &LastOpening) -> Vec<u8> {
    let mut body = serde_json::to_vec(&OnDisk {
        version: FORMAT_VERSION,
        last_round_id: last.round_id.clone(),
        last_opens_at_ms: last.opens_at_ms,
    })
    .expect("a struct of a string and integers always serialises");
    body.push(b'\n');
    body
}

/// The wall clock in epoch ms (as [`crate::clock::SystemClock`]; 0 before 1970).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Creates `path` (which must not exist), writes `bytes` and fsyncs it.
fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// A [`Store`] in memory, for tests that simulate many rounds.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct MemoryStore {
    last: std::sync::Mutex<Option<LastOpening>>,
}

#[cfg(test)]
impl MemoryStore {
    /// A store holding `last`.
    pub(crate) fn with(last: Option<LastOpening>) -> Self {
        Self {
            last: std::sync::Mutex::new(last),
        }
    }
}

#[cfg(test)]
impl Store for MemoryStore {
    fn load(&self) -> Result<Option<LastOpening>, StateError> {
        Ok(self.last.lock().unwrap().clone())
    }
    fn save(&self, last: &LastOpening) -> Result<(), StateError> {
        *self.last.lock().unwrap() = Some(last.clone());
        Ok(())
    }
    fn location(&self) -> &Path {
        Path::new("(memory)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opening(ms: i64) -> LastOpening {
        LastOpening {
            round_id: format!("{ms:013}-0000abcd"),
            opens_at_ms: ms,
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        state.save(&opening(1_700_000_000_000)).unwrap();
        assert_eq!(state.load().unwrap(), Some(opening(1_700_000_000_000)));
        // A later save replaces it.
        state.save(&opening(1_700_000_100_000)).unwrap();
        assert_eq!(state.load().unwrap(), Some(opening(1_700_000_100_000)));
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE_NAME.to_owned()]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn any_valid_opening_round_trips(
            round_id in "[^\\p{Cc}]{1,64}",
            opens_at_ms in 0i64..=i64::MAX,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let state = StateFile::new(dir.path());
            let last = LastOpening { round_id, opens_at_ms };
            state.save(&last).unwrap();
            proptest::prop_assert_eq!(state.load().unwrap(), Some(last));
        }
    }

    #[test]
    fn missing_file_loads_as_nothing_recorded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(StateFile::new(dir.path()).load().unwrap(), None);
        // Also when the directory itself does not exist yet.
        assert_eq!(
            StateFile::new(dir.path().join("nope")).load().unwrap(),
            None
        );
    }

    #[test]
    fn corrupt_files_are_errors_that_a_retry_does_not_fix() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        let cases: &[&[u8]] = &[
            b"",
            b"garbage",
            b"\xff\xfe",
            b"[]",
            br#"{"version":1,"last_round_id":"r"}"#,
            br#"{"version":2,"last_round_id":"r","last_opens_at_ms":5}"#,
            br#"{"version":1,"last_round_id":"r","last_opens_at_ms":-5}"#,
            br#"{"version":1,"last_round_id":"","last_opens_at_ms":5}"#,
            br#"{"version":1,"last_round_id":"r","last_opens_at_ms":"5"}"#,
            br#"{"version":1,"last_round_id":"r","last_opens_at_ms":5,"x":1}"#,
        ];
        for body in cases {
            fs::write(state.path(), body).unwrap();
            let err = state.load().unwrap_err();
            assert!(
                matches!(err, StateError::Corrupt { .. }),
                "{body:?}: {err:?}"
            );
            assert!(!err.retry_helps());
            assert!(err.to_string().contains(STATE_FILE_NAME), "{err}");
        }
        fs::write(state.path(), vec![b' '; 10_000]).unwrap();
        assert!(matches!(state.load(), Err(StateError::Corrupt { .. })));
        // Saving over a corrupt file repairs it.
        state.save(&opening(42)).unwrap();
        assert_eq!(state.load().unwrap(), Some(opening(42)));
    }

    #[test]
    fn unreadable_file_is_an_io_error() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        // A directory where the file should be cannot be read as a file.
        fs::create_dir(state.path()).unwrap();
        let err = state.load().unwrap_err();
        assert!(matches!(err, StateError::Io { .. }), "{err:?}");
    }

    #[test]
    fn check_writable_without_a_file_records_an_opening_now() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let state = StateFile::new(&sub);
        let before = now_ms();
        state.check_writable().unwrap();
        let after = now_ms();
        let last = state.load().unwrap().expect("an opening is recorded");
        assert_eq!(last.round_id, ASSUMED_ROUND_ID);
        assert!(
            (before..=after).contains(&last.opens_at_ms),
            "{last:?} not in {before}..={after}"
        );
        // Only the state file is left (no temporary or probe file).
        let names: Vec<_> = fs::read_dir(&sub)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![STATE_FILE_NAME.to_owned()]);
    }

    #[test]
    fn check_writable_keeps_an_existing_file_valid_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        state.save(&opening(1_700_000_000_000)).unwrap();
        state.check_writable().unwrap();
        assert_eq!(state.load().unwrap(), Some(opening(1_700_000_000_000)));
        // A corrupt file stays corrupt (the scheduler treats it as an opening now) and the probe
        // leaves nothing behind.
        fs::write(state.path(), b"{not json").unwrap();
        state.check_writable().unwrap();
        assert_eq!(fs::read(state.path()).unwrap(), b"{not json");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn an_assumed_opening_never_replaces_one_saved_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateFile::new(dir.path());
        // `open-round` saved between the daemon's look at the directory and its write.
        state.save(&opening(1_700_000_000_000)).unwrap();
        let assumed = LastOpening {
            round_id: ASSUMED_ROUND_ID.to_owned(),
            opens_at_ms: 1_800_000_000_000,
        };
        assert!(!state.create_if_missing(&assumed).unwrap());
        assert_eq!(state.load().unwrap(), Some(opening(1_700_000_000_000)));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn check_writable_fails_when_the_directory_cannot_be_created() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        fs::write(&file, b"x").unwrap();
        let err = StateFile::new(file.join("sub"))
            .check_writable()
            .unwrap_err();
        assert!(matches!(err, StateError::Io { .. }), "{err:?}");
    }
}
