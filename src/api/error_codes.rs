//! The one table of error codes: every `error.code` the API can answer, with its HTTP status
//! and a one-line meaning. The README's error-code list and the OpenAPI `ErrorCode` schema
//! are produced from it.
//!
//! Codes are a public contract: never rename or reuse one.
//!
//! **Adding a code** is one line in the `error_codes!` call below
//! (`Variant = "snake_code", status, "meaning";`), then
//! `UPDATE_README=1 cargo test --lib readme_error_codes` to regenerate the README section
//! between its markers. Build the error with [`ApiError::of`](super::error::ApiError::of)
//! (status from this table) or pass the literal to `ApiError::new` / a `domain::Error`
//! variant; the test `every_code_used_in_src_is_in_the_table` scans `src/` for such literals
//! and fails for one the table does not list (and for a listed code nothing uses).
//!
//! Not in this table: the OpenAI-compatible `/v1` routes answer OpenAI's own error shape and
//! codes (`invalid_request`, `model_not_found`, ...), documented with those routes.

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

macro_rules! error_codes {
    ($($(#[$m:meta])* $variant:ident = $code:literal, $status:literal, $meaning:literal;)*) => {
        /// A stable error code (`error.code` of every error body).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(
                #[doc = $meaning]
                $(#[$m])*
                $variant,
            )*
        }

        impl ErrorCode {
            /// Every code, in table order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The snake_case code clients see.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $code,)*
                }
            }

            /// The HTTP status this code is answered with.
            pub fn status(self) -> StatusCode {
                let s: u16 = match self {
                    $(ErrorCode::$variant => $status,)*
                };
                StatusCode::from_u16(s).expect("BUG: error code table holds a valid status")
            }

            /// One line saying what the code means.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $meaning,)*
                }
            }
        }
    };
}

error_codes! {
    ValidationFailed = "validation_failed", 400, "Some fields are invalid; `details.fields` lists `{field, message}` for each.";
    MalformedJson = "malformed_json", 400, "The body is not one well-formed JSON value, or not the JSON type the route expects.";
    InvalidId = "invalid_id", 400, "An id in the path, query or body is not a valid id; `details.param` names it.";
    InvalidQuery = "invalid_query", 400, "A query-string parameter is invalid (e.g. `limit` outside 1-200, a bad `cursor`).";
    InvalidMultipart = "invalid_multipart", 400, "The multipart upload body cannot be parsed.";
    EmptyFile = "empty_file", 400, "An uploaded file is empty; `details.file` names it.";
    UnsupportedChannelType = "unsupported_channel_type", 400, "The action does not apply to channels of this type (an identity secret for a non-web channel, a provider test of a web channel, a WhatsApp template in another channel).";
    ChannelWithoutAgent = "channel_without_agent", 400, "The web widget's channel has no agent to answer its visitors.";
    Unauthorized = "unauthorized", 401, "No credentials were sent.";
    InvalidCredentials = "invalid_credentials", 401, "Wrong email or password.";
    InvalidToken = "invalid_token", 401, "The access token is invalid or expired (400 for a bad reset or invitation link).";
    SessionRevoked = "session_revoked", 401, "The session of this token has ended; sign in again.";
    InvalidRefreshToken = "invalid_refresh_token", 401, "The refresh token is invalid or expired.";
    RefreshTokenReused = "refresh_token_reused", 401, "A rotated-away refresh token was presented; its session is revoked.";
    InvalidApiKey = "invalid_api_key", 401, "The API key is invalid, revoked or expired.";
    IdentityRequired = "identity_required", 401, "The widget verifies identities: the visitor must send `identity {externalId, hash}`.";
    IdentityInvalid = "identity_invalid", 401, "The visitor's identity hash is not the HMAC-SHA256 of its `externalId` under the widget's secret.";
    InvalidSignature = "invalid_signature", 401, "A provider webhook without the channel's secret or signature (forged or misaddressed): nothing was stored.";
    Forbidden = "forbidden", 403, "The caller's role does not allow this action.";
    SignupDisabled = "signup_disabled", 403, "Sign-up or joining is turned off on this server (`SIGNUP`).";
    TenantSuspended = "tenant_suspended", 403, "The caller's tenant is suspended.";
    OriginNotAllowed = "origin_not_allowed", 403, "The page's origin is not among the web widget's allowed origins.";
    ChannelPaused = "channel_paused", 403, "The channel (web widget) is paused and takes no messages.";
    PlanLimitReached = "plan_limit_reached", 402, "The tenant's plan does not allow more of this; `details` names the `limit`, what is `used` and the `max`.";
    SubscriptionInactive = "subscription_inactive", 402, "The tenant's subscription is `past_due` or `canceled` (`details.status`): nothing new can be created.";
    RouteNotFound = "route_not_found", 404, "No such route under /api.";
    TenantNotFound = "tenant_not_found", 404, "No such tenant (or not visible to the caller).";
    UserNotFound = "user_not_found", 404, "No such user in the tenant.";
    InvitationNotFound = "invitation_not_found", 404, "No such invitation in the tenant.";
    ApiKeyNotFound = "api_key_not_found", 404, "No such API key in the tenant.";
    AgentNotFound = "agent_not_found", 404, "No such agent in the tenant.";
    DocumentNotFound = "document_not_found", 404, "No such document in the tenant.";
    ConversationNotFound = "conversation_not_found", 404, "No such conversation in the tenant.";
    MessageNotFound = "message_not_found", 404, "No such message in the conversation.";
    AttachmentNotFound = "attachment_not_found", 404, "No such attachment of the message (or its file is gone).";
    ChannelNotFound = "channel_not_found", 404, "No such channel in the tenant.";
    WidgetNotFound = "widget_not_found", 404, "No web widget has this widget key.";
    DeadLetterNotFound = "dead_letter_not_found", 404, "No such stored webhook delivery of the channel.";
    JobNotFound = "job_not_found", 404, "No such job in the tenant.";
    PlanNotFound = "plan_not_found", 404, "No such plan.";
    MethodNotAllowed = "method_not_allowed", 405, "The route does not accept this method (see `Allow`).";
    EmailTaken = "email_taken", 409, "An account with this email already exists.";
    LastAdmin = "last_admin", 409, "A tenant must keep at least one TENANT_ADMIN.";
    OutsideMessagingWindow = "outside_messaging_window", 409, "The customer's last message is older than the provider's messaging window (24 hours; Messenger/Instagram human replies 7 days): send a WhatsApp template, or wait for the customer to write.";
    SlugTaken = "slug_taken", 409, "Another agent of the tenant already uses this slug.";
    DuplicateDocument = "duplicate_document", 409, "The same file was already uploaded; `details.documentId` is the existing one.";
    ChannelChanged = "channel_changed", 409, "The channel was changed by someone else during the update; reload and retry.";
    ConversationNotClosed = "conversation_not_closed", 409, "A conversation is rated once it is closed.";
    PlanInUse = "plan_in_use", 409, "Tenants are on this plan (`details.tenants`); move them to another plan before deleting it.";
    PlanBuiltIn = "plan_built_in", 409, "The built-in unlimited plan cannot be changed or deleted.";
    ImportConflict = "import_conflict", 409, "A tenant import collides with this install: the tenant id exists, or an email (or another unique key) of the export belongs to someone here.";
    MessageNotResendable = "message_not_resendable", 409, "Only a failed AI or human reply in a messaging channel's conversation can be resent (a WhatsApp template is sent again instead).";
    NotADeadLetter = "not_a_dead_letter", 409, "The webhook delivery was processed or is queued; only dead letters are replayed.";
    PayloadTooLarge = "payload_too_large", 413, "The body or an uploaded file is larger than the configured limit.";
    UnsupportedMediaType = "unsupported_media_type", 415, "Wrong `Content-Type`, or an uploaded file type that is not supported.";
    InvalidArchive = "invalid_archive", 422, "The uploaded archive is not a tenant export this build can read: damaged, truncated, altered (checksums), a full backup, or from a newer version.";
    PassphraseRequired = "passphrase_required", 422, "The export's secrets are sealed with a passphrase: send it in `X-Export-Passphrase` (a wrong one gets this code too); an export passphrase must have at least 12 characters.";
    EmbeddingsUnavailable = "embeddings_unavailable", 422, "The embedding model is not available (vector search, embedding settings).";
    RateLimited = "rate_limited", 429, "Too many requests; retry after `Retry-After` seconds.";
    TooManySockets = "too_many_sockets", 429, "Socket.IO connect refused: the user, key or visitor already holds as many sockets as allowed (`SOCKET_MAX_PER_USER`, `SOCKET_MAX_PER_VISITOR`).";
    InternalError = "internal_error", 500, "Our fault; the `requestId` identifies it in the server log.";
    UpstreamFailed = "upstream_failed", 502, "The AI model provider failed or could not be reached.";
    ServerBusy = "server_busy", 503, "Too many passwords are being checked at once (sign-in, sign-up, reset, invitation); retry after `Retry-After` seconds.";
    StorageUnavailable = "storage_unavailable", 503, "The store failed on the disk and could not be reopened yet (e.g. the disk is still full); retried at every request.";
    StorageReadOnly = "storage_read_only", 503, "The data directory is read-only: nothing was written; reads still work.";
    InsufficientStorage = "insufficient_storage", 507, "The server's disk is full (or over quota): nothing was written; reads still work. Retry once space is freed.";
}

impl ErrorCode {
    /// The table entry of a code string, if it is one.
    pub fn find(code: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// The README section (between the markers) listing every code.
    pub fn readme_table() -> String {
        let mut out = String::from("| Status | Code | Meaning |\n|---|---|---|\n");
        for c in ErrorCode::ALL {
            out.push_str(&format!(
                "| {} | `{}` | {} |\n",
                c.status().as_u16(),
                c.as_str(),
                c.meaning()
            ));
        }
        out
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The OpenAPI schema: a string enum of every code, in table order.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Stable error code; the README lists each with its status and meaning.",
            ))
            .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.as_str())))
            .into()
    }
}

impl ToSchema for ErrorCode {}

impl From<ErrorCode> for std::borrow::Cow<'static, str> {
    fn from(c: ErrorCode) -> Self {
        std::borrow::Cow::Borrowed(c.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    const START: &str = "<!-- error-codes:start -->";
    const END: &str = "<!-- error-codes:end -->";

    fn root() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    /// README's list is produced from the table: this test fails when they differ;
    /// `UPDATE_README=1` rewrites the section instead.
    #[test]
    fn readme_error_codes() {
        let path = root().join("README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let (Some(a), Some(b)) = (readme.find(START), readme.find(END)) else {
            panic!("README.md lacks the {START} ... {END} markers");
        };
        let want = format!("{START}\n{}{END}", ErrorCode::readme_table());
        let have = &readme[a..b + END.len()];
        if have == want {
            return;
        }
        if std::env::var_os("UPDATE_README").is_some() {
            let new = format!("{}{want}{}", &readme[..a], &readme[b + END.len()..]);
            std::fs::write(&path, new).unwrap();
            return;
        }
        panic!(
            "README.md's error-code section differs from src/api/error_codes.rs; run \
             `UPDATE_README=1 cargo test --lib readme_error_codes`"
        );
    }

    fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rs_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The string literal starting `s` (after blanks), if `s` starts with one.
    fn literal(s: &str) -> Option<&str> {
        let s = s.trim_start().strip_prefix('"')?;
        s.split('"').next()
    }

    /// Skips the first argument of a call (up to its top-level comma).
    fn after_first_arg(s: &str) -> Option<&str> {
        let mut depth = 0i32;
        for (i, ch) in s.char_indices() {
            match ch {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' if depth == 0 => return None,
                ')' | ']' | '}' => depth -= 1,
                ',' if depth == 0 => return Some(&s[i + 1..]),
                _ => {}
            }
        }
        None
    }

    fn is_code(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    }

    /// Every error code written as a literal in a source file: `ApiError::new(status,
    /// "code", ..)`, a domain error `Error::Variant("code", ..)` (`NotFound("what")` is
    /// `what_not_found`), a JSON `"code": "code"`, and `ErrorCode::Variant` names.
    /// `any_error` says whether every `Error::` is the domain's (in api/ and domain/);
    /// elsewhere only `domain::Error::` and `DomainError::` are.
    fn codes_in(text: &str, any_error: bool) -> Vec<String> {
        let mut out = Vec::new();
        for (i, _) in text.match_indices("ApiError::new(") {
            if let Some(c) = after_first_arg(&text[i + 14..]).and_then(literal) {
                out.push(c.to_string());
            }
        }
        for (i, _) in text.match_indices("Error::") {
            let before = &text[..i];
            if !any_error && !before.ends_with("domain::") && !before.ends_with("Domain") {
                continue;
            }
            let rest = &text[i + 7..];
            let name_len = rest
                .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                .unwrap_or(rest.len());
            if let Some(args) = rest[name_len..].strip_prefix('(')
                && rest.starts_with(|c: char| c.is_ascii_uppercase())
                && let Some(c) = literal(args)
            {
                out.push(if &rest[..name_len] == "NotFound" {
                    format!("{c}_not_found")
                } else {
                    c.to_string()
                });
            }
        }
        for (i, _) in text.match_indices("\"code\":") {
            if let Some(c) = literal(&text[i + 7..]) {
                out.push(c.to_string());
            }
        }
        for (i, _) in text.match_indices("ErrorCode::") {
            let rest = &text[i + 11..];
            let n = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            if let Some(c) = ErrorCode::ALL
                .iter()
                .find(|c| format!("{c:?}") == rest[..n])
            {
                out.push(c.as_str().to_string());
            }
        }
        out.retain(|c| is_code(c));
        out
    }

    #[test]
    fn every_code_used_in_src_is_in_the_table() {
        let mut files = Vec::new();
        rs_files(&root().join("src"), &mut files);
        let mut used = BTreeSet::new();
        let mut unknown = Vec::new();
        for f in &files {
            let rel = f
                .strip_prefix(root())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            // The table itself; /v1 and the LLM client speak OpenAI's codes.
            if rel.ends_with("api/error_codes.rs")
                || rel.ends_with("api/openai.rs")
                || rel.starts_with("src/llm/")
            {
                continue;
            }
            let text = std::fs::read_to_string(f).unwrap();
            let any_error = rel.starts_with("src/api/") || rel.starts_with("src/domain/");
            for c in codes_in(&text, any_error) {
                if ErrorCode::find(&c).is_none() {
                    unknown.push(format!("{rel}: `{c}`"));
                }
                used.insert(c);
            }
        }
        assert!(
            unknown.is_empty(),
            "error codes used in src but missing from src/api/error_codes.rs: {unknown:#?}"
        );
        let unused: Vec<_> = ErrorCode::ALL
            .iter()
            .filter(|c| !used.contains(c.as_str()))
            .collect();
        assert!(
            unused.is_empty(),
            "codes in the table that nothing in src answers (remove them): {unused:?}"
        );
    }

    #[test]
    fn the_scanner_finds_each_way_of_writing_a_code() {
        let src = r#"
            ApiError::new(StatusCode::CONFLICT, "slug_taken", "x");
            ApiError::new(
                s,
                "method_not_allowed",
                format!("{}", a),
            );
            Err(Error::Invalid("invalid_token", "bad".into()));
            crate::domain::Error::NotFound("agent");
            json!({"error": {"code": "upstream_failed"}});
            ApiError::of(ErrorCode::RateLimited, "slow down");
            ApiError::new(StatusCode::UNAUTHORIZED, code, msg);
        "#;
        assert_eq!(
            codes_in(src, true),
            [
                "slug_taken",
                "method_not_allowed",
                "invalid_token",
                "agent_not_found",
                "upstream_failed",
                "rate_limited"
            ]
        );
    }

    #[test]
    fn other_layers_errors_are_not_codes() {
        let src = r#"Error::Io("poisoned".into()); crate::domain::Error::NotFound("job");"#;
        assert_eq!(codes_in(src, false), ["job_not_found"]);
    }

    #[test]
    fn codes_are_unique_snake_case_with_error_statuses() {
        let mut seen = BTreeSet::new();
        for c in ErrorCode::ALL {
            assert!(is_code(c.as_str()), "{c:?}");
            assert!(seen.insert(c.as_str()), "duplicate {}", c.as_str());
            assert!(c.status().is_client_error() || c.status().is_server_error());
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::json!(c.as_str())
            );
        }
    }
}
