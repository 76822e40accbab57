//! Streaming PDU decoder: from a byte buffer that may hold part of a PDU, one PDU, or more.
//!
//! The 8-byte common header is validated (type, HLEN, PLEN limit, PDO, digest flags) before
//! the decoder asks for the rest, so a hostile PLEN is refused before anything is buffered
//! or allocated for it.

use bytes::Bytes;
use nom::bytes::complete::take;
use nom::number::complete::{le_u16, le_u32, le_u8};
use nom::Parser;

use super::error::PduError;
use super::{
    crc32c, flags, pdu_type, CapsuleCmd, DataPdu, Digests, IcReq, IcResp, Pdu, R2t, TermReq,
    CAPSULE_CMD_HLEN, CAPSULE_RESP_HLEN, COMMON_HEADER_LEN, DATA_HLEN, DIGEST_LEN, IC_PDU_LEN,
    TERM_REQ_HLEN, TERM_REQ_MAX_PLEN,
};
use crate::cqe::Cqe;
use crate::sqe::Sqe;

/// What the decoder needs to know about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecoderConfig {
    /// Digests negotiated by ICReq/ICResp (none before that).
    pub digests: Digests,
    /// Largest PLEN accepted; larger PDUs are refused before buffering.
    pub max_plen: u32,
}

/// Outcome of one decode attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer holds less than one PDU; at least `total` bytes are needed in all.
    NeedMore {
        /// Minimum buffer length for the next attempt to make progress.
        total: usize,
    },
    /// One PDU decoded from the first `consumed` bytes.
    Pdu {
        /// The PDU.
        pdu: Pdu,
        /// Bytes it occupied.
        consumed: usize,
    },
}

type NomErr<'a> = nom::Err<nom::error::Error<&'a [u8]>>;

/// Layout of a PDU derived from its common header.
struct Layout {
    ty: u8,
    flags: u8,
    hlen: usize,
    plen: usize,
    hdgst: bool,
    /// Data range within the PDU (empty when the PDU carries none).
    data: (usize, usize),
    ddgst: bool,
}

fn expected_hlen(ty: u8) -> Result<usize, PduError> {
    Ok(match ty {
        pdu_type::IC_REQ | pdu_type::IC_RESP => IC_PDU_LEN,
        pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => TERM_REQ_HLEN,
        pdu_type::CAPSULE_CMD => CAPSULE_CMD_HLEN,
        pdu_type::CAPSULE_RESP => CAPSULE_RESP_HLEN,
        pdu_type::H2C_DATA | pdu_type::C2H_DATA | pdu_type::R2T => DATA_HLEN,
        other => return Err(PduError::UnknownType(other)),
    })
}

fn layout(hdr: &[u8; COMMON_HEADER_LEN], cfg: &DecoderConfig) -> Result<Layout, PduError> {
    let [ty, fl, hlen, pdo, p0, p1, p2, p3] = *hdr;
    let plen32 = u32::from_le_bytes([p0, p1, p2, p3]);
    let hlen_exp = expected_hlen(ty)?;
    if usize::from(hlen) != hlen_exp {
        return Err(PduError::BadHlen { pdu_type: ty, hlen });
    }
    if plen32 > cfg.max_plen {
        return Err(PduError::PlenTooLarge {
            plen: plen32,
            max: cfg.max_plen,
        });
    }
    let plen = plen32 as usize;
    let bad_plen = PduError::BadPlen {
        pdu_type: ty,
        plen: plen32,
    };
    let bad_pdo = PduError::BadPdo { pdu_type: ty, pdo };
    let hlen = hlen_exp;
    match ty {
        pdu_type::IC_REQ | pdu_type::IC_RESP => {
            if plen != IC_PDU_LEN {
                return Err(bad_plen);
            }
            return Ok(Layout {
                ty,
                flags: fl,
                hlen,
                plen,
                hdgst: false,
                data: (hlen, hlen),
                ddgst: false,
            });
        }
        pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => {
            // Terminate requests never carry digests.
            if plen < hlen {
                return Err(bad_plen);
            }
            if plen > TERM_REQ_MAX_PLEN {
                return Err(PduError::TermReqTooLong(plen32));
            }
            return Ok(Layout {
                ty,
                flags: fl,
                hlen,
                plen,
                hdgst: false,
                data: (hlen, plen),
                ddgst: false,
            });
        }
        _ => {}
    }
    let hdgst = fl & flags::HDGSTF != 0;
    let ddgst = fl & flags::DDGSTF != 0;
    if hdgst != cfg.digests.header || (ddgst && !cfg.digests.data) {
        return Err(PduError::DigestFlags { flags: fl });
    }
    let header_end = hlen + if hdgst { DIGEST_LEN } else { 0 };
    let carries_data = matches!(
        ty,
        pdu_type::CAPSULE_CMD | pdu_type::H2C_DATA | pdu_type::C2H_DATA
    );
    if !carries_data || pdo == 0 {
        if pdo != 0 {
            return Err(bad_pdo);
        }
        if ddgst {
            return Err(PduError::DigestFlags { flags: fl });
        }
        if plen != header_end {
            return Err(bad_plen);
        }
        return Ok(Layout {
            ty,
            flags: fl,
            hlen,
            plen,
            hdgst,
            data: (header_end, header_end),
            ddgst: false,
        });
    }
    let pdo = usize::from(pdo);
    if pdo < header_end {
        return Err(bad_pdo);
    }
    if ddgst != cfg.digests.data {
        return Err(PduError::DigestFlags { flags: fl });
    }
    let data_end = plen
        .checked_sub(if ddgst { DIGEST_LEN } else { 0 })
        .ok_or(bad_plen.clone())?;
    if data_end < pdo {
        return Err(bad_plen);
    }
    Ok(Layout {
        ty,
        flags: fl,
        hlen,
        plen,
        hdgst,
        data: (pdo, data_end),
        ddgst,
    })
}

fn le32(b: &[u8], off: usize) -> u32 {
    match b.get(off..off + 4) {
        Some(s) => u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
        None => 0,
    }
}

/// Decodes the first PDU in `buf`.
pub fn decode(buf: &[u8], cfg: &DecoderConfig) -> Result<Decoded, PduError> {
    let Some(hdr) = buf.first_chunk::<COMMON_HEADER_LEN>() else {
        return Ok(Decoded::NeedMore {
            total: COMMON_HEADER_LEN,
        });
    };
    let l = layout(hdr, cfg)?;
    let Some(pdu_bytes) = buf.get(..l.plen) else {
        return Ok(Decoded::NeedMore { total: l.plen });
    };
    let header = pdu_bytes.get(..l.hlen).unwrap_or_default();
    if l.hdgst {
        let expected = crc32c(header);
        let received = le32(pdu_bytes, l.hlen);
        if expected != received {
            return Err(PduError::HeaderDigest { expected, received });
        }
    }
    let data = pdu_bytes.get(l.data.0..l.data.1).unwrap_or_default();
    if l.ddgst {
        let received = le32(pdu_bytes, l.data.1);
        if crc32c(data) != received {
            let cid = match l.ty {
                pdu_type::CAPSULE_CMD => u16::from_le_bytes([
                    header.get(10).copied().unwrap_or(0),
                    header.get(11).copied().unwrap_or(0),
                ]),
                _ => u16::from_le_bytes([
                    header.get(8).copied().unwrap_or(0),
                    header.get(9).copied().unwrap_or(0),
                ]),
            };
            return Err(PduError::DataDigest {
                cid,
                consumed: l.plen,
            });
        }
    }
    let body = header.get(COMMON_HEADER_LEN..).unwrap_or_default();
    let pdu = parse_body(&l, body, data).map_err(|_: NomErr<'_>| PduError::BadHlen {
        pdu_type: l.ty,
        hlen: l.hlen as u8,
    })??;
    Ok(Decoded::Pdu {
        pdu,
        consumed: l.plen,
    })
}

/// Parses the type-specific header. The outer error is a nom failure (cannot happen once
/// HLEN was checked), the inner one a semantic error.
#[allow(clippy::type_complexity)]
fn parse_body<'a>(
    l: &Layout,
    body: &'a [u8],
    data: &[u8],
) -> Result<Result<Pdu, PduError>, NomErr<'a>> {
    let data_bytes = || Bytes::copy_from_slice(data);
    Ok(Ok(match l.ty {
        pdu_type::IC_REQ | pdu_type::IC_RESP => {
            let (_, (pfv, align, dgst, max)) = (le_u16, le_u8, le_u8, le_u32).parse(body)?;
            let digests = Digests::from_byte(dgst);
            if l.ty == pdu_type::IC_REQ {
                Pdu::IcReq(IcReq {
                    pfv,
                    hpda: align,
                    digests,
                    maxr2t: max,
                })
            } else {
                Pdu::IcResp(IcResp {
                    pfv,
                    cpda: align,
                    digests,
                    maxh2cdata: max,
                })
            }
        }
        pdu_type::H2C_TERM_REQ | pdu_type::C2H_TERM_REQ => {
            let (_, (fes, fei)) = (le_u16, le_u32).parse(body)?;
            let t = TermReq {
                fes,
                fei,
                data: data_bytes(),
            };
            if l.ty == pdu_type::H2C_TERM_REQ {
                Pdu::H2cTermReq(t)
            } else {
                Pdu::C2hTermReq(t)
            }
        }
        pdu_type::CAPSULE_CMD => {
            let (_, raw) = take(64usize).parse(body)?;
            let Some(sqe) = Sqe::from_slice(raw) else {
                return Ok(Err(PduError::BadHlen {
                    pdu_type: l.ty,
                    hlen: l.hlen as u8,
                }));
            };
            Pdu::CapsuleCmd(CapsuleCmd {
                sqe,
                data: data_bytes(),
            })
        }
        pdu_type::CAPSULE_RESP => {
            let (_, raw) = take(16usize).parse(body)?;
            match Cqe::from_slice(raw) {
                Some(cqe) => Pdu::CapsuleResp(cqe),
                None => {
                    return Ok(Err(PduError::BadHlen {
                        pdu_type: l.ty,
                        hlen: l.hlen as u8,
                    }))
                }
            }
        }
        pdu_type::R2T => {
            let (_, (cccid, ttag, offset, length)) =
                (le_u16, le_u16, le_u32, le_u32).parse(body)?;
            Pdu::R2t(R2t {
                cccid,
                ttag,
                offset,
                length,
            })
        }
        _ => {
            let (_, (cccid, ttag, offset, datal)) = (le_u16, le_u16, le_u32, le_u32).parse(body)?;
            if datal as usize != data.len() {
                return Ok(Err(PduError::DataLength {
                    datal,
                    actual: data.len(),
                }));
            }
            let d = DataPdu {
                cccid,
                ttag,
                offset,
                last: l.flags & flags::LAST_PDU != 0,
                success: l.flags & flags::SUCCESS != 0,
                data: data_bytes(),
            };
            if l.ty == pdu_type::H2C_DATA {
                Pdu::H2cData(d)
            } else {
                Pdu::C2hData(d)
            }
        }
    }))
}
