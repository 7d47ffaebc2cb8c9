//! A tenant's embedding settings as the knowledge base sees them: the override stored by
//! the domain, the model actually in use (or why it is unavailable), and the re-embedding a
//! model change needs. New settings are tried (model loaded, endpoint called once) before
//! they are saved: settings that do not work are refused and leave the old ones in place.

use super::{Error, Knowledge, VectorStatus, tenant_embed_settings};
use crate::auth::{Action, Caller};
use crate::domain::settings::EmbeddingSettingsPatch;
use crate::model::TenantSettings;
use crate::types::TenantId;
use serde::Serialize;
use utoipa::ToSchema;

/// What GET /api/settings/embeddings shows.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingSettingsView {
    /// What the tenant uses now.
    effective: String,
    /// The model id recorded on new vectors; null for keyword-only.
    model_id: Option<String>,
    /// The tenant's override (null: the server default applies).
    #[serde(rename = "override")]
    over: Option<serde_json::Value>,
    api_key_set: bool,
    /// Whether vector search works now: `ok`, `off` (keyword only by choice) or
    /// `unavailable` (keyword only until the model works again, with the reason).
    vector_search: VectorStatus,
}

/// Why the embedding settings cannot be shown or changed.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(transparent)]
    Domain(#[from] crate::domain::Error),
    /// The tenant's embedding model cannot be loaded.
    #[error("{0}")]
    Unavailable(Error),
    #[error("queueing re-embedding failed: {0}")]
    Reembed(Error),
    /// Our fault (the store), not the settings'.
    #[error(transparent)]
    Internal(Error),
}

fn require(caller: &Caller) -> Result<(), crate::domain::Error> {
    caller
        .require(Action::ManageSettings)
        .map_err(|d| crate::domain::Error::denied(d, "settings"))
}

impl Knowledge {
    /// The caller's tenant's embedding settings. Blocking (may load a model).
    pub fn embedding_settings(
        &self,
        caller: &Caller,
    ) -> Result<EmbeddingSettingsView, SettingsError> {
        require(caller)?;
        self.embedding_view(caller.tenant())
    }

    /// Changes the tenant's embedding override after trying it: settings whose model does not
    /// load, or whose endpoint does not answer with usable vectors, are refused
    /// ([`SettingsError::Unavailable`]) and nothing is saved. When the change brings a model
    /// the tenant's chunks were not embedded with, queues their re-embedding (vectors of
    /// different models never mix). Blocking (may load a model or call an endpoint).
    pub fn put_embedding_settings(
        &self,
        caller: &Caller,
        p: EmbeddingSettingsPatch,
    ) -> Result<EmbeddingSettingsView, SettingsError> {
        // Checked before anything is loaded, so a refused request loads nothing.
        require(caller)?;
        p.check()?;
        let t = caller.tenant();
        loop {
            let change = self.svc.prepare_embedding_settings(caller, &p)?;
            let candidate = TenantSettings {
                tenant_id: t.clone(),
                embeddings: change.after().cloned(),
                ..TenantSettings::default()
            };
            if let Some(over) = tenant_embed_settings(&candidate, &self.svc) {
                let key = super::settings_key(&over);
                self.override_space(&over, &key, true)
                    .map_err(SettingsError::Unavailable)?;
            }
            // Another change may have landed while we tried this one: then work it out again.
            if self.svc.commit_embedding_settings(caller, &change)? {
                break;
            }
        }
        self.clear_outage(t);
        match self.space_for(t) {
            Ok(Some(space)) => self
                .recover_tenant(t, &space)
                .map_err(SettingsError::Reembed)?,
            Ok(None) | Err(Error::Unavailable(_)) => {}
            Err(e) => return Err(SettingsError::Internal(e)),
        }
        self.embedding_view(t)
    }

    fn embedding_view(&self, t: &TenantId) -> Result<EmbeddingSettingsView, SettingsError> {
        let settings = self.svc.tenant_settings(t)?;
        let status = self.vector_status(t).map_err(SettingsError::Internal)?;
        let mut over = settings.embeddings.clone();
        let api_key_set = over
            .as_ref()
            .is_some_and(|o| o.get("apiKeySealed").is_some());
        if let Some(serde_json::Value::Object(m)) = over.as_mut() {
            m.remove("apiKeySealed");
        }
        let space = match &status {
            VectorStatus::Ok { .. } => self.space_for(t).ok().flatten(),
            _ => None,
        };
        Ok(EmbeddingSettingsView {
            effective: match (&space, &status) {
                (Some(s), _) => s.description.clone(),
                (None, VectorStatus::Unavailable { reason }) => {
                    format!("unavailable: {reason} (keyword retrieval until it works)")
                }
                (None, _) => "none: keyword retrieval only".into(),
            },
            model_id: space.as_ref().map(|s| s.model_id().to_string()),
            over,
            api_key_set,
            vector_search: status,
        })
    }
}
