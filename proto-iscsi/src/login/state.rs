//! The per-connection login state machine (RFC 7143 sections 6.3 and 11.12/11.13): stages,
//! T/C/CSG/NSG rules, identity checks, authentication and the hand-over to full feature phase.
//!
//! It takes the fields of a decoded Login Request as plain values and returns the fields of the
//! Login Response, so it does not depend on the PDU codec.

use thiserror::Error;

use super::config::{LoginContext, Refusal, TargetAuth, TargetConfig};
use super::negotiate::{NegotiationError, Negotiator};
use super::params::{AuthOutcome, SessionParams, SessionType};
use super::status::LoginStatus;
use crate::chap::{ChapChallenge, ChapConfig, ChapError};
use crate::text::{self, KeyValue, TextAccumulator, TextError};

/// Login stage numbers as carried in CSG/NSG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// 0: security negotiation.
    Security = 0,
    /// 1: login operational negotiation.
    Operational = 1,
    /// 3: full feature phase.
    FullFeature = 3,
}

/// Most login requests one connection may send before the target gives up (a peer that never
/// finishes must not keep the login alive forever).
pub const MAX_LOGIN_REQUESTS: u32 = 64;

/// The fields of a Login Request the state machine needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginRequest<'a> {
    /// T bit: the initiator wants to move to `nsg`.
    pub transit: bool,
    /// C bit: the text continues in the next request.
    pub cont: bool,
    /// Current stage.
    pub csg: u8,
    /// Next stage (meaningful only with `transit`).
    pub nsg: u8,
    /// Version-max.
    pub version_max: u8,
    /// Version-min.
    pub version_min: u8,
    /// Initiator session identifier.
    pub isid: [u8; 6],
    /// Target session identifying handle (0 for a new session).
    pub tsih: u16,
    /// Connection ID.
    pub cid: u16,
    /// The data segment (text).
    pub data: &'a [u8],
}

/// The fields of the Login Response to send. StatSN, ExpCmdSN, MaxCmdSN and ITT are the
/// caller's (session layer's) to fill in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginResponse {
    /// T bit.
    pub transit: bool,
    /// C bit (always false: our responses fit one PDU).
    pub cont: bool,
    /// Current stage.
    pub csg: u8,
    /// Next stage (0 unless `transit`).
    pub nsg: u8,
    /// Version-max (0x00).
    pub version_max: u8,
    /// Version-active (0x00).
    pub version_active: u8,
    /// ISID echoed from the request.
    pub isid: [u8; 6],
    /// TSIH: the new session's handle in the final response, otherwise the request's.
    pub tsih: u16,
    /// Status class and detail.
    pub status: LoginStatus,
    /// Response text.
    pub data: Vec<u8>,
}

/// Why a login failed, by cause; [`LoginError::status`] gives the wire status.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LoginError {
    /// Malformed text.
    #[error("malformed text: {0}")]
    Text(#[from] TextError),
    /// Negotiation failure.
    #[error("negotiation: {0}")]
    Negotiation(#[from] NegotiationError),
    /// CHAP failure.
    #[error("CHAP: {0}")]
    Chap(#[from] ChapError),
    /// A violation of the login rules (stages, flags, identifiers, key order).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// No InitiatorName (or no TargetName in a normal session) in the first request.
    #[error("missing {0}")]
    Missing(&'static str),
    /// TargetName names no target here.
    #[error("target not found")]
    TargetNotFound,
    /// The initiator may not access the target.
    #[error("initiator not authorized for target")]
    NotAuthorized,
    /// No common protocol version.
    #[error("unsupported version")]
    UnsupportedVersion,
    /// Authentication is required but the initiator skipped or refused it.
    #[error("authentication required")]
    AuthRequired,
    /// The login names a session (TSIH) that does not exist.
    #[error("session does not exist")]
    SessionDoesNotExist,
    /// Adding a connection to an existing session exceeds MaxConnections.
    #[error("too many connections")]
    TooManyConnections,
    /// No TSIH available.
    #[error("out of session resources")]
    OutOfResources,
    /// The login ended already.
    #[error("login already finished")]
    Finished,
}

impl From<Refusal> for LoginError {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::NotFound => LoginError::TargetNotFound,
            Refusal::NotAuthorized => LoginError::NotAuthorized,
        }
    }
}

impl LoginError {
    /// The Login Response status for this error (RFC 7143 section 11.13.5).
    pub fn status(&self) -> LoginStatus {
        match self {
            LoginError::Text(_) | LoginError::Protocol(_) => LoginStatus::INITIATOR_ERROR,
            LoginError::Negotiation(e) => e.status(),
            LoginError::Chap(ChapError::IdenticalSecrets) => LoginStatus::TARGET_ERROR,
            LoginError::Chap(_) | LoginError::AuthRequired => LoginStatus::AUTHENTICATION_FAILURE,
            LoginError::Missing(_) => LoginStatus::MISSING_PARAMETER,
            LoginError::TargetNotFound => LoginStatus::NOT_FOUND,
            LoginError::NotAuthorized => LoginStatus::AUTHORIZATION_FAILURE,
            LoginError::UnsupportedVersion => LoginStatus::UNSUPPORTED_VERSION,
            LoginError::SessionDoesNotExist => LoginStatus::SESSION_DOES_NOT_EXIST,
            LoginError::TooManyConnections => LoginStatus::TOO_MANY_CONNECTIONS,
            LoginError::OutOfResources => LoginStatus::OUT_OF_RESOURCES,
            LoginError::Finished => LoginStatus::INVALID_DURING_LOGIN,
        }
    }
}

/// A login that reached full feature phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSuccess {
    /// Everything negotiated, including identities and authentication.
    pub params: SessionParams,
    /// The initiator's ISID.
    pub isid: [u8; 6],
    /// The TSIH allocated for the new session.
    pub tsih: u16,
    /// The connection ID.
    pub cid: u16,
}

/// What the caller does after sending the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Wait for the next Login Request.
    Continue,
    /// Enter full feature phase with these parameters.
    FullFeature(Box<LoginSuccess>),
    /// The response carries a failure status; close the connection after sending it.
    Failed(LoginError),
}

/// One step of the state machine: the response to send and what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStep {
    /// The Login Response.
    pub response: LoginResponse,
    /// What to do after sending it.
    pub outcome: LoginOutcome,
}

#[derive(Debug, Clone)]
enum Auth {
    /// AuthMethod not yet settled; the target requires this.
    AwaitMethod(TargetAuth),
    AwaitChapA(ChapConfig),
    AwaitChapResponse(ChapConfig, ChapChallenge),
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Running,
    Ended,
}

/// Login state of one TCP connection.
#[derive(Debug, Clone)]
pub struct LoginConnection {
    portal_group_tag: u16,
    phase: Phase,
    stage: Stage,
    isid: [u8; 6],
    tsih: u16,
    cid: u16,
    requests: u32,
    text: TextAccumulator,
    negotiator: Negotiator,
    auth: Auth,
    auth_seen: Vec<String>,
}

fn find<'a>(pairs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.value.as_str())
}

fn is_security_key(key: &str) -> bool {
    key == "AuthMethod" || key.starts_with("CHAP_")
}

impl LoginConnection {
    /// A fresh connection that arrived on a portal of portal group `portal_group_tag`.
    pub fn new(config: TargetConfig, portal_group_tag: u16) -> Self {
        LoginConnection {
            portal_group_tag,
            phase: Phase::Start,
            stage: Stage::Security,
            isid: [0; 6],
            tsih: 0,
            cid: 0,
            requests: 0,
            text: TextAccumulator::default(),
            negotiator: Negotiator::new(config),
            auth: Auth::AwaitMethod(TargetAuth::None),
            auth_seen: Vec::new(),
        }
    }

    /// Processes one Login Request and produces the Login Response.
    pub fn step(&mut self, req: &LoginRequest<'_>, ctx: &mut dyn LoginContext) -> LoginStep {
        let csg = req.csg;
        match self.process(req, ctx) {
            Ok(step) => step,
            Err(err) => {
                self.phase = Phase::Ended;
                LoginStep {
                    response: LoginResponse {
                        transit: false,
                        cont: false,
                        csg: csg & 0x3,
                        nsg: 0,
                        version_max: 0,
                        version_active: 0,
                        isid: req.isid,
                        tsih: req.tsih,
                        status: err.status(),
                        data: Vec::new(),
                    },
                    outcome: LoginOutcome::Failed(err),
                }
            }
        }
    }

    fn check_header(
        &mut self,
        req: &LoginRequest<'_>,
        ctx: &dyn LoginContext,
    ) -> Result<(), LoginError> {
        if self.phase == Phase::Ended {
            return Err(LoginError::Finished);
        }
        self.requests += 1;
        if self.requests > MAX_LOGIN_REQUESTS {
            return Err(LoginError::Protocol("too many login requests"));
        }
        if req.version_min > 0 || req.version_max < req.version_min {
            return Err(LoginError::UnsupportedVersion);
        }
        if req.transit && req.cont {
            return Err(LoginError::Protocol("T and C both set"));
        }
        if req.csg > 1 {
            return Err(LoginError::Protocol("invalid CSG"));
        }
        if req.transit && !((req.nsg == 1 || req.nsg == 3) && req.nsg > req.csg) {
            return Err(LoginError::Protocol("invalid NSG"));
        }
        if self.requests == 1 {
            if req.tsih != 0 {
                return Err(if ctx.session_exists(req.isid, req.tsih) {
                    LoginError::TooManyConnections
                } else {
                    LoginError::SessionDoesNotExist
                });
            }
            self.isid = req.isid;
            self.tsih = req.tsih;
            self.cid = req.cid;
            self.stage = if req.csg == 0 {
                Stage::Security
            } else {
                Stage::Operational
            };
        } else {
            if req.isid != self.isid || req.tsih != self.tsih || req.cid != self.cid {
                return Err(LoginError::Protocol(
                    "ISID, TSIH or CID changed during login",
                ));
            }
            if req.csg != self.stage as u8 {
                return Err(LoginError::Protocol("CSG does not match the current stage"));
            }
        }
        Ok(())
    }

    fn process(
        &mut self,
        req: &LoginRequest<'_>,
        ctx: &mut dyn LoginContext,
    ) -> Result<LoginStep, LoginError> {
        self.check_header(req, ctx)?;
        let Some(data) = self.text.push(req.data, req.cont)? else {
            // Partial text: acknowledge with an empty response and wait for the rest.
            return Ok(self.reply(false, 0, req.tsih, Vec::new(), LoginOutcome::Continue));
        };
        let pairs = text::parse_text(&data)?;
        let mut out: Vec<KeyValue> = Vec::new();
        if self.phase == Phase::Start {
            self.identify(&pairs, ctx, &mut out)?;
            self.phase = Phase::Running;
        }
        let (security, operational): (Vec<KeyValue>, Vec<KeyValue>) =
            pairs.into_iter().partition(|p| is_security_key(&p.key));
        if !security.is_empty() {
            if self.stage != Stage::Security {
                return Err(NegotiationError::SecurityKeyOutOfStage("AuthMethod/CHAP").into());
            }
            self.security(&security, ctx, &mut out)?;
        }
        out.extend(self.negotiator.negotiate(&operational)?);
        if self.stage == Stage::Operational {
            out.extend(self.negotiator.declarations());
        }

        let auth_ok = match &self.auth {
            Auth::Done | Auth::AwaitMethod(TargetAuth::None) => true,
            Auth::AwaitMethod(TargetAuth::Chap(_)) => {
                if self.stage == Stage::Operational {
                    return Err(LoginError::AuthRequired);
                }
                false
            }
            _ => false,
        };
        let mut transit = req.transit && auth_ok;
        if transit && req.nsg == Stage::FullFeature as u8 {
            if self.negotiator.has_pending_offers() {
                transit = false;
            } else {
                let offers = self.negotiator.target_offers();
                if !offers.is_empty() {
                    out.extend(offers);
                    transit = false;
                } else {
                    out.extend(self.negotiator.declarations());
                }
            }
        }
        let data = text::encode_text(&out);
        if !transit {
            return Ok(self.reply(false, 0, req.tsih, data, LoginOutcome::Continue));
        }
        if req.nsg == Stage::Operational as u8 {
            let step = self.reply(true, 1, req.tsih, data, LoginOutcome::Continue);
            self.stage = Stage::Operational;
            return Ok(step);
        }
        let tsih = ctx
            .allocate_tsih()
            .filter(|&t| t != 0)
            .ok_or(LoginError::OutOfResources)?;
        let params = std::mem::replace(
            &mut self.negotiator,
            Negotiator::new(TargetConfig::default()),
        )
        .finish();
        self.phase = Phase::Ended;
        let success = LoginSuccess {
            params,
            isid: self.isid,
            tsih,
            cid: self.cid,
        };
        Ok(self.reply(
            true,
            3,
            tsih,
            data,
            LoginOutcome::FullFeature(Box::new(success)),
        ))
    }

    fn reply(
        &self,
        transit: bool,
        nsg: u8,
        tsih: u16,
        data: Vec<u8>,
        outcome: LoginOutcome,
    ) -> LoginStep {
        LoginStep {
            response: LoginResponse {
                transit,
                cont: false,
                csg: self.stage as u8,
                nsg,
                version_max: 0,
                version_active: 0,
                isid: self.isid,
                tsih,
                status: LoginStatus::SUCCESS,
                data,
            },
            outcome,
        }
    }

    /// First-request checks: who is logging in, to what, and which authentication applies.
    fn identify(
        &mut self,
        pairs: &[KeyValue],
        ctx: &dyn LoginContext,
        out: &mut Vec<KeyValue>,
    ) -> Result<(), LoginError> {
        let initiator = find(pairs, "InitiatorName").ok_or(LoginError::Missing("InitiatorName"))?;
        let session_type = match find(pairs, "SessionType") {
            None | Some("Normal") => SessionType::Normal,
            Some("Discovery") => SessionType::Discovery,
            Some(_) => return Err(NegotiationError::UnsupportedSessionType.into()),
        };
        let auth = match session_type {
            SessionType::Discovery => ctx.admit(initiator, None).map_err(LoginError::from)?,
            SessionType::Normal => {
                let target = find(pairs, "TargetName").ok_or(LoginError::Missing("TargetName"))?;
                let auth = ctx.admit(initiator, Some(target))?;
                out.push(KeyValue::new(
                    "TargetPortalGroupTag",
                    self.portal_group_tag.to_string(),
                ));
                if let Some(alias) = &self.negotiator_alias() {
                    out.push(KeyValue::new("TargetAlias", alias.clone()));
                }
                auth
            }
        };
        if self.stage == Stage::Operational && matches!(auth, TargetAuth::Chap(_)) {
            return Err(LoginError::AuthRequired);
        }
        self.negotiator.params_mut().session_type = session_type;
        self.auth = Auth::AwaitMethod(auth);
        Ok(())
    }

    fn negotiator_alias(&self) -> Option<String> {
        self.negotiator.config().target_alias.clone()
    }

    /// Handles AuthMethod and the CHAP keys of one request.
    fn security(
        &mut self,
        pairs: &[KeyValue],
        ctx: &mut dyn LoginContext,
        out: &mut Vec<KeyValue>,
    ) -> Result<(), LoginError> {
        for p in pairs {
            if self.auth_seen.contains(&p.key) {
                return Err(NegotiationError::Duplicate(p.key.clone()).into());
            }
            self.auth_seen.push(p.key.clone());
        }
        if let Some(methods) = find(pairs, "AuthMethod") {
            let Auth::AwaitMethod(required) = &self.auth else {
                return Err(LoginError::Protocol(
                    "AuthMethod after authentication started",
                ));
            };
            let offered = |m: &str| text::split_list(methods).any(|v| v == m);
            match required {
                TargetAuth::None if offered("None") => {
                    out.push(KeyValue::new("AuthMethod", "None"));
                    self.auth = Auth::Done;
                }
                TargetAuth::Chap(cfg) if offered("CHAP") => {
                    out.push(KeyValue::new("AuthMethod", "CHAP"));
                    self.auth = Auth::AwaitChapA(cfg.clone());
                }
                _ => return Err(LoginError::AuthRequired),
            }
        }
        if let Some(algs) = find(pairs, "CHAP_A") {
            let Auth::AwaitChapA(cfg) = &self.auth else {
                return Err(LoginError::Protocol("unexpected CHAP_A"));
            };
            let challenge = ChapChallenge::start(algs, &cfg.allowed, &mut |b| ctx.fill_random(b))?;
            out.extend(challenge.keys());
            self.auth = Auth::AwaitChapResponse(cfg.clone(), challenge);
        }
        let chap_reply = ["CHAP_N", "CHAP_R", "CHAP_I", "CHAP_C"]
            .iter()
            .any(|k| find(pairs, k).is_some());
        if chap_reply {
            let Auth::AwaitChapResponse(cfg, challenge) = &self.auth else {
                return Err(LoginError::Protocol("unexpected CHAP response"));
            };
            let ok = challenge.verify(|k| find(pairs, k), cfg)?;
            out.extend(ok.response_keys);
            self.negotiator.params_mut().auth = AuthOutcome::Chap {
                user: ok.user,
                algorithm: ok.algorithm,
                mutual: ok.mutual,
            };
            self.auth = Auth::Done;
        }
        Ok(())
    }
}
