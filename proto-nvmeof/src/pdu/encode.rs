//! PDU encoders for both directions (the target uses the controller-to-host ones; a Rust
//! initiator and the tests use the host-to-controller ones).

use super::{
    crc32c, flags, CapsuleCmd, DataPdu, Digests, Pdu, CAPSULE_CMD_HLEN, CAPSULE_RESP_HLEN,
    DATA_HLEN, DIGEST_LEN, IC_PDU_LEN, TERM_REQ_HLEN,
};

/// Connection parameters that shape encoded PDUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Negotiated digests.
    pub digests: Digests,
    /// Receiver's PDU data alignment in dwords, 0's based (HPDA for the controller, CPDA
    /// for the host): data starts at a PDO that is a multiple of `(pda + 1) * 4`.
    pub pda: u8,
}

/// Encodes `pdu` into a new buffer.
pub fn encode_to_vec(pdu: &Pdu, opts: &EncodeOptions) -> Vec<u8> {
    let mut v = Vec::new();
    encode(pdu, opts, &mut v);
    v
}

fn header(out: &mut Vec<u8>, ty: u8, fl: u8, hlen: usize, pdo: usize, plen: usize) {
    out.extend_from_slice(&[ty, fl, hlen as u8, pdo as u8]);
    out.extend_from_slice(&(plen as u32).to_le_bytes());
}

/// Appends the encoding of `pdu` to `out`.
///
/// Terminate requests carry at most 128 bytes of data; longer data is cut. Data PDUs and
/// capsules longer than `u32::MAX` cannot be represented and are the caller's bug.
pub fn encode(pdu: &Pdu, opts: &EncodeOptions, out: &mut Vec<u8>) {
    let ty = pdu.type_code();
    match pdu {
        Pdu::IcReq(r) => {
            header(out, ty, 0, IC_PDU_LEN, 0, IC_PDU_LEN);
            out.extend_from_slice(&r.pfv.to_le_bytes());
            out.extend_from_slice(&[r.hpda, r.digests.to_byte()]);
            out.extend_from_slice(&r.maxr2t.to_le_bytes());
            out.resize(out.len() + 112, 0);
        }
        Pdu::IcResp(r) => {
            header(out, ty, 0, IC_PDU_LEN, 0, IC_PDU_LEN);
            out.extend_from_slice(&r.pfv.to_le_bytes());
            out.extend_from_slice(&[r.cpda, r.digests.to_byte()]);
            out.extend_from_slice(&r.maxh2cdata.to_le_bytes());
            out.resize(out.len() + 112, 0);
        }
        Pdu::H2cTermReq(t) | Pdu::C2hTermReq(t) => {
            let data = t.data.get(..t.data.len().min(128)).unwrap_or_default();
            header(out, ty, 0, TERM_REQ_HLEN, 0, TERM_REQ_HLEN + data.len());
            out.extend_from_slice(&t.fes.to_le_bytes());
            out.extend_from_slice(&t.fei.to_le_bytes());
            out.resize(out.len() + 10, 0);
            out.extend_from_slice(data);
        }
        Pdu::CapsuleCmd(CapsuleCmd { sqe, data }) => {
            with_data(out, ty, 0, CAPSULE_CMD_HLEN, &sqe.0, data, opts);
        }
        Pdu::CapsuleResp(cqe) => {
            with_data(out, ty, 0, CAPSULE_RESP_HLEN, &cqe.to_bytes(), &[], opts);
        }
        Pdu::H2cData(d) | Pdu::C2hData(d) => {
            let mut fl = 0;
            if d.last {
                fl |= flags::LAST_PDU;
            }
            if d.success {
                fl |= flags::SUCCESS;
            }
            with_data(out, ty, fl, DATA_HLEN, &data_body(d), &d.data, opts);
        }
        Pdu::R2t(r) => {
            let mut body = Vec::with_capacity(16);
            body.extend_from_slice(&r.cccid.to_le_bytes());
            body.extend_from_slice(&r.ttag.to_le_bytes());
            body.extend_from_slice(&r.offset.to_le_bytes());
            body.extend_from_slice(&r.length.to_le_bytes());
            body.extend_from_slice(&[0; 4]);
            with_data(out, ty, 0, DATA_HLEN, &body, &[], opts);
        }
    }
}

fn data_body(d: &DataPdu) -> Vec<u8> {
    let mut body = Vec::with_capacity(16);
    body.extend_from_slice(&d.cccid.to_le_bytes());
    body.extend_from_slice(&d.ttag.to_le_bytes());
    body.extend_from_slice(&d.offset.to_le_bytes());
    body.extend_from_slice(&(d.data.len() as u32).to_le_bytes());
    body.extend_from_slice(&[0; 4]);
    body
}

/// Common layout of digested PDUs: header, HDGST, padding to PDO, data, DDGST.
fn with_data(
    out: &mut Vec<u8>,
    ty: u8,
    mut fl: u8,
    hlen: usize,
    body: &[u8],
    data: &[u8],
    opts: &EncodeOptions,
) {
    let hd = opts.digests.header;
    let dd = opts.digests.data && !data.is_empty();
    if hd {
        fl |= flags::HDGSTF;
    }
    if dd {
        fl |= flags::DDGSTF;
    }
    let header_end = hlen + if hd { DIGEST_LEN } else { 0 };
    let (pdo, plen) = if data.is_empty() {
        (0, header_end)
    } else {
        let align = (usize::from(opts.pda) + 1) * 4;
        let pdo = header_end.div_ceil(align) * align;
        (pdo, pdo + data.len() + if dd { DIGEST_LEN } else { 0 })
    };
    let start = out.len();
    header(out, ty, fl, hlen, pdo, plen);
    out.extend_from_slice(body);
    out.resize(start + hlen, 0);
    if hd {
        let d = crc32c(out.get(start..start + hlen).unwrap_or_default());
        out.extend_from_slice(&d.to_le_bytes());
    }
    if !data.is_empty() {
        out.resize(start + pdo, 0);
        out.extend_from_slice(data);
        if dd {
            out.extend_from_slice(&crc32c(data).to_le_bytes());
        }
    }
}
