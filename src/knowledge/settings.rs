//! A tenant's embedding settings as the knowledge base sees them: the override stored by
//! the domain, the model actually in use (or why it is unavailable), and the re-embedding a
//! model change needs. New settings are tried (model loaded, endpoint called once) before
//! they are saved: settings that do not work are refused and leave the old ones in place.

use super::{Bridge, Error, Knowledge, VectorStatus, tenant_embed_settings};
use crate::auth::{Action, Caller};
use crate::domain::settings::EmbeddingSettingsPatch;
use crate::model::{EmbeddingSwitch, TenantSettings};
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
    /// The model whose vectors answer searches now: while a change of model re-embeds the
    /// chunks, the previous one (so search keeps its quality); else `modelId`. Null when
    /// searches are keyword-only, also during a change whose previous model cannot be
    /// loaded (`vectorSearch` then says why).
    search_model_id: Option<String>,
    /// Re-embedding after a change of model, while it runs (or waits to run); null when
    /// there is none.
    reembedding: Option<ReembedProgress>,
}

/// How far a tenant's re-embedding has come.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReembedProgress {
    /// Chunks that have a vector of the new model.
    done: usize,
    /// All chunks of the tenant.
    total: usize,
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
        // What answers searches now keeps answering them until the new model's index holds
        // every chunk. Recorded before the change is saved, so that no search (and no
        // restart) ever sees the new model's still empty index in between.
        let serving = self.serving_record(t)?;
        if let Some(record) = &serving {
            self.set_switch(t, Some(record.clone()))
                .map_err(SettingsError::Internal)?;
        }
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
        let space = match self.space_for(t) {
            Ok(space) => space,
            Err(Error::Unavailable(_)) => None,
            Err(e) => return Err(SettingsError::Internal(e)),
        };
        let Some(space) = space else {
            // No vectors now (keyword only by choice, or a model that stopped working).
            self.set_switch(t, None).map_err(SettingsError::Internal)?;
            self.set_progress(t, None);
            return self.embedding_view(t);
        };
        let from_model = serving.as_ref().map(|r| r.from_model_id.clone());
        // Vectors an interrupted earlier change left in other spaces are stale.
        for other in self.spaces() {
            let model = other.model_id();
            if model != space.model_id() && Some(model) != from_model.as_deref() {
                other
                    .index
                    .delete_tenant(t)
                    .map_err(|e| SettingsError::Internal(e.into()))?;
            }
        }
        if from_model.as_deref() != Some(space.model_id()) {
            // The model changed: re-embed; the old space answers until that is done.
            let progress = self
                .count_embedded(t, space.model_id())
                .map_err(SettingsError::Internal)?;
            self.set_progress(t, Some(progress));
            self.queue_reembed(t).map_err(SettingsError::Reembed)?;
            return self.embedding_view(t);
        }
        // The same model (another key, or back to the one searches use): nothing to bridge;
        // chunks an undone change re-embedded meanwhile are embedded again.
        self.set_switch(t, None).map_err(SettingsError::Internal)?;
        let progress = self
            .count_embedded(t, space.model_id())
            .map_err(SettingsError::Internal)?;
        if progress.done < progress.total {
            self.set_progress(t, Some(progress));
            self.queue_reembed(t).map_err(SettingsError::Reembed)?;
        } else {
            self.recover_tenant(t, &space, false)
                .map_err(SettingsError::Reembed)?;
        }
        self.embedding_view(t)
    }

    /// The switch to record for a change of model: the settings and model of the space that
    /// answers the tenant's searches now (`None` when nothing does).
    fn serving_record(&self, t: &TenantId) -> Result<Option<EmbeddingSwitch>, SettingsError> {
        let settings = self.svc.tenant_settings(t)?;
        match self.bridge(t).map_err(SettingsError::Internal)? {
            Bridge::Old(from) => {
                // A change already under way: its old model still has every chunk.
                let record = settings
                    .embedding_switch
                    .filter(|r| r.from_model_id == from.model_id());
                if record.is_some() {
                    return Ok(record);
                }
            }
            // Nothing answers by meaning (the new index is partial): the change stays the
            // one recorded, keyword search until the next model holds every chunk.
            Bridge::Missing(_) => return Ok(settings.embedding_switch),
            Bridge::None => {}
        }
        Ok(match self.space_for(t) {
            Ok(Some(space)) => Some(EmbeddingSwitch {
                from: settings.embeddings,
                from_model_id: space.model_id().to_string(),
            }),
            Ok(None) | Err(Error::Unavailable(_)) => None,
            Err(e) => return Err(SettingsError::Internal(e)),
        })
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
        let bridge = self.bridge(t).map_err(SettingsError::Internal)?;
        // A change whose old model is missing: the new model works (and embeds), but
        // searches are keyword-only until its index is complete.
        let space = match (&status, &bridge) {
            (VectorStatus::Ok { .. }, _) | (_, Bridge::Missing(_)) => {
                self.space_for(t).ok().flatten()
            }
            _ => None,
        };
        Ok(EmbeddingSettingsView {
            effective: match (&space, &status) {
                (Some(s), VectorStatus::Unavailable { reason }) => {
                    format!("{} (searches: {reason})", s.description)
                }
                (Some(s), _) => s.description.clone(),
                (None, VectorStatus::Unavailable { reason }) => {
                    format!("unavailable: {reason} (keyword retrieval until it works)")
                }
                (None, _) => "none: keyword retrieval only".into(),
            },
            model_id: space.as_ref().map(|s| s.model_id().to_string()),
            search_model_id: match &bridge {
                Bridge::Old(from) => Some(from.model_id().to_string()),
                Bridge::Missing(_) => None,
                Bridge::None => space.as_ref().map(|s| s.model_id().to_string()),
            },
            over,
            api_key_set,
            vector_search: status,
            reembedding: self.reembed_progress(t).map(|p| ReembedProgress {
                done: p.done,
                total: p.total,
            }),
        })
    }
}
