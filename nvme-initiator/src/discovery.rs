//! Reading the discovery log page (LID 70h) the way libnvme does: the header, then the
//! entries at offset 1024, then the header again, retrying when GENCTR moved in between.

use crate::error::{Error, Result};
use crate::host::Controller;

/// One discovery log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryRecord {
    /// Transport type (3 = TCP).
    pub trtype: u8,
    /// Address family (1 IPv4, 2 IPv6).
    pub adrfam: u8,
    /// Subsystem type (2 NVM subsystem, 3 current discovery subsystem).
    pub subtype: u8,
    /// Port id.
    pub portid: u16,
    /// Controller id (0xFFFF: dynamic).
    pub cntlid: u16,
    /// Transport service id (the TCP port as text).
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address.
    pub traddr: String,
}

/// A consistent snapshot of the discovery log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryLogPage {
    /// Generation counter.
    pub genctr: u64,
    /// The records.
    pub records: Vec<DiscoveryRecord>,
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(b.get(..end).unwrap_or_default())
        .trim_end()
        .to_string()
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(o..o + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

/// Parses one 1024-byte record (None when short).
pub fn parse_record(r: &[u8]) -> Option<DiscoveryRecord> {
    let r = r.get(..1024)?;
    Some(DiscoveryRecord {
        trtype: r[0],
        adrfam: r[1],
        subtype: r[2],
        portid: u16::from_le_bytes([r[4], r[5]]),
        cntlid: u16::from_le_bytes([r[6], r[7]]),
        trsvcid: text(&r[32..64]),
        subnqn: text(&r[256..512]),
        traddr: text(&r[512..768]),
    })
}

impl Controller {
    /// Fetches the discovery log (a discovery controller must be connected).
    pub async fn discovery_log(&self) -> Result<DiscoveryLogPage> {
        for _ in 0..10 {
            let head = self.log_page(0x70, 0, 0, 1024).await?;
            let genctr = u64_at(&head, 0);
            let numrec = u64_at(&head, 8);
            if numrec > 1024 {
                return Err(Error::Unexpected(format!("{numrec} discovery records")));
            }
            let body = if numrec == 0 {
                bytes::Bytes::new()
            } else {
                self.log_page(0x70, 0, 1024, numrec as u32 * 1024).await?
            };
            let again = self.log_page(0x70, 0, 0, 1024).await?;
            if u64_at(&again, 0) != genctr {
                continue;
            }
            let records = body.chunks(1024).filter_map(parse_record).collect();
            return Ok(DiscoveryLogPage { genctr, records });
        }
        Err(Error::Unexpected("discovery log kept changing".into()))
    }
}
