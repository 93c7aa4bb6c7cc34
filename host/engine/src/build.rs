//! Runs the `build` commands a flow file declares for its plugins.

use std::path::Path;
use std::process::{Command, Stdio};

use stepflow_flowfile::FlowFile;

use crate::error::EngineError;
use crate::observer::Observer;

/// Runs each distinct `build` command once, in the flow file's directory (relative paths in a
/// flow file mean that directory). A command's output goes to stderr, so stdout carries only
/// what the front end prints.
pub(crate) fn build_plugins(
    file: &FlowFile,
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
        let status = Command::new("sh")
            .arg("-c")
            .arg(command)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(stderr_for_child())
            .status()
            .map_err(|e| failed(format!("could not start ({e})")))?;
        if !status.success() {
            return Err(failed(format!("failed ({status})")));
        }
        done.push(command);
    }
    Ok(())
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
