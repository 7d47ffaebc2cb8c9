//! A tenant's embedding settings as the knowledge base sees them: the override stored by
//! the domain, the model actually in use, and the re-embedding a model change needs.

use super::{Error, Knowledge};
use crate::auth::{Action, Caller};
use crate::domain::settings::EmbeddingSettingsPatch;
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

    /// Changes the tenant's embedding override; when that changes the model, queues the
    /// re-embedding of the tenant's chunks (vectors of different models never mix).
    /// Blocking (may load a model).
    pub fn put_embedding_settings(
        &self,
        caller: &Caller,
        p: EmbeddingSettingsPatch,
    ) -> Result<EmbeddingSettingsView, SettingsError> {
        // Checked before the current model is looked up, so a refused request loads none.
        require(caller)?;
        p.check()?;
        let t = caller.tenant();
        let before = self
            .space_for(t)
            .ok()
            .flatten()
            .map(|s| s.model_id().to_string());
        self.svc.put_embedding_settings(caller, p)?;
        let view = self.embedding_view(t)?;
        if view.model_id.is_some() && view.model_id != before {
            self.queue_reembed(t).map_err(SettingsError::Reembed)?;
        }
        Ok(view)
    }

    fn embedding_view(&self, t: &TenantId) -> Result<EmbeddingSettingsView, SettingsError> {
        let settings = self.svc.tenant_settings(t)?;
        let space = self.space_for(t).map_err(SettingsError::Unavailable)?;
        let mut over = settings.embeddings.clone();
        let api_key_set = over
            .as_ref()
            .is_some_and(|o| o.get("apiKeySealed").is_some());
        if let Some(serde_json::Value::Object(m)) = over.as_mut() {
            m.remove("apiKeySealed");
        }
        Ok(EmbeddingSettingsView {
            effective: match &space {
                Some(s) => s.description.clone(),
                None => "none: keyword retrieval only".into(),
            },
            model_id: space.as_ref().map(|s| s.model_id().to_string()),
            over,
            api_key_set,
        })
    }
}
