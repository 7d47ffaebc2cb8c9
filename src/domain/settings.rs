//! Per-tenant provider settings over the global defaults. API keys are write-only: sealed
//! at rest, never returned (only whether one is set and its last four characters).

use super::{Checks, Error, Result, Services};
use crate::auth::{Action, Caller};
use crate::model::{AiSettings, TenantSettings};
use crate::types::TenantId;
use serde::Serialize;
use utoipa::ToSchema;

/// What GET /api/settings/ai shows.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiSettingsView {
    /// The endpoint in use (the tenant's, else the server default).
    pub base_url: String,
    pub model: String,
    pub context_window: u32,
    pub api_key_set: bool,
    /// `…abcd` of the key in use, if any.
    pub api_key_hint: Option<String>,
    /// Which values the tenant overrides.
    pub overrides: Vec<&'static str>,
}

/// A PUT body: absent = unchanged, null = back to the default.
#[derive(Debug, Default)]
pub struct AiSettingsPatch {
    pub base_url: Option<Option<String>>,
    pub api_key: Option<Option<String>>,
    pub model: Option<Option<String>>,
    pub context_window: Option<Option<u32>>,
}

/// The provider to use for a tenant, secrets opened.
#[derive(Clone)]
pub struct EffectiveAi {
    pub base_url: String,
    pub api_key: Option<String>,
    pub model: String,
    pub context_window: u32,
}

fn hint(k: &str) -> String {
    let tail: String = k
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

impl Services {
    pub fn tenant_settings(&self, tenant: &TenantId) -> Result<TenantSettings> {
        Ok(self
            .store
            .read(|tx| tx.get::<TenantSettings>(tenant, ""))?
            .unwrap_or_else(|| TenantSettings {
                tenant_id: tenant.clone(),
                ..Default::default()
            }))
    }

    /// The chat provider of a tenant: its overrides, else the server configuration.
    pub fn effective_ai(&self, tenant: &TenantId) -> Result<EffectiveAi> {
        let s = self.tenant_settings(tenant)?.ai;
        let api_key = match &s.api_key_sealed {
            Some(sealed) => Some(self.sealer.open(sealed).ok_or_else(|| {
                Error::Internal(
                    "the stored model API key cannot be decrypted (data key changed?)".into(),
                )
            })?),
            None => self
                .config
                .openai_api_key
                .as_ref()
                .map(|k| k.expose().to_string()),
        };
        Ok(EffectiveAi {
            base_url: s
                .base_url
                .clone()
                .unwrap_or_else(|| self.config.openai_base_url.clone()),
            api_key,
            model: s
                .model
                .clone()
                .unwrap_or_else(|| self.config.openai_model.clone()),
            context_window: s
                .context_window
                .unwrap_or(self.config.openai_context_window),
        })
    }

    pub fn get_ai_settings(&self, caller: &Caller) -> Result<AiSettingsView> {
        caller
            .require(Action::ManageSettings)
            .map_err(|d| Error::denied(d, "settings"))?;
        let s = self.tenant_settings(&caller.tenant_id)?.ai;
        let eff = self.effective_ai(&caller.tenant_id)?;
        Ok(view(&s, &eff))
    }

    pub fn put_ai_settings(&self, caller: &Caller, p: AiSettingsPatch) -> Result<AiSettingsView> {
        caller
            .require(Action::ManageSettings)
            .map_err(|d| Error::denied(d, "settings"))?;
        let mut c = Checks::default();
        if let Some(Some(u)) = &p.base_url {
            let ok = url::Url::parse(u)
                .map(|u| matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            c.check(
                ok,
                "baseUrl",
                "must be an http(s) URL such as https://api.openai.com/v1",
            );
        }
        if let Some(Some(k)) = &p.api_key {
            c.check(
                !k.trim().is_empty() && k.len() <= 500,
                "apiKey",
                "must be 1-500 characters",
            );
        }
        if let Some(Some(m)) = &p.model {
            c.text("model", m, 200);
        }
        if let Some(Some(w)) = p.context_window {
            c.check(
                (1024..=10_000_000).contains(&w),
                "contextWindow",
                "must be between 1024 and 10000000",
            );
        }
        c.finish()?;
        let t = caller.tenant_id.clone();
        self.store.write(|tx| {
            let mut s = tx
                .get::<TenantSettings>(&t, "")?
                .unwrap_or_else(|| TenantSettings {
                    tenant_id: t.clone(),
                    ..Default::default()
                });
            if let Some(v) = p.base_url {
                s.ai.base_url = v.map(|u| u.trim().trim_end_matches('/').to_string());
            }
            if let Some(v) = p.api_key {
                s.ai.api_key_sealed = v.map(|k| self.sealer.seal(k.trim()));
            }
            if let Some(v) = p.model {
                s.ai.model = v.map(|m| m.trim().to_string());
            }
            if let Some(v) = p.context_window {
                s.ai.context_window = v;
            }
            tx.put(&s)?;
            Ok::<_, Error>(())
        })?;
        self.get_ai_settings(caller)
    }
}

fn view(s: &AiSettings, eff: &EffectiveAi) -> AiSettingsView {
    let mut overrides = Vec::new();
    if s.base_url.is_some() {
        overrides.push("baseUrl");
    }
    if s.api_key_sealed.is_some() {
        overrides.push("apiKey");
    }
    if s.model.is_some() {
        overrides.push("model");
    }
    if s.context_window.is_some() {
        overrides.push("contextWindow");
    }
    AiSettingsView {
        base_url: eff.base_url.clone(),
        model: eff.model.clone(),
        context_window: eff.context_window,
        api_key_set: eff.api_key.is_some(),
        api_key_hint: eff.api_key.as_deref().map(hint),
        overrides,
    }
}
