//! The server's state key: from the key broker after attestation, from the demo's embedded
//! broker, or (development, models with key files) from `<data-dir>/state.key`.

use std::sync::Arc;

use super::{ServeConfig, ServerError};
use crate::state::{Source, StateKey};

/// Obtains the deployment's state key before anything persisted is opened. With a broker,
/// RCAR runs with evidence from `attester` and retries with backoff until the broker
/// releases `default/state/<deployment>` (its release policy decides, as for model keys).
pub(super) async fn obtain(
    config: &ServeConfig,
    attester: Arc<dyn crate::tee::Attester>,
) -> Result<StateKey, ServerError> {
    let resource = crate::state::resource_path(&config.deployment)?;
    let key = if config.models.is_empty() {
        crate::demo::obtain_state_key(&config.data_dir, &resource).await?
    } else if let Some(b) = &config.broker {
        let endpoint = super::models::broker_endpoint(b)?;
        let bytes =
            crate::keys::fetch_resource_retrying(&endpoint, attester, &resource, "state key").await;
        StateKey::from_bytes(
            &bytes,
            Source::Broker,
            &format!("broker resource {resource}"),
        )?
    } else {
        let dir = config.data_dir.clone();
        tokio::task::spawn_blocking(move || StateKey::dev_file(&dir))
            .await
            .map_err(|e| ServerError::Task {
                what: "state key",
                reason: e.to_string(),
            })??
    };
    match key.source() {
        Source::Broker => tracing::info!(
            resource,
            deployment = %config.deployment,
            "state key released by the broker after attestation; the database and the \
             audit log are encrypted under it"
        ),
        Source::Demo => tracing::warn!(
            resource,
            "state key from the demo's embedded broker: NOT confidential (its master key is \
             in the data directory); the demo shows the mechanism only"
        ),
        Source::DevFile => tracing::warn!(
            file = %config.data_dir.join(crate::state::DEV_KEY_FILE).display(),
            "state key from a local file (development, models with --key-file): NOT \
             confidential; the host can read and rewrite everything the server persists"
        ),
    }
    Ok(key)
}
