//! Harness for tests against real peers (libiscsi, qemu-img, the Linux kernel in a QEMU guest).
//!
//! The Linux kernel's initiators (open-iscsi, nvme-cli, dm-multipath) run only inside a guest on
//! these machines, so the harness builds a small guest from Debian packages ([`GuestImage`]),
//! boots it under QEMU for one shell script per test ([`Guest`]), and starts the target under test
//! on the host ([`TandemProcess`]). The guest reaches host port `P` on 127.0.0.1 at `10.0.2.2:P`
//! (exported to scripts as `$TANDEM_HOST`).
//!
//! ```no_run
//! use std::time::Duration;
//! use interop_tests::{free_tcp_port, Guest, TandemProcess};
//!
//! let port = free_tcp_port().unwrap();
//! let _tandem = TandemProcess::start(["--listen", &format!("127.0.0.1:{port}")], port,
//!     Duration::from_secs(30)).unwrap();
//! let out = Guest::builder()
//!     .env("PORT", port.to_string())
//!     .script("iscsiadm -m discovery -t st -p $TANDEM_HOST:$PORT")
//!     .timeout(Duration::from_secs(120))
//!     .run()
//!     .unwrap();
//! out.assert_success();
//! ```
//!
//! The image cache lives in `<target>/guest-cache` (override: `TANDEM_GUEST_CACHE`); missing host
//! tools (QEMU, kmod, binutils, cpio) are installed with apt-get on first use.

pub mod blktests;
pub mod cluster;
pub mod cpio;
pub mod error;
pub mod failover_guest;
pub mod guest_test;
pub mod host;
pub mod image;
pub mod init;
pub mod iscsi;
pub mod iscsi_guest;
pub mod kernel;
pub mod libs;
pub mod nvme_guest;
pub mod packages;
pub mod paths;
pub mod ports;
pub mod proxy;
pub mod qemu;
pub mod rendezvous;
pub mod tandem;

pub use error::{HarnessError, Result};
pub use host::ensure_host_tools;
pub use image::GuestImage;
pub use ports::{free_tcp_port, wait_for_port};
pub use qemu::{Guest, GuestBuilder, GuestOutcome, GuestStatus};
pub use rendezvous::Rendezvous;
pub use tandem::{tandem_bin, TandemProcess};

/// The address at which a guest reaches the host's 127.0.0.1 (QEMU user-mode networking).
pub const HOST_FROM_GUEST: &str = "10.0.2.2";
