//! blktests (the Linux block layer's test suite) in the guest: where its source tree comes from,
//! the script that runs its nvme group against a target, and reading the results back.
//!
//! blktests is not packaged by Debian, so its tree is taken from `$TANDEM_BLKTESTS_SRC` (a
//! checkout) or from the guest cache (`<cache>/blktests-<commit>`), where a `git clone` of the
//! upstream repository at [`BLKTESTS_COMMIT`] puts it on first use. Only its shell parts go into
//! the guest (the per-test archive): the nvme group needs none of its C helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{io_err, HarnessError, Result};
use crate::host::run;
use crate::paths::cache_dir;

/// Environment variable naming a blktests source tree to use instead of the cached clone.
pub const BLKTESTS_SRC_ENV: &str = "TANDEM_BLKTESTS_SRC";

/// The blktests commit the expected results were recorded with (2025-05-15).
pub const BLKTESTS_COMMIT: &str = "613b8377e4d30fb5b0e0e0882885b3bf103b2c7c";

/// Where the clone comes from.
pub const BLKTESTS_REPO: &str = "https://github.com/osandov/blktests";

/// Where the tree is in the guest.
pub const GUEST_TREE: &str = "/tandem/blktests";

/// The blktests tree: `$TANDEM_BLKTESTS_SRC`, else the cached clone, cloned when missing.
pub fn source_tree() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BLKTESTS_SRC_ENV) {
        let dir = PathBuf::from(dir);
        return check_tree(&dir).map(|_| dir);
    }
    let cache = cache_dir();
    let dir = cache.join(format!("blktests-{}", &BLKTESTS_COMMIT[..12]));
    if check_tree(&dir).is_ok() {
        return Ok(dir);
    }
    fs::create_dir_all(&cache).map_err(io_err(format!("creating {}", cache.display())))?;
    let tmp = tempfile::Builder::new()
        .prefix("blktests-clone-")
        .tempdir_in(&cache)
        .map_err(io_err("creating a clone directory"))?;
    let clone = tmp.path().join("blktests");
    eprintln!("interop-tests: cloning blktests {BLKTESTS_COMMIT} from {BLKTESTS_REPO}");
    run(Command::new("git")
        .args(["clone", "--quiet", BLKTESTS_REPO])
        .arg(&clone))
    .map_err(|e| {
        HarnessError::Image(format!(
            "blktests is not packaged by Debian and cloning it failed ({e}); \
             point {BLKTESTS_SRC_ENV} at a blktests checkout (commit {BLKTESTS_COMMIT})"
        ))
    })?;
    run(Command::new("git")
        .arg("-C")
        .arg(&clone)
        .args(["checkout", "--quiet", BLKTESTS_COMMIT]))?;
    check_tree(&clone)?;
    if dir.exists() {
        fs::remove_dir_all(&dir).map_err(io_err("removing a broken blktests tree"))?;
    }
    fs::rename(&clone, &dir).map_err(io_err("installing the blktests tree"))?;
    Ok(dir)
}

fn check_tree(dir: &Path) -> Result<()> {
    for f in ["check", "common/nvme", "tests/nvme/rc"] {
        if !dir.join(f).is_file() {
            return Err(HarnessError::Image(format!(
                "{} is not a blktests tree (no {f})",
                dir.display()
            )));
        }
    }
    Ok(())
}

/// The files of the tree the guest needs (`check`, `common/`, `tests/`, ...; not `.git`, the C
/// sources or the documentation), as (path relative to the tree, contents, mode).
pub fn guest_files(tree: &Path) -> Result<Vec<(String, Vec<u8>, u32)>> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = fs::read_dir(&dir).map_err(io_err(format!("listing {}", dir.display())))?;
        for e in entries {
            let e = e.map_err(io_err("reading the blktests tree"))?;
            let path = e.path();
            let rel = path
                .strip_prefix(tree)
                .map_err(|_| HarnessError::Image("a path outside the tree".into()))?
                .to_string_lossy()
                .into_owned();
            if [".git", "src", "Documentation", "results"].contains(&rel.as_str()) {
                continue;
            }
            let meta = e.metadata().map_err(io_err(format!("reading {rel}")))?;
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let data = fs::read(&path).map_err(io_err(format!("reading {rel}")))?;
                out.push((rel, data, meta.permissions().mode() & 0o777));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// One target blktests runs against in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlkTarget {
    /// The guest kernel's own nvmet-tcp (blktests' default set-up, loop-back in the guest).
    Nvmet,
    /// Tandem on the host, driven through `scripts/blktests-target-control`.
    Tandem,
}

impl BlkTarget {
    /// Its name in result lines.
    pub fn name(self) -> &'static str {
        match self {
            BlkTarget::Nvmet => "nvmet",
            BlkTarget::Tandem => "tandem",
        }
    }
}

/// Prefix of the lines the guest script prints with one test's outcome:
/// `<prefix> <target> <test> <passed|failed|not run>`.
pub const RESULT_MARKER: &str = "BLKTESTS-RESULT";

/// The guest script: runs `tests` (e.g. `nvme/004`) under blktests' `check` against each of
/// `targets` in turn, printing [`RESULT_MARKER`] lines, the skip reasons and, for failures,
/// the output difference and the end of the test's log.
pub fn guest_script(targets: &[BlkTarget], tests: &[&str]) -> String {
    let names: Vec<&str> = targets.iter().map(|t| t.name()).collect();
    format!(
        r#"#!/bin/sh
exec bash -s <<'BLKTESTS_EOF'
set -u
cd {tree}
# bash's process substitution needs /dev/fd, which devtmpfs does not provide.
[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
for i in 0:stdin 1:stdout 2:stderr; do
    [ -e "/dev/${{i#*:}}" ] || ln -s "/proc/self/fd/${{i%%:*}}" "/dev/${{i#*:}}"
done
# check's sysfs and debugfs probes; the image does not mount debugfs.
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
# blktests reads the running kernel's configuration here (the image keeps it in /boot).
ls /boot/config-* >/dev/null 2>&1 || echo "blktests: no kernel config in /boot"
# The results and each test's TMPDIR (where nvmet's file-backed namespaces live) on ext4 on a
# RAM disk: nvmet's file back end opens with O_DIRECT, which tmpfs refuses.
results=/tmp
if modprobe brd rd_nr=1 rd_size=1048576 && mkfs.ext4 -q /dev/ram0 && mkdir -p /blk &&
    mount /dev/ram0 /blk; then
    results=/blk
else
    echo "blktests: no ext4 RAM disk; file-backed nvmet namespaces will fail"
fi
for target in {targets}; do
    out=$results/results-$target
    if [ "$target" = tandem ]; then
        export NVME_TARGET_CONTROL=/tandem/blktests-target-control
    else
        unset NVME_TARGET_CONTROL
    fi
    echo "BLKTESTS-RUN $target"
    # Namespaces on loop devices by default (NVMET_BLKDEV_TYPES=device); tests that ask for
    # the file back end get it on the RAM disk.
    # Through a pipe (not the console's tty: check then prints plain lines, no tput), and
    # each test's outcome as it comes, so a run cut short still tells what it saw.
    NVMET_TRTYPES=tcp NVMET_BLKDEV_TYPES=device NVME_IMG_SIZE=${{BLK_IMG_SIZE:-1G}} \
        ./check -o "$out" {tests} 2>&1 | while IFS= read -r line; do
            echo "$line"
            case "$line" in
            nvme/*\[passed\]* | nvme/*\[failed\]* | nvme/*\[not\ run\]*)
                t=${{line%% *}}
                status=${{line##*[}}
                echo "{marker} $target $t ${{status%%]*}}"
                ;;
            esac
        done
    for bad in $(find "$out" -name '*.out.bad' 2>/dev/null); do
        t=${{bad#$out/*/}}
        t=${{t%.out.bad}}
        echo "--- $target $t: diff of tests/$t.out and the output"
        diff "tests/$t.out" "$bad"
        echo "--- $target $t: the end of its log"
        tail -n 40 "${{bad%.out.bad}}.full" 2>/dev/null
    done
done
exit 0
BLKTESTS_EOF
"#,
        tree = GUEST_TREE,
        targets = names.join(" "),
        tests = tests.join(" "),
        marker = RESULT_MARKER,
    )
}

/// One test's outcome against one target, as the guest reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkResult {
    /// `nvmet` or `tandem`.
    pub target: String,
    /// The test, e.g. `nvme/004`.
    pub test: String,
    /// `passed`, `failed` or `not run`.
    pub status: String,
}

/// The [`RESULT_MARKER`] lines of a guest console.
pub fn parse_results(console: &str) -> Vec<BlkResult> {
    console
        .lines()
        .filter_map(|l| {
            let rest = l.trim_end().split_once(RESULT_MARKER)?.1.trim();
            let mut parts = rest.splitn(3, ' ');
            Some(BlkResult {
                target: parts.next()?.to_string(),
                test: parts.next()?.to_string(),
                status: parts.next()?.to_string(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_result_lines_among_console_noise() {
        let console = "[guest] BLKTESTS-RESULT nvmet nvme/004 passed\n\
                       nvme/004 (tr=tcp bd=file) (x) [passed]\n\
                       [guest] BLKTESTS-RESULT tandem nvme/005 not run\r\n";
        let r = parse_results(console);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[1],
            BlkResult {
                target: "tandem".into(),
                test: "nvme/005".into(),
                status: "not run".into()
            }
        );
    }
}
