//! The strict JSON body decoder every JSON route uses (`api::extract::parse_json`, over
//! `api::strict_json`): arbitrary bytes as the body of a request type chosen by the first
//! byte. Any input gives a value or an `ApiError` with a 4xx status, never a panic. The
//! OpenAI-compatible `/v1/chat/completions` body has its own decoder and checks
//! (`api::openai::check_completion_body`, OpenAI's error shape): the same holds for it.
#![no_main]

use aigentable::api::error::ApiError;
use aigentable::api::extract::parse_json;
use aigentable::api::{
    agents, api_keys, auth, backup, channels, conversations, documents, plans, settings, tenants,
    widget,
};
use libfuzzer_sys::fuzz_target;

fn check<T: serde::de::DeserializeOwned>(body: &[u8]) {
    let r: Result<T, ApiError> = parse_json(body);
    if let Err(e) = r {
        let status = e.status;
        assert!(
            status.is_client_error(),
            "a body decoding error is a 4xx: {status}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    match pick % 31 {
        0 => check::<agents::AgentReq>(body),
        1 => check::<agents::TestReq>(body),
        2 => check::<api_keys::CreateKeyReq>(body),
        3 => check::<auth::RegisterReq>(body),
        4 => check::<auth::LoginReq>(body),
        5 => check::<auth::ResetReq>(body),
        6 => check::<channels::ChannelReq>(body),
        7 => check::<channels::WebSettingsReq>(body),
        8 => check::<channels::TelegramCredentialsReq>(body),
        9 => check::<conversations::CreateConversationReq>(body),
        10 => check::<conversations::PostMessageReq>(body),
        11 => check::<documents::SearchReq>(body),
        12 => check::<settings::AiSettingsReq>(body),
        13 => check::<settings::EmbeddingSettingsReq>(body),
        14 => check::<tenants::CreateTenantReq>(body),
        15 => check::<tenants::InviteReq>(body),
        16 => check::<tenants::UpdateUserReq>(body),
        17 => check::<widget::VisitorReq>(body),
        18 => check::<widget::VisitorMessageReq>(body),
        19 => check::<widget::RatingReq>(body),
        20 => check::<auth::RefreshReq>(body),
        21 => check::<auth::LogoutReq>(body),
        22 => check::<auth::ForgotReq>(body),
        23 => check::<auth::AcceptInviteReq>(body),
        24 => check::<channels::TemplateReq>(body),
        25 => check::<conversations::AssignReq>(body),
        26 => check::<plans::PlanReq>(body),
        27 => check::<plans::SubscriptionReq>(body),
        28 => check::<tenants::UpdateTenantReq>(body),
        29 => check::<backup::ExportReq>(body),
        _ => {
            // At most 4 messages, so the fuzzer also meets the limit's rejection.
            if let Err(e) = aigentable::api::openai::check_completion_body(body, 4) {
                let status = e.status();
                assert!(
                    status.is_client_error(),
                    "a completion body error is a 4xx: {status}"
                );
            }
        }
    }
});
