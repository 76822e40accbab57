//! The guest's `/init` (busybox sh as PID 1) and the markers it prints on the console.
//!
//! The host learns the test script's exit status only from the serial console, so `/init` prints
//! it in a marker line that carries a per-run nonce: text the script itself prints (or a kernel
//! message) cannot be mistaken for it.

use crate::kernel::BOOT_MODULES;

/// Directory of the per-test archive in the guest: `script.sh`, `env`, `nonce`, extra files.
pub const TEST_DIR: &str = "/tandem";

/// Prefix of the line `/init` prints just before the test script starts: `<prefix> <nonce>`.
pub const START_MARKER: &str = "TANDEM-GUEST-SCRIPT-START";

/// Prefix of the line `/init` prints after the script: `<prefix> <nonce> <exit status>`.
pub const EXIT_MARKER: &str = "TANDEM-GUEST-SCRIPT-EXIT";

/// The `/init` script of the base image.
pub fn init_script() -> String {
    let modules = BOOT_MODULES.join(" ");
    format!(
        r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
export HOME=/root
# Where the host's 127.0.0.1 is reachable (QEMU user-mode networking).
export TANDEM_HOST=10.0.2.2
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
for m in {modules}; do
    modprobe "$m" || echo "init: modprobe $m failed"
done
# configfs is a module: mount it once loaded (nvmet and LIO need it).
mount -t configfs configfs /sys/kernel/config
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
mkdir -p /etc/iscsi /etc/nvme /run/lock/iscsi /var/lock /var/lib/iscsi /var/run
uuid=$(cat /proc/sys/kernel/random/uuid)
echo "InitiatorName=iqn.2025-01.test.tandem:guest-$uuid" > /etc/iscsi/initiatorname.iscsi
# QEMU's DMI UUID is all zeros, so `nvme gen-hostnqn` would give every guest the same NQN.
echo "nqn.2014-08.org.nvmexpress:uuid:$uuid" > /etc/nvme/hostnqn
echo "$uuid" > /etc/nvme/hostid
iscsid -f &
nonce=$(cat {dir}/nonce 2>/dev/null)
if [ -f {dir}/env ]; then . {dir}/env; fi
cd /tmp
echo "{start} $nonce"
if [ -f {dir}/script.sh ]; then
    sh {dir}/script.sh
    rc=$?
else
    echo "init: no {dir}/script.sh"
    rc=127
fi
echo "{exit} $nonce $rc"
sync
poweroff -f
"#,
        dir = TEST_DIR,
        start = START_MARKER,
        exit = EXIT_MARKER,
    )
}

/// Static files of the base image besides `/init`: minimal account and host databases.
pub const ETC_FILES: &[(&str, &str)] = &[
    ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
    ("etc/group", "root:x:0:\n"),
    ("etc/hosts", "127.0.0.1 localhost\n10.0.2.2 host\n"),
    ("etc/hostname", "tandem-guest\n"),
];
