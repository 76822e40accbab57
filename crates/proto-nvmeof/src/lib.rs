//! Sans-IO NVMe/TCP target protocol: PDUs, fabrics, admin and I/O commands, discovery and ANA.
//!
//! Built by the NVMe/TCP issue; only the crate exists so far.
