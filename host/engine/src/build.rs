//! Runs the `build` commands a flow file declares for its plugins: each in the flow file's
//! directory, in a process group of its own, with a time limit, and stopped together with
//! everything it started when the limit passes or a stop is requested.

use std::ffi::OsString;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group, test_kill_process_group};
use stepflow_flowfile::FlowFile;
use tokio::process::Command;

use crate::error::EngineError;
use crate::observer::Observer;
use crate::stop::StopRequests;

/// How long a build command may run unless the caller says otherwise.
pub const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How long a build command gets to exit after SIGTERM before its group is killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Runs each distinct `build` command once, in the flow file's directory (relative paths in a
/// flow file mean that directory). A command's output goes to stderr, so stdout carries only
/// what the front end prints.
pub(crate) async fn build_plugins(
    file: &FlowFile,
    env: &[(String, OsString)],
    timeout: Duration,
    stop: &StopRequests,
    observer: &mut dyn Observer,
) -> Result<(), EngineError> {
    let dir = flow_dir(&file.path);
    let mut done: Vec<&str> = Vec::new();
    for decl in file.plugins.values() {
        let Some(command) = decl.build.as_deref() else {
            continue;
        };
        if done.contains(&command) {
            continue;
        }
        observer.building(&decl.name, command);
        let failed = |detail: String| EngineError::Build {
            plugin: decl.name.clone(),
            command: command.to_string(),
            detail,
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stderr_for_child())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("could not start ({e})")))?;
        let group = child.id().and_then(|id| Pid::from_raw(id.try_into().ok()?));
        let status = tokio::select! {
            status = child.wait() => status.map_err(|e| failed(format!("could not be waited for ({e})")))?,
            _ = tokio::time::sleep(timeout) => {
                stop_group(group, &mut child).await;
                return Err(failed(format!(
                    "did not finish within {} s and was stopped with everything it started",
                    timeout.as_secs()
                )));
            }
            _ = stop.reached(1) => {
                stop_group(group, &mut child).await;
                return Err(EngineError::BuildStopped {
                    plugin: decl.name.clone(),
                    command: command.to_string(),
                });
            }
        };
        if !status.success() {
            return Err(failed(format!("failed ({status})")));
        }
        done.push(command);
    }
    Ok(())
}

/// SIGTERM to the command's whole process group, then SIGKILL if it has not exited in time.
async fn stop_group(group: Option<Pid>, child: &mut tokio::process::Child) {
    let Some(group) = group else {
        let _ = child.kill().await;
        return;
    };
    let _ = kill_process_group(group, Signal::TERM);
    let _ = tokio::time::timeout(TERM_GRACE, child.wait()).await;
    // Whatever is left of the group (the shell, or children that ignored SIGTERM) is killed,
    // and the build is over only once the group is gone, so nothing it started outlives it.
    let _ = kill_process_group(group, Signal::KILL);
    let _ = child.wait().await;
    let gone = async {
        while test_kill_process_group(group).is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    if tokio::time::timeout(TERM_GRACE, gone).await.is_err() {
        tracing::warn!("processes of a stopped build command are still exiting");
    }
}

/// The directory of a flow file; `.` for a bare file name (whose parent is the empty path,
/// which no process can change into).
pub(crate) fn flow_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// The child's stdout joined to our stderr; our stdout if stderr cannot be shared.
fn stderr_for_child() -> Stdio {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::inherit(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_file_name_builds_in_the_current_directory() {
        assert_eq!(flow_dir(Path::new("flow.yaml")), Path::new("."));
        assert_eq!(flow_dir(Path::new("a/flow.yaml")), Path::new("a"));
        assert_eq!(flow_dir(Path::new("/flow.yaml")), Path::new("/"));
    }
}
