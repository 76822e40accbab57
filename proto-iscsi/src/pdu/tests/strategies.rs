//! proptest strategies producing every PDU kind with arbitrary field values.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::pdu::*;

pub fn data(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

pub fn lun() -> impl Strategy<Value = Lun> {
    any::<[u8; 8]>().prop_map(Lun)
}

pub fn stage() -> impl Strategy<Value = Stage> {
    prop_oneof![
        Just(Stage::SecurityNegotiation),
        Just(Stage::OperationalNegotiation),
        Just(Stage::FullFeaturePhase),
    ]
}

pub fn digests() -> impl Strategy<Value = Digests> {
    (any::<bool>(), any::<bool>()).prop_map(|(header, data)| Digests { header, data })
}

type Sn3 = (u32, u32, u32);

prop_compose! {
    fn nop_out()(immediate: bool, lun in lun(), tags: (u32, u32), sn: (u32, u32),
                 data in data(300)) -> Pdu {
        Pdu::NopOut(NopOut { immediate, lun, itt: tags.0, ttt: tags.1, cmd_sn: sn.0,
                             exp_stat_sn: sn.1, data })
    }
}

prop_compose! {
    fn scsi_command()(flags: (bool, bool, bool, bool), attr in 0u8..5, lun in lun(),
                      itt: u32, sn: Sn3, cdb in vec(any::<u8>(), 16..300),
                      bidi in proptest::option::of(any::<u32>()), data in data(600)) -> Pdu {
        Pdu::ScsiCommand(ScsiCommand {
            immediate: flags.0, final_: flags.1, read: flags.2, write: flags.3,
            attr: TaskAttribute::from_u8(attr).unwrap_or_default(), lun, itt,
            expected_data_transfer_length: sn.0, cmd_sn: sn.1, exp_stat_sn: sn.2,
            cdb: Bytes::from(cdb), bidi_read_length: bidi, data,
        })
    }
}

prop_compose! {
    fn tmf_request()(immediate: bool, function in 0u8..128, lun in lun(), tags: (u32, u32),
                     sn: (u32, u32, u32, u32)) -> Pdu {
        Pdu::TaskMgmtRequest(TaskMgmtRequest {
            immediate, function: TmfFunction::from_u8(function), lun, itt: tags.0,
            referenced_task_tag: tags.1, cmd_sn: sn.0, exp_stat_sn: sn.1, ref_cmd_sn: sn.2,
            exp_data_sn: sn.3,
        })
    }
}

prop_compose! {
    fn login_request()(bits: (bool, bool), csg in stage(), nsg in stage(), ver: (u8, u8),
                       isid: [u8; 6], tsih: u16, itt: u32, cid: u16, sn: (u32, u32),
                       data in data(600)) -> Pdu {
        Pdu::LoginRequest(LoginRequest {
            transit: bits.0, continue_: bits.1, csg, nsg, version_max: ver.0,
            version_min: ver.1, isid, tsih, itt, cid, cmd_sn: sn.0, exp_stat_sn: sn.1, data,
        })
    }
}

prop_compose! {
    fn text_request()(bits: (bool, bool, bool), lun in lun(), tags: (u32, u32), sn: (u32, u32),
                      data in data(600)) -> Pdu {
        Pdu::TextRequest(TextRequest {
            immediate: bits.0, final_: bits.1, continue_: bits.2, lun, itt: tags.0,
            ttt: tags.1, cmd_sn: sn.0, exp_stat_sn: sn.1, data,
        })
    }
}

prop_compose! {
    fn data_out()(final_: bool, lun in lun(), tags: (u32, u32), sn: Sn3,
                  data in data(600)) -> Pdu {
        Pdu::DataOut(DataOut { final_, lun, itt: tags.0, ttt: tags.1, exp_stat_sn: sn.0,
                               data_sn: sn.1, buffer_offset: sn.2, data })
    }
}

prop_compose! {
    fn logout_request()(immediate: bool, reason in 0u8..3, itt: u32, cid: u16,
                        sn: (u32, u32)) -> Pdu {
        Pdu::LogoutRequest(LogoutRequest {
            immediate, reason: LogoutReason::from_u8(reason).unwrap_or(LogoutReason::CloseSession),
            itt, cid, cmd_sn: sn.0, exp_stat_sn: sn.1,
        })
    }
}

prop_compose! {
    fn snack()(ty in 0u8..16, lun in lun(), tags: (u32, u32), sn: Sn3) -> Pdu {
        Pdu::SnackRequest(SnackRequest {
            snack_type: SnackType::from_u8(ty), lun, itt: tags.0, ttt_or_snack_tag: tags.1,
            exp_stat_sn: sn.0, beg_run: sn.1, run_length: sn.2,
        })
    }
}

prop_compose! {
    fn nop_in()(lun in lun(), tags: (u32, u32), sn: Sn3, data in data(300)) -> Pdu {
        Pdu::NopIn(NopIn { lun, itt: tags.0, ttt: tags.1, stat_sn: sn.0, exp_cmd_sn: sn.1,
                           max_cmd_sn: sn.2, data })
    }
}

prop_compose! {
    fn scsi_response()(bits: (bool, bool, bool, bool), codes: (u8, u8), tags: (u32, u32),
                       sn: Sn3, counts: Sn3, data in data(300)) -> Pdu {
        Pdu::ScsiResponse(ScsiResponse {
            bidi_overflow: bits.0, bidi_underflow: bits.1, overflow: bits.2, underflow: bits.3,
            response: ServiceResponse::from_u8(codes.0), status: codes.1, itt: tags.0,
            snack_tag: tags.1, stat_sn: sn.0, exp_cmd_sn: sn.1, max_cmd_sn: sn.2,
            exp_data_sn: counts.0, bidi_read_residual_count: counts.1,
            residual_count: counts.2, data,
        })
    }
}

prop_compose! {
    fn tmf_response()(response: u8, itt: u32, sn: Sn3) -> Pdu {
        Pdu::TaskMgmtResponse(TaskMgmtResponse {
            response: TmfResponse::from_u8(response), itt, stat_sn: sn.0, exp_cmd_sn: sn.1,
            max_cmd_sn: sn.2,
        })
    }
}

prop_compose! {
    fn login_response()(bits: (bool, bool), csg in stage(), nsg in stage(), ver: (u8, u8),
                        isid: [u8; 6], tsih: u16, itt: u32, sn: Sn3, status: (u8, u8),
                        data in data(600)) -> Pdu {
        Pdu::LoginResponse(LoginResponse {
            transit: bits.0, continue_: bits.1, csg, nsg, version_max: ver.0,
            version_active: ver.1, isid, tsih, itt, stat_sn: sn.0, exp_cmd_sn: sn.1,
            max_cmd_sn: sn.2, status_class: status.0, status_detail: status.1, data,
        })
    }
}

prop_compose! {
    fn text_response()(bits: (bool, bool), lun in lun(), tags: (u32, u32), sn: Sn3,
                       data in data(600)) -> Pdu {
        Pdu::TextResponse(TextResponse {
            final_: bits.0, continue_: bits.1, lun, itt: tags.0, ttt: tags.1, stat_sn: sn.0,
            exp_cmd_sn: sn.1, max_cmd_sn: sn.2, data,
        })
    }
}

prop_compose! {
    fn data_in()(bits: (bool, bool, bool, bool), status in proptest::option::of(any::<u8>()),
                 lun in lun(), tags: (u32, u32), sn: Sn3, pos: Sn3, data in data(600)) -> Pdu {
        Pdu::DataIn(DataIn {
            final_: bits.0, ack: bits.1, overflow: bits.2, underflow: bits.3, status, lun,
            itt: tags.0, ttt: tags.1, stat_sn: sn.0, exp_cmd_sn: sn.1, max_cmd_sn: sn.2,
            data_sn: pos.0, buffer_offset: pos.1, residual_count: pos.2, data,
        })
    }
}

prop_compose! {
    fn logout_response()(response: u8, itt: u32, sn: Sn3, times: (u16, u16)) -> Pdu {
        Pdu::LogoutResponse(LogoutResponse {
            response: LogoutResponseCode::from_u8(response), itt, stat_sn: sn.0,
            exp_cmd_sn: sn.1, max_cmd_sn: sn.2, time2wait: times.0, time2retain: times.1,
        })
    }
}

prop_compose! {
    fn r2t()(lun in lun(), tags: (u32, u32), sn: Sn3, xfer: Sn3) -> Pdu {
        Pdu::R2t(R2t {
            lun, itt: tags.0, ttt: tags.1, stat_sn: sn.0, exp_cmd_sn: sn.1, max_cmd_sn: sn.2,
            r2t_sn: xfer.0, buffer_offset: xfer.1, desired_data_transfer_length: xfer.2,
        })
    }
}

prop_compose! {
    fn async_message()(lun in lun(), sn: Sn3, codes: (u8, u8), params: (u16, u16, u16),
                       data in data(300)) -> Pdu {
        Pdu::AsyncMessage(AsyncMessage {
            lun, stat_sn: sn.0, exp_cmd_sn: sn.1, max_cmd_sn: sn.2,
            event: AsyncEvent::from_u8(codes.0), vendor_code: codes.1, parameter1: params.0,
            parameter2: params.1, parameter3: params.2, data,
        })
    }
}

prop_compose! {
    fn reject()(reason: u8, sn: Sn3, data_sn: u32, header in data(100)) -> Pdu {
        Pdu::Reject(Reject {
            reason: RejectReason::from_u8(reason), stat_sn: sn.0, exp_cmd_sn: sn.1,
            max_cmd_sn: sn.2, data_sn_or_r2t_sn: data_sn, header,
        })
    }
}

/// Any PDU of any of the 18 kinds.
pub fn any_pdu() -> impl Strategy<Value = Pdu> {
    prop_oneof![
        nop_out(),
        scsi_command(),
        tmf_request(),
        login_request(),
        text_request(),
        data_out(),
        logout_request(),
        snack(),
        nop_in(),
        scsi_response(),
        tmf_response(),
        login_response(),
        text_response(),
        data_in(),
        logout_response(),
        r2t(),
        async_message(),
        reject(),
    ]
}
