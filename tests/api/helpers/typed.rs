//! The typed client of `clients/rust` for the happy paths: the values a call answers, compared
//! as typed values instead of indexed JSON. What the wire looks like (envelopes, exact errors,
//! hostile bytes) is for [`super::call`] and the assertions of `envelope.rs`.

use uuid::Uuid;

use super::TestApp;

impl TestApp {
    /// The typed client (`clients/rust`) over HTTP, acting with [`TestApp::token`], each call
    /// made once (no retries, so that a test sees every answer). For the happy paths, where the
    /// values matter; the wire itself is asserted with [`super::call`] and the envelope helpers.
    pub fn client(&self) -> opportunity_client::Client {
        self.client_as(&self.token())
    }

    /// [`TestApp::client`] with another token.
    pub fn client_as(&self, token: &str) -> opportunity_client::Client {
        opportunity_client::Client::http(&self.url(), token)
            .expect("the client takes the app's URL")
            .with_retry(opportunity_client::RetryPolicy::none())
    }
}

/// The params of a minimal create, typed: a customer, `title` and `retrofit`.
pub fn new_opportunity(title: &str) -> opportunity_client::CreateOpportunity {
    opportunity_client::CreateOpportunity::new(Uuid::new_v4(), title, opportunity_client::PipelineType::Retrofit)
}

/// The §4 `data.code` and `data.reason` of a refused typed call, for one `assert_eq!`.
pub fn refusal(e: &opportunity_client::ClientError) -> (Option<i32>, Option<&str>, Option<&str>) {
    (e.code(), e.data_code(), e.reason())
}
