//! Per-tenant provider settings over the global defaults. API keys are write-only: sealed
//! at rest, never returned (only whether one is set and its last four characters).

use super::audit::{AuditAction, AuditEntry};
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
    /// The base URL is the tenant's own (not the operator's): it gets the outbound policy
    /// for tenant-set URLs and never the operator's key.
    pub tenant_url: bool,
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
    /// A base URL a tenant wants to set, under the tenant outbound policy (resolving its
    /// host now; every call checks again). The operator's own URL is always fine.
    /// Blocking: may resolve a host name.
    fn check_tenant_url(
        &self,
        url: &str,
        operator_url: &str,
    ) -> std::result::Result<(), crate::net::Refused> {
        let norm = |u: &str| u.trim().trim_end_matches('/').to_string();
        if norm(url) == norm(operator_url) {
            return Ok(());
        }
        self.config.tenant_outbound().check_now(url).map(|_| ())
    }

    /// The stored settings of a tenant, unchecked: only for code below api/ that runs for
    /// no caller (startup, index rebuilds, knowledge jobs) or has checked one already. Sealed
    /// secrets are in it; what a caller may see goes through the checked functions.
    pub(crate) fn tenant_settings(&self, tenant: &TenantId) -> Result<TenantSettings> {
        Ok(self
            .store
            .read(|tx| tx.get::<TenantSettings>(tenant, ""))?
            .unwrap_or_else(|| TenantSettings {
                tenant_id: tenant.clone(),
                ..Default::default()
            }))
    }

    /// The chat provider of a tenant: its overrides, else the server configuration.
    ///
    /// The operator's `OPENAI_API_KEY` only ever goes to the operator's `OPENAI_BASE_URL`:
    /// a tenant that points its base URL elsewhere without a key of its own calls without
    /// one (the rule the embedding settings follow too).
    ///
    /// Needs [`Action::RunAgent`]: the result holds the opened key.
    pub fn effective_ai(&self, caller: &Caller) -> Result<EffectiveAi> {
        caller
            .require(Action::RunAgent)
            .map_err(|d| Error::denied(d, "settings"))?;
        self.effective_ai_of(caller.tenant())
    }

    fn effective_ai_of(&self, tenant: &TenantId) -> Result<EffectiveAi> {
        let s = self.tenant_settings(tenant)?.ai;
        let operator_url = self.config.openai_base_url.trim().trim_end_matches('/');
        let tenant_url = s
            .base_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| *u != operator_url);
        let api_key = match &s.api_key_sealed {
            Some(sealed) => Some(self.sealer.open(sealed).ok_or_else(|| {
                Error::Internal(
                    "the stored model API key cannot be decrypted (data key changed?)".into(),
                )
            })?),
            None if tenant_url.is_some() => None,
            None => self
                .config
                .openai_api_key
                .as_ref()
                .map(|k| k.expose().to_string()),
        };
        Ok(EffectiveAi {
            tenant_url: tenant_url.is_some(),
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

    /// Whether the caller may try the tenant's model provider (a request made with the
    /// tenant's saved key): the same permission as reading and changing the AI settings.
    pub fn may_test_provider(&self, caller: &Caller) -> Result<()> {
        caller
            .require(Action::ManageSettings)
            .map_err(|d| Error::denied(d, "settings"))
    }

    pub fn get_ai_settings(&self, caller: &Caller) -> Result<AiSettingsView> {
        caller
            .require(Action::ManageSettings)
            .map_err(|d| Error::denied(d, "settings"))?;
        let s = self.tenant_settings(caller.tenant())?.ai;
        let eff = self.effective_ai_of(caller.tenant())?;
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
            if ok && let Err(e) = self.check_tenant_url(u, &self.config.openai_base_url) {
                c.fail("baseUrl", e.to_string());
            }
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
        // The names of what was set, never the values (the key least of all).
        let keys: Vec<&str> = [
            ("baseUrl", p.base_url.is_some()),
            ("apiKey", p.api_key.is_some()),
            ("model", p.model.is_some()),
            ("contextWindow", p.context_window.is_some()),
        ]
        .into_iter()
        .filter_map(|(k, set)| set.then_some(k))
        .collect();
        let t = caller.tenant().clone();
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
            if !keys.is_empty() {
                self.audit(
                    tx,
                    caller,
                    AuditEntry::new(AuditAction::SettingsChanged)
                        .target("settings", "ai", None)
                        .details(serde_json::json!({ "scope": "ai", "keys": keys })),
                )?;
            }
            Ok::<_, Error>(())
        })?;
        self.get_ai_settings(caller)
    }
}

/// An embedding-override PUT body: absent = unchanged, null = cleared.
#[derive(Debug, Default)]
pub struct EmbeddingSettingsPatch {
    /// `onnx`, `openai` or `none`.
    pub provider: Option<Option<String>>,
    /// For `onnx`: the name of a model folder under `<data>/models/`.
    pub model_folder: Option<Option<String>>,
    pub base_url: Option<Option<String>>,
    pub model: Option<Option<String>>,
    pub api_key: Option<Option<String>>,
}

impl EmbeddingSettingsPatch {
    /// The values a patch may carry.
    pub fn check(&self) -> Result<()> {
        let mut c = Checks::default();
        if let Some(Some(p)) = &self.provider {
            c.check(
                matches!(p.as_str(), "onnx" | "openai" | "none"),
                "provider",
                "must be onnx, openai or none",
            );
        }
        if let Some(Some(f)) = &self.model_folder {
            c.check(
                !f.is_empty()
                    && f.len() <= 100
                    && f.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    && !f.starts_with('.'),
                "modelFolder",
                "must be the name of a folder under <data>/models",
            );
        }
        if let Some(Some(u)) = &self.base_url {
            c.check(
                url::Url::parse(u)
                    .map(|u| matches!(u.scheme(), "http" | "https"))
                    .unwrap_or(false),
                "baseUrl",
                "must be an http(s) URL",
            );
        }
        c.finish()
    }
}

/// An embedding-override change worked out but not written yet, so that the knowledge base can
/// try the settings it would save (load the model, call the endpoint) before saving them.
#[derive(Debug)]
pub struct EmbeddingChange {
    tenant: TenantId,
    before: Option<serde_json::Value>,
    after: Option<serde_json::Value>,
}

impl EmbeddingChange {
    /// The override as it will be stored (key sealed); `None`: the server default applies.
    pub fn after(&self) -> Option<&serde_json::Value> {
        self.after.as_ref()
    }
}

impl Services {
    /// Applies an embedding-override patch to the caller's tenant. The key is sealed; a
    /// model folder is stored as its path under the data directory. Re-embedding after a
    /// model change is the knowledge base's business.
    pub fn put_embedding_settings(&self, caller: &Caller, p: EmbeddingSettingsPatch) -> Result<()> {
        loop {
            let change = self.prepare_embedding_settings(caller, &p)?;
            if self.commit_embedding_settings(caller, &change)? {
                return Ok(());
            }
        }
    }

    /// Works out what an embedding-override patch would store for the caller's tenant, without
    /// storing it (see [`commit_embedding_settings`](Self::commit_embedding_settings)).
    pub fn prepare_embedding_settings(
        &self,
        caller: &Caller,
        p: &EmbeddingSettingsPatch,
    ) -> Result<EmbeddingChange> {
        caller
            .require(Action::ManageSettings)
            .map_err(|d| Error::denied(d, "settings"))?;
        p.check()?;
        if let Some(Some(u)) = &p.base_url {
            let operator = self.config.embeddings_base_url.clone().unwrap_or_default();
            if let Err(e) = self.check_tenant_url(u, &operator) {
                let mut c = Checks::default();
                c.fail("baseUrl", e.to_string());
                c.finish()?;
            }
        }
        let t = caller.tenant();
        let data_dir = &self.config.data_dir;
        let before = self.tenant_settings(t)?.embeddings;
        let mut o = match before.clone() {
            Some(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let mut set = |k: &str, v: Option<Option<String>>| match v {
            Some(Some(x)) => {
                o.insert(k.into(), serde_json::Value::String(x));
            }
            Some(None) => {
                o.remove(k);
            }
            None => {}
        };
        set("provider", p.provider.clone());
        set("baseUrl", p.base_url.clone());
        set("model", p.model.clone());
        set(
            "modelDir",
            p.model_folder
                .clone()
                .map(|f| f.map(|f| data_dir.join("models").join(f).display().to_string())),
        );
        match &p.api_key {
            Some(Some(k)) => {
                o.insert(
                    "apiKeySealed".into(),
                    serde_json::Value::String(self.sealer.seal(k)),
                );
            }
            Some(None) => {
                o.remove("apiKeySealed");
            }
            None => {}
        }
        Ok(EmbeddingChange {
            tenant: t.clone(),
            before,
            after: (!o.is_empty()).then_some(serde_json::Value::Object(o)),
        })
    }

    /// Stores a prepared change, unless the tenant's override changed since it was prepared:
    /// then nothing is written and the answer is `false` (prepare it again).
    pub fn commit_embedding_settings(
        &self,
        caller: &Caller,
        change: &EmbeddingChange,
    ) -> Result<bool> {
        caller
            .require(Action::ManageSettings)
            .map_err(|d| Error::denied(d, "settings"))?;
        let t = caller.tenant();
        if &change.tenant != t {
            return Err(Error::Internal(
                "an embedding change was prepared for another tenant".into(),
            ));
        }
        self.store.write(|tx| {
            let mut s = tx
                .get::<TenantSettings>(t, "")?
                .unwrap_or_else(|| TenantSettings {
                    tenant_id: t.clone(),
                    ..Default::default()
                });
            if s.embeddings != change.before {
                return Ok::<_, Error>(false);
            }
            let none = serde_json::Value::Null;
            let keys: Vec<String> = super::audit::changed_keys(
                change.before.as_ref().unwrap_or(&none),
                change.after.as_ref().unwrap_or(&none),
            )
            .into_iter()
            .map(|k| {
                if k == "apiKeySealed" {
                    "apiKey".into()
                } else {
                    k
                }
            })
            .collect();
            s.embeddings = change.after.clone();
            tx.put(&s)?;
            if !keys.is_empty() {
                self.audit(
                    tx,
                    caller,
                    AuditEntry::new(AuditAction::SettingsChanged)
                        .target("settings", "embeddings", None)
                        .details(serde_json::json!({ "scope": "embeddings", "keys": keys })),
                )?;
            }
            Ok(true)
        })
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
