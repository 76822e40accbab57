//! Get/Set Features (NVMe base 2.0 section 5.27) for the features hosts actually touch:
//! arbitration, power management, temperature threshold, error recovery, volatile write
//! cache, number of queues, async event configuration and keep-alive timer. Others are
//! answered with Invalid Field so the host falls back to defaults.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::status::Status;

/// One controller's Volatile Write Cache setting, shared by its admin queue (where Set Features
/// changes it) and its I/O queues (which, while it is off, make every write durable before it
/// completes, as if it carried FUA). The queues of one association are separate connections,
/// so the setting lives in memory they share; nothing here does I/O.
#[derive(Debug, Clone)]
pub struct WriteCache(Arc<AtomicBool>);

impl WriteCache {
    /// A new controller's setting: enabled, as Identify Controller's VWC field says.
    pub fn new() -> Self {
        WriteCache(Arc::new(AtomicBool::new(true)))
    }

    /// Whether the host leaves the volatile write cache on (writes may complete before they
    /// are durable; a Flush or FUA makes them so).
    pub fn enabled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Records the host's choice.
    pub(crate) fn set(&self, enabled: bool) {
        self.0.store(enabled, Ordering::Release);
    }
}

impl Default for WriteCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Two handles are equal when they are the same controller's setting.
impl PartialEq for WriteCache {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for WriteCache {}

/// Feature identifiers.
pub mod fid {
    /// Arbitration.
    pub const ARBITRATION: u8 = 0x01;
    /// Power Management.
    pub const POWER_MGMT: u8 = 0x02;
    /// Temperature Threshold.
    pub const TEMP_THRESHOLD: u8 = 0x04;
    /// Error Recovery.
    pub const ERROR_RECOVERY: u8 = 0x05;
    /// Volatile Write Cache.
    pub const VOLATILE_WC: u8 = 0x06;
    /// Number of Queues.
    pub const NUM_QUEUES: u8 = 0x07;
    /// Write Atomicity Normal.
    pub const WRITE_ATOMIC: u8 = 0x0A;
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT: u8 = 0x0B;
    /// Keep Alive Timer.
    pub const KATO: u8 = 0x0F;
    /// Reservation Notification Mask (per namespace; kept by the controller).
    pub const RESV_NOTIF_MASK: u8 = 0x82;
}

/// Default over-temperature threshold in Kelvin (70 °C).
pub const DEFAULT_OVER_TEMP: u16 = 343;

/// Current feature values of one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Features {
    /// Arbitration dword.
    pub arbitration: u32,
    /// Over-temperature threshold (Kelvin).
    pub temp_over: u16,
    /// Under-temperature threshold (Kelvin).
    pub temp_under: u16,
    /// Error recovery dword.
    pub error_recovery: u32,
    /// Volatile write cache enabled.
    pub write_cache: bool,
    /// Asynchronous event configuration (enabled notice bits).
    pub async_events: u32,
    /// Keep-alive timeout in milliseconds (0: disabled).
    pub kato_ms: u32,
    /// Write atomicity normal dword.
    pub write_atomic: u32,
}

impl Default for Features {
    fn default() -> Self {
        Features {
            arbitration: 0,
            temp_over: DEFAULT_OVER_TEMP,
            temp_under: 0,
            error_recovery: 0,
            write_cache: true,
            async_events: 0,
            kato_ms: 0,
            write_atomic: 0,
        }
    }
}

/// A Set Features side effect the controller must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureEffect {
    /// Nothing beyond storing the value.
    None,
    /// The keep-alive timeout changed (milliseconds, 0 disables).
    Kato(u32),
}

fn temp_select(cdw11: u32) -> Result<bool, Status> {
    let tmpsel = (cdw11 >> 16) & 0xF;
    let thsel = (cdw11 >> 20) & 0x3;
    if tmpsel != 0 || thsel > 1 {
        return Err(Status::INVALID_FIELD.dnr());
    }
    Ok(thsel == 1)
}

impl Features {
    /// Get Features: `sel` is CDW10 bits 10:8. Returns CQE DW0.
    pub fn get(&self, fid_value: u8, cdw11: u32, sel: u8, io_queues: u16) -> Result<u32, Status> {
        let current = match fid_value {
            fid::ARBITRATION => self.arbitration,
            fid::POWER_MGMT => 0,
            fid::TEMP_THRESHOLD => {
                if temp_select(cdw11)? {
                    u32::from(self.temp_under)
                } else {
                    u32::from(self.temp_over)
                }
            }
            fid::ERROR_RECOVERY => self.error_recovery,
            fid::VOLATILE_WC => u32::from(self.write_cache),
            fid::NUM_QUEUES => num_queues_dw0(io_queues),
            fid::WRITE_ATOMIC => self.write_atomic,
            fid::ASYNC_EVENT => self.async_events,
            fid::KATO => self.kato_ms,
            _ => return Err(Status::INVALID_FIELD.dnr()),
        };
        Ok(match sel {
            0 | 2 => current,
            1 => Features::default().get(fid_value, cdw11, 0, io_queues)?,
            3 => {
                if matches!(fid_value, fid::NUM_QUEUES) {
                    0
                } else {
                    1 << 2 // changeable, not saveable, not namespace specific
                }
            }
            _ => return Err(Status::INVALID_FIELD.dnr()),
        })
    }

    /// Set Features. `save` is CDW10 bit 31; `supported_aens` masks the event config.
    pub fn set(
        &mut self,
        fid_value: u8,
        cdw11: u32,
        save: bool,
        supported_aens: u32,
        io_queues: u16,
    ) -> Result<(u32, FeatureEffect), Status> {
        if save {
            return Err(Status::FEATURE_NOT_SAVEABLE.dnr());
        }
        let mut effect = FeatureEffect::None;
        let dw0 = match fid_value {
            fid::ARBITRATION => {
                self.arbitration = cdw11;
                0
            }
            fid::POWER_MGMT => {
                if cdw11 & 0x1F != 0 {
                    return Err(Status::INVALID_FIELD.dnr());
                }
                0
            }
            fid::TEMP_THRESHOLD => {
                let t = cdw11 as u16;
                if temp_select(cdw11)? {
                    self.temp_under = t;
                } else {
                    self.temp_over = t;
                }
                0
            }
            fid::ERROR_RECOVERY => {
                self.error_recovery = cdw11 & 0xFFFF;
                0
            }
            fid::VOLATILE_WC => {
                self.write_cache = cdw11 & 1 != 0;
                0
            }
            fid::NUM_QUEUES => {
                if cdw11 & 0xFFFF == 0xFFFF || cdw11 >> 16 == 0xFFFF {
                    return Err(Status::INVALID_FIELD.dnr());
                }
                num_queues_dw0(io_queues)
            }
            fid::WRITE_ATOMIC => {
                self.write_atomic = cdw11 & 1;
                0
            }
            fid::ASYNC_EVENT => {
                self.async_events = cdw11 & supported_aens;
                0
            }
            fid::KATO => {
                self.kato_ms = cdw11;
                effect = FeatureEffect::Kato(cdw11);
                0
            }
            _ => return Err(Status::INVALID_FIELD.dnr()),
        };
        Ok((dw0, effect))
    }
}

/// Number of Queues result: NSQA in bits 15:0 and NCQA in bits 31:16, both 0's based.
pub fn num_queues_dw0(io_queues: u16) -> u32 {
    let n = u32::from(io_queues.max(1) - 1);
    n | (n << 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_of_queues_is_zeros_based() {
        let mut f = Features::default();
        let (dw0, _) = f.set(fid::NUM_QUEUES, 0x003F_003F, false, 0, 8).unwrap();
        assert_eq!(dw0, 0x0007_0007);
        assert!(f.set(fid::NUM_QUEUES, 0xFFFF, false, 0, 8).is_err());
    }

    #[test]
    fn aen_config_masked_and_kato_effect() {
        let mut f = Features::default();
        f.set(fid::ASYNC_EVENT, 0xFFFF_FFFF, false, 0x900, 1)
            .unwrap();
        assert_eq!(f.get(fid::ASYNC_EVENT, 0, 0, 1).unwrap(), 0x900);
        let (_, e) = f.set(fid::KATO, 10_000, false, 0, 1).unwrap();
        assert_eq!(e, FeatureEffect::Kato(10_000));
        assert_eq!(f.get(fid::KATO, 0, 0, 1).unwrap(), 10_000);
        assert_eq!(
            f.set(fid::KATO, 1, true, 0, 1),
            Err(Status::FEATURE_NOT_SAVEABLE.dnr())
        );
    }

    #[test]
    fn temperature_threshold_selectors() {
        let mut f = Features::default();
        assert_eq!(f.get(fid::TEMP_THRESHOLD, 0, 0, 1).unwrap(), 343);
        f.set(fid::TEMP_THRESHOLD, (1 << 20) | 250, false, 0, 1)
            .unwrap();
        assert_eq!(f.get(fid::TEMP_THRESHOLD, 1 << 20, 0, 1).unwrap(), 250);
        assert!(f.get(fid::TEMP_THRESHOLD, 3 << 16, 0, 1).is_err());
        assert!(f.get(0x42, 0, 0, 1).is_err());
    }
}
