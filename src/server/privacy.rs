//! `confidant.v1.Privacy`: differential-privacy budgets.

use tonic::{Request, Response, Status};

use crate::audit::Event;
use crate::guard::{GuardError, Scope};
use crate::names::validate_name;
use crate::pipeline::{ApiError, CallContext, Pipeline};
use crate::privacy::subjects::Subjects;
use crate::proto::confidant::v1 as pb;
use crate::unix_now;

/// The Privacy service.
#[derive(Clone)]
pub struct PrivacyService {
    pipeline: Pipeline,
}

impl PrivacyService {
    /// The service over the shared pipeline (its budgets and guards).
    pub fn new(pipeline: Pipeline) -> Self {
        Self { pipeline }
    }
}

impl PrivacyService {
    fn subjects(&self) -> Result<&Subjects, ApiError> {
        self.pipeline
            .subjects()
            .ok_or_else(|| ApiError::Precondition("this server keeps no consent records".into()))
    }

    fn admin(&self, ctx: &CallContext) -> Result<String, ApiError> {
        self.pipeline.ensure_fresh()?;
        Ok(self.pipeline.caller(ctx, Scope::Admin)?.principal.clone())
    }

    /// Records an admin event durably (a consent change or an erasure must not be lost).
    fn audit(&self, actor: &str, action: &str, detail: String) -> Result<(), ApiError> {
        if let Some(audit) = self.pipeline.audit() {
            audit
                .append_durable(Event::Admin {
                    actor: actor.to_string(),
                    action: action.to_string(),
                    detail,
                })
                .map_err(|e| ApiError::Internal(format!("audit: {e}")))?;
        }
        Ok(())
    }
}

/// The domain tag of erasure receipts.
pub const ERASURE_DOMAIN: &[u8] = b"confidant.erasure.v1\0";

#[tonic::async_trait]
impl pb::privacy_server::Privacy for PrivacyService {
    async fn set_consent(
        &self,
        request: Request<pb::SetConsentRequest>,
    ) -> Result<Response<pb::ConsentReceipt>, Status> {
        let (ctx, req) = CallContext::split(request);
        let actor = self.admin(&ctx)?;
        let rec = self
            .subjects()?
            .set_consent(
                &req.subject,
                &req.purpose,
                req.granted,
                &req.source,
                unix_now(),
            )
            .map_err(ApiError::from)?;
        self.audit(
            &actor,
            if rec.granted {
                "consent.grant"
            } else {
                "consent.withdraw"
            },
            format!(
                "subject {} purpose {} source {:?}",
                rec.subject_pseudonym, rec.purpose, rec.source
            ),
        )?;
        Ok(Response::new(pb::ConsentReceipt {
            subject_pseudonym: rec.subject_pseudonym,
            purpose: rec.purpose,
            granted: rec.granted,
            at: rec.at,
            source: rec.source,
        }))
    }

    async fn forget(
        &self,
        request: Request<pb::ForgetRequest>,
    ) -> Result<Response<pb::ErasureReceipt>, Status> {
        let (ctx, req) = CallContext::split(request);
        let actor = self.admin(&ctx)?;
        let erased = self
            .subjects()?
            .forget(&req.subject, unix_now())
            .map_err(ApiError::from)?;
        self.audit(
            &actor,
            "subject.forget",
            match &erased.subject_pseudonym {
                Some(p) => format!(
                    "subject {p}: key and {} consent records deleted",
                    erased.consents_deleted
                ),
                None => "a subject the server held nothing about".into(),
            },
        )?;
        let statement = crate::canonical::to_vec(&serde_json::json!({
            "kind": "erasure",
            "existed": erased.existed,
            "subject_pseudonym": erased.subject_pseudonym,
            "consents_deleted": erased.consents_deleted,
            "at": erased.at,
        }))
        .map_err(|e| ApiError::Internal(e.to_string()))?;
        let statement =
            String::from_utf8(statement).map_err(|e| ApiError::Internal(e.to_string()))?;
        let (signature, public_key) = match self.pipeline.audit() {
            Some(a) => (
                a.sign(ERASURE_DOMAIN, statement.as_bytes()),
                a.public_key_hex().to_string(),
            ),
            None => (String::new(), String::new()),
        };
        Ok(Response::new(pb::ErasureReceipt {
            existed: erased.existed,
            subject_pseudonym: erased.subject_pseudonym.unwrap_or_default(),
            consents_deleted: erased.consents_deleted,
            at: erased.at,
            statement,
            signature,
            public_key,
        }))
    }

    async fn get_budget(
        &self,
        request: Request<pb::GetBudgetRequest>,
    ) -> Result<Response<pb::Budget>, Status> {
        let (ctx, req) = CallContext::split(request);
        let key = self.pipeline.caller(&ctx, Scope::Predict)?;
        let principal = if req.principal.is_empty() || req.principal == key.principal {
            key.principal.clone()
        } else {
            if !key.scopes.contains(&Scope::Admin) {
                return Err(ApiError::Guard(GuardError::PermissionDenied(format!(
                    "principal {} may read only its own budget (another's needs the admin scope)",
                    key.principal
                )))
                .into());
            }
            validate_name("principal", &req.principal)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            req.principal
        };
        let budgets = self.pipeline.budgets().ok_or_else(|| {
            ApiError::Precondition("this server enforces no privacy budgets".into())
        })?;
        let now = unix_now();
        let s = budgets
            .status(&principal, now)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Response::new(pb::Budget {
            principal,
            epsilon_budget: s.epsilon_budget,
            epsilon_spent: s.epsilon_spent,
            epsilon_remaining: s.epsilon_remaining,
            delta: s.delta,
            window_start: s.window_start,
            window_end: s.window_end,
        }))
    }
}
