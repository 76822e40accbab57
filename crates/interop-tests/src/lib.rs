//! Harness for tests against real peers (libiscsi, qemu-img, the Linux kernel in a QEMU guest).
