//! `confidant.v1.Privacy`: differential-privacy budgets.

use tonic::{Request, Response, Status};

use super::error::ApiError;
use super::pipeline::{CallContext, Pipeline};
use crate::guard::{GuardError, Scope, keys::validate_name};
use crate::proto::confidant::v1 as pb;

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

#[tonic::async_trait]
impl pb::privacy_server::Privacy for PrivacyService {
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
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
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
