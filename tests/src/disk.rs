//! A small file system of the test's own (a tmpfs of a few megabytes mounted on a temporary
//! directory), which the test can fill up or remount read-only under a running server. Mounting
//! needs root, as CI has; elsewhere the tests that use it are skipped with a message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs; unmounted when dropped.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

fn mount(args: &[&str], target: &Path) -> bool {
    Command::new("mount")
        .args(args)
        .arg(target)
        .status()
        .is_ok_and(|status| status.success())
}

impl SmallDisk {
    /// A tmpfs of `megabytes` MiB, or `None` when this process may not mount (outside CI; in CI
    /// that is a failure).
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let size = format!("size={megabytes}m");
        if !mount(&["-t", "tmpfs", "-o", &size, "tmpfs"], dir.path()) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI runs as root and must be able to mount a tmpfs"
            );
            eprintln!("skipped: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Self { dir })
    }

    /// A path on the disk.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a file until the disk has no space left.
    pub fn fill(&self) {
        let mut filler = std::fs::File::create(self.path("filler")).expect("the filler file");
        let chunk = vec![0xA5_u8; 64 * 1024];
        loop {
            match filler.write_all(&chunk) {
                Ok(()) => {}
                Err(error) if error.raw_os_error() == Some(28) => break,
                Err(error) => panic!("filling the disk: {error}"),
            }
        }
        // Whatever a partial chunk left: a byte at a time, until not even one fits.
        while filler.write_all(&[0]).is_ok() {}
    }

    /// Removes what [`SmallDisk::fill`] wrote.
    pub fn free(&self) {
        std::fs::remove_file(self.path("filler")).expect("remove the filler file");
    }

    /// Remounts the disk read-only (`true`) or read-write (`false`), under whatever has files
    /// open on it.
    pub fn set_read_only(&self, read_only: bool) {
        let option = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        assert!(
            mount(&["-o", option], self.dir.path()),
            "mount -o {option} {}",
            self.dir.path().display()
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily, so a process that still has a file open cannot keep the mount alive.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
