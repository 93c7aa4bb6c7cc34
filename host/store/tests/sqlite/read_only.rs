//! `SqliteStore::open_read_only`: creates nothing, writes nothing, reads older schemas without
//! migrating them, sees a live writer's saves, and works on a read-only mount.

use std::process::Command;

use super::*;

fn read_only_err(path: &Path) -> StoreError {
    match SqliteStore::open_read_only(path) {
        Ok(_) => panic!("{} was opened", path.display()),
        Err(e) => e,
    }
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Result<Vec<String>, std::io::Error> {
    let mut names = fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()?;
    names.sort();
    Ok(names)
}

/// A database with run `r` (one saved step, one history entry), closed cleanly.
fn saved_database(path: &Path) -> Result<(RunRecord, Vec<HistoryEntry>), StoreError> {
    let mut store = SqliteStore::open(path)?;
    store.create_run(&record("r", 1, RunStatus::Running))?;
    store.save_step(&StepSave {
        history: &[entry("r", "a")],
        next_check_ms: Some(77),
        ..step("r", RunStatus::Waiting, &state("b", json!({ "n": 1 })))
    })?;
    Ok((store.run("r")?, store.history("r")?))
}

#[test]
fn a_missing_file_is_an_error_and_nothing_is_created() -> TestResult {
    let dir = tempfile::tempdir()?;
    for path in [db(&dir), dir.path().join("no/such/dir/stepflow.db")] {
        let err = read_only_err(&path);
        assert!(matches!(err, StoreError::Missing { .. }), "{err:?}");
        let message = err.to_string();
        assert_eq!(message, format!("no run database at {}", path.display()));
        assert_store_terms(&message);
    }
    assert!(names(dir.path())?.is_empty(), "nothing was created");
    Ok(())
}

#[test]
fn reads_what_was_saved_and_leaves_every_file_as_it_was() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    let (run, history) = saved_database(&path)?;
    let files = names(dir.path())?;
    assert_eq!(
        files,
        ["stepflow.db"],
        "a cleanly closed database is one file"
    );
    let before = fs::read(&path)?;

    let store = SqliteStore::open_read_only(&path)?;
    assert!(store.is_read_only());
    assert_eq!(store.run("r")?, run);
    assert_eq!(store.runs(None, 10)?, vec![run.clone()]);
    assert_eq!(store.runs(Some(RunStatus::Running), 10)?, vec![]);
    assert_eq!(store.history("r")?, history);
    assert!(matches!(
        store.run("nope"),
        Err(StoreError::NotFound { .. })
    ));
    drop(store);
    assert_untouched(&path, &before)?;
    Ok(())
}

#[test]
fn writes_through_a_read_only_store_are_refused_and_write_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    saved_database(&path)?;
    let before = fs::read(&path)?;
    let mut store = SqliteStore::open_read_only(&path)?;
    let lease = stepflow_store::Lease {
        run_id: "r".into(),
        owner: "host-a".into(),
        fence: 1,
        expires_ms: 5,
    };
    let s = State::default();
    let attempts = [
        (
            "creating run `new`",
            store.create_run(&record("new", 2, RunStatus::Running)),
        ),
        (
            "saving a step of run `r`",
            store.save_step(&StepSave {
                history: &[entry("r", "x")],
                ..step("r", RunStatus::Running, &s)
            }),
        ),
        (
            "setting the status of run `r` to cancelled",
            store.set_status("r", RunStatus::Cancelled),
        ),
        (
            "claiming run `r`",
            store
                .claim(&stepflow_store::Claim {
                    run_id: "r",
                    owner: "host-a",
                    ttl_ms: 10,
                    now_ms: 1,
                    take_over: None,
                })
                .map(drop),
        ),
        (
            "renewing the lease on run `r`",
            store.renew(&lease, 10, 1).map(drop),
        ),
        ("releasing the lease on run `r`", store.release(&lease)),
    ];
    for (action, result) in attempts {
        let err = result.expect_err("read-only");
        assert!(matches!(err, StoreError::ReadOnly { .. }), "{err:?}");
        let message = err.to_string();
        assert_eq!(
            message,
            format!(
                "{action} is not possible: {} was opened read-only; nothing was written",
                path.display()
            )
        );
    }
    assert_eq!(store.history("r")?.len(), 1);
    drop(store);
    assert_untouched(&path, &before)
}

#[test]
fn an_empty_file_reads_as_no_runs() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    fs::write(&path, b"")?;
    let store = SqliteStore::open_read_only(&path)?;
    assert!(store.runs(None, 10)?.is_empty());
    assert!(matches!(store.run("r"), Err(StoreError::NotFound { .. })));
    assert!(matches!(
        store.history("r"),
        Err(StoreError::NotFound { .. })
    ));
    assert_untouched(&path, b"")?;

    // Initialised meanwhile by a writer: the same store sees its runs.
    let mut writer = SqliteStore::open(&path)?;
    writer.create_run(&record("r", 1, RunStatus::Running))?;
    assert_eq!(store.run("r")?.id, "r");
    Ok(())
}

#[test]
fn foreign_damaged_and_newer_files_are_refused_and_left_unchanged() -> TestResult {
    let dir = tempfile::tempdir()?;
    let notes = dir.path().join("notes.db");
    Connection::open(&notes)?.execute_batch("CREATE TABLE notes (body TEXT);")?;
    let text = dir.path().join("notes.txt");
    fs::write(&text, b"remember the milk\n")?;
    let newer = db(&dir);
    saved_database(&newer)?;
    Connection::open(&newer)?.pragma_update(None, "user_version", SCHEMA_VERSION + 1)?;
    for path in [&notes, &text, &newer] {
        let before = fs::read(path)?;
        let err = read_only_err(path);
        assert!(
            matches!(
                err,
                StoreError::Foreign { .. }
                    | StoreError::NotADatabase { .. }
                    | StoreError::TooNew { .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("left untouched"), "{err}");
        assert_untouched(path, &before)?;
    }
    Ok(())
}

#[test]
fn a_version_1_database_is_read_without_migrating_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    version_1_database(&path)?;
    let before = fs::read(&path)?;
    let store = SqliteStore::open_read_only(&path)?;
    let old = store.run("old")?;
    assert_eq!(
        (old.status, old.next_check_ms, old.lease),
        (RunStatus::Waiting, Some(42), None)
    );
    assert_eq!(*old.state.data, json!({ "n": 7 }));
    let history = store.history("old")?;
    assert_eq!(history.len(), 1);
    assert!(
        history[0].handlers.is_empty(),
        "no handlers column in version 1"
    );
    drop(store);
    assert_untouched(&path, &before)?;
    let version: i64 =
        Connection::open(&path)?.pragma_query_value(None, "user_version", |r| r.get(0))?;
    assert_eq!(version, 1, "not migrated");
    Ok(())
}

#[test]
fn a_read_only_store_sees_the_saves_of_a_writer() -> TestResult {
    let dir = tempfile::tempdir()?;
    let path = db(&dir);
    saved_database(&path)?;
    // Nobody has the file open: read `immutable`...
    let reader = SqliteStore::open_read_only(&path)?;
    assert_eq!(reader.run("r")?.status, RunStatus::Waiting);
    // ...and a writer comes along: the reader sees what it saves, and what it saves later.
    let mut writer = SqliteStore::open(&path)?;
    writer.save_step(&step("r", RunStatus::Running, &State::default()))?;
    assert_eq!(reader.run("r")?.status, RunStatus::Running);
    // A reader opened while the writer is there reads through the WAL.
    let second = SqliteStore::open_read_only(&path)?;
    writer.save_step(&step("r", RunStatus::Completed, &State::default()))?;
    assert_eq!(reader.run("r")?.status, RunStatus::Completed);
    assert_eq!(second.run("r")?.status, RunStatus::Completed);
    drop(writer);
    assert_eq!(second.runs(None, 10)?.len(), 1);
    Ok(())
}

/// A read-only bind mount of a directory, unmounted when dropped.
struct ReadOnlyMount {
    at: PathBuf,
}

impl ReadOnlyMount {
    /// Mounts `source` read-only at `at`, or says why it cannot (not root, no mount rights).
    fn new(source: &Path, at: &Path) -> Result<ReadOnlyMount, String> {
        fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let run = |args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let out = Command::new("mount")
                .args(args)
                .output()
                .map_err(|e| format!("mount: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        };
        run(&["--bind".as_ref(), source.as_os_str(), at.as_os_str()])?;
        let mount = ReadOnlyMount {
            at: at.to_path_buf(),
        };
        run(&["-o".as_ref(), "remount,bind,ro".as_ref(), at.as_os_str()])?;
        Ok(mount)
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// `dir` and its files made read-only by permissions, made writable again when dropped.
struct NoWritePermission {
    dir: PathBuf,
}

impl Drop for NoWritePermission {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o755));
        for path in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let _ = fs::set_permissions(path.path(), fs::Permissions::from_mode(0o644));
        }
    }
}

/// How [`read_only_view`] made a directory read-only; undone when dropped.
enum ReadOnly {
    Mount(#[allow(dead_code)] ReadOnlyMount),
    Permissions(#[allow(dead_code)] NoWritePermission),
}

/// A view of `source` that nothing can be written to: a read-only bind mount at `mount_at`, or
/// else (not root) `source` itself without write permission. `Err` says why neither works.
fn read_only_view(source: &Path, mount_at: &Path) -> Result<(PathBuf, ReadOnly), String> {
    let (view, how) = match ReadOnlyMount::new(source, mount_at) {
        Ok(mount) => (mount_at.to_path_buf(), ReadOnly::Mount(mount)),
        Err(why) => {
            use std::os::unix::fs::PermissionsExt;
            let guard = NoWritePermission {
                dir: source.to_path_buf(),
            };
            for entry in fs::read_dir(source).map_err(|e| e.to_string())? {
                let path = entry.map_err(|e| e.to_string())?.path();
                fs::set_permissions(&path, fs::Permissions::from_mode(0o444))
                    .map_err(|e| e.to_string())?;
            }
            fs::set_permissions(source, fs::Permissions::from_mode(0o555))
                .map_err(|e| e.to_string())?;
            if fs::write(source.join("probe"), b"x").is_ok() {
                return Err(format!(
                    "no read-only mount ({why}), and permissions do not stop this user"
                ));
            }
            (source.to_path_buf(), ReadOnly::Permissions(guard))
        }
    };
    if fs::write(view.join("probe"), b"x").is_ok() {
        return Err(format!("{} is still writable", view.display()));
    }
    Ok((view, how))
}

#[test]
fn works_on_a_read_only_mount() -> TestResult {
    let dir = tempfile::tempdir()?;
    let source = dir.path().join("data");
    fs::create_dir(&source)?;
    let path = source.join("stepflow.db");
    let (run, history) = saved_database(&path)?;
    // A second database whose writer is still there, so its `-wal` and `-shm` exist.
    let live = source.join("live.db");
    let mut writer = SqliteStore::open(&live)?;
    writer.create_run(&record("w", 1, RunStatus::Running))?;

    let (view, how) = match read_only_view(&source, &dir.path().join("ro")) {
        Ok(view) => view,
        Err(why) if std::env::var_os("CI").is_some() => {
            return Err(format!("cannot make a read-only directory: {why}").into());
        }
        Err(why) => {
            // Still the immutable and read-only paths, on a writable directory.
            eprintln!("skipped: a real read-only directory: {why}");
            let store = SqliteStore::open_read_only(&path)?;
            assert_eq!(store.run("r")?, run);
            return Ok(());
        }
    };
    let before = fs::read(view.join("stepflow.db"))?;
    let store = SqliteStore::open_read_only(&view.join("stepflow.db"))?;
    assert_eq!(store.run("r")?, run);
    assert_eq!(store.history("r")?, history);
    // Opening it for writing is a clear error (and no panic).
    let err = store_write_err(&view.join("stepflow.db"));
    assert!(err.contains("only for reading"), "{err}");
    drop(store);
    assert_untouched(&view.join("stepflow.db"), &before)?;

    if matches!(how, ReadOnly::Permissions(_)) {
        return Ok(()); // the writer below cannot write its own files either
    }
    // Through the WAL of a live writer, whose `-shm` this reader cannot write.
    let reader = SqliteStore::open_read_only(&view.join("live.db"))?;
    assert_eq!(reader.run("w")?.status, RunStatus::Running);
    writer.save_step(&step("w", RunStatus::Completed, &State::default()))?;
    assert_eq!(reader.run("w")?.status, RunStatus::Completed);
    assert_eq!(
        names(&view)?,
        ["live.db", "live.db-shm", "live.db-wal", "stepflow.db"]
    );
    Ok(())
}

/// The error of opening `path` for writing, as text ("" if it opened).
fn store_write_err(path: &Path) -> String {
    SqliteStore::open(path)
        .and_then(|mut store| store.set_status("r", RunStatus::Cancelled))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default()
}
