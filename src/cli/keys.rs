//! `confidant keys …` and the deployment state key that opens the key database.

use super::*;

/// The deployment's state key for a command beside the server (see
/// [`args::StateSourceArgs`]). `create`: make the development key file when no source
/// exists yet (only `keys create` may start a data directory).
pub(super) async fn resolve_state_key(
    data_dir: &Path,
    source: &args::StateSourceArgs,
    create: bool,
) -> Result<confidant::state::StateKey> {
    use confidant::state::{DEV_KEY_FILE, StateKey};
    let deployment = source
        .deployment
        .as_deref()
        .unwrap_or(confidant::state::DEFAULT_DEPLOYMENT);
    let resource = confidant::state::resource_path(deployment)?;
    if source.tee == confidant::tee::TeeChoice::Sample && source.broker.is_none() {
        bail!("--tee sample is evidence for a Trustee KBS: give --broker URL");
    }
    if let Some(url) = &source.broker {
        let ca = source
            .broker_ca
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("--broker-ca {}", p.display())))
            .transpose()?;
        let endpoint = confidant::keys::BrokerEndpoint::new(url, ca.as_deref())?;
        let attester: std::sync::Arc<dyn confidant::tee::Attester> =
            std::sync::Arc::from(confidant::tee::select(source.tee)?);
        let bytes = confidant::keys::fetch_resource(&endpoint, attester, &resource).await?;
        return Ok(StateKey::from_bytes(
            &bytes,
            confidant::state::Source::Broker,
            &format!("broker resource {resource}"),
        )?);
    }
    if data_dir.join(DEV_KEY_FILE).exists() {
        return Ok(StateKey::dev_file(data_dir)?);
    }
    if data_dir.join("broker").is_dir() {
        return Ok(confidant::demo::obtain_state_key(data_dir, &resource).await?);
    }
    if create {
        eprintln!(
            "note: {} has no state key yet; created the development key file {DEV_KEY_FILE} \
             (a demo server adopts it; a server with --broker needs --broker here too)",
            data_dir.display()
        );
        return Ok(StateKey::dev_file(data_dir)?);
    }
    bail!(
        "{}: no state key: no {DEV_KEY_FILE} and no demo broker; the database and audit log \
         are encrypted under the deployment's state key (pass --broker URL --broker-ca CA to \
         obtain it by attestation, inside the attested VM)",
        data_dir.display()
    )
}

pub(super) fn pubkeys(args: &[String]) -> Result<Vec<[u8; 32]>> {
    let mut trusted = Vec::new();
    for k in args {
        let text = if Path::new(k).is_file() {
            std::fs::read_to_string(k).with_context(|| format!("--pubkey {k}"))?
        } else {
            k.clone()
        };
        let mut key = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut key).map_err(|_| {
            anyhow::anyhow!("--pubkey {k}: expected 64 hex digits (a raw Ed25519 key)")
        })?;
        trusted.push(key);
    }
    Ok(trusted)
}

pub(super) async fn open_keys(
    data_dir: Option<PathBuf>,
    state: &args::StateSourceArgs,
    create: bool,
) -> Result<KeyStore> {
    let dir = resolve_data_dir(data_dir, None);
    if create && !dir.exists() {
        confidant::files::create_private_dir(&dir)?;
    }
    if !dir.is_dir() {
        bail!(
            "data directory {} does not exist (pass --data-dir, or start the server once)",
            dir.display()
        );
    }
    let key = resolve_state_key(&dir, state, create).await?;
    let db = Database::open_encrypted_in(&dir, &key.subkey(confidant::state::Subkey::Database))?;
    Ok(KeyStore::new(std::sync::Arc::new(db)))
}

pub(super) async fn keys(a: args::KeysArgs) -> Result<()> {
    match a.command {
        args::KeysCommand::Create(c) => {
            let scopes = c
                .scopes
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(Scope::parse)
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("--scopes: {e}"))?;
            let purposes = c
                .purposes
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            let store = open_keys(c.data_dir, &c.state, true).await?;
            let new = NewKey {
                principal: c.principal,
                scopes,
                purposes,
                rpm: c.rpm,
                rpd: c.rpd,
            };
            if let Some(path) = &c.client_cert {
                let der = read_leaf_cert_der(path)?;
                let record = store.create_client_cert(&new, &der, unix_now(), "cli")?;
                println!(
                    "{}",
                    serde_json::json!({
                        "principal": record.principal,
                        "key_id": record.key_id,
                        "kind": record.kind,
                        "scopes": record.scopes,
                        "purposes": record.purposes,
                        "rpm": record.rpm,
                        "rpd": record.rpd,
                    })
                );
                return Ok(());
            }
            let (record, secret) = store.create(&new, unix_now())?;
            println!(
                "{}",
                serde_json::json!({
                    "principal": record.principal,
                    "api_key": secret.secret_str(),
                    "key_id": record.key_id,
                    "scopes": record.scopes,
                    "purposes": record.purposes,
                    "rpm": record.rpm,
                    "rpd": record.rpd,
                })
            );
        }
        args::KeysCommand::List(c) => {
            let list = open_keys(c.data_dir, &c.state, false).await?.list()?;
            println!("{}", serde_json::to_string_pretty(&list)?);
        }
        args::KeysCommand::Revoke(c) => {
            let selector = match (c.key_id, c.principal) {
                (Some(id), _) => RevokeSelector::KeyId(id),
                (None, Some(p)) => RevokeSelector::Principal(p),
                (None, None) => bail!("give --key-id or --principal"),
            };
            let ids = open_keys(c.data_dir, &c.state, false)
                .await?
                .revoke(&selector, unix_now())?;
            println!("{}", serde_json::json!({ "revoked": ids }));
        }
    }
    Ok(())
}
