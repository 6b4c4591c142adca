//! Who is calling: HTTP basic auth against the broker's users, and what their tags let them
//! see and do, as `rabbit_mgmt_util` decides it. A user needs one of the tags
//! `management`, `policymaker`, `monitoring` or `administrator` to use the API at all;
//! `monitoring` sees every vhost, connection and node; `policymaker` manages policies;
//! `administrator` everything. Everyone else sees the vhosts they have permissions in.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use warren_core::User;

use crate::Management;
use crate::error::ApiError;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user: User,
}

const MANAGEMENT_TAGS: [&str; 4] = ["management", "policymaker", "monitoring", "administrator"];

impl FromRequestParts<Arc<Management>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<Management>,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::Unauthenticated);
        };
        let (name, password) = basic(value.to_str().unwrap_or("")).ok_or(ApiError::LoginFailed)?;
        let user = state.broker.authenticate(&name, &password).ok_or(ApiError::LoginFailed)?;
        if user.loopback_only {
            let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
            if !peer.is_some_and(|p| p.ip().is_loopback()) {
                return Err(ApiError::LoginFailed);
            }
        }
        if !MANAGEMENT_TAGS.iter().any(|t| user.has_tag(t)) {
            return Err(ApiError::NotAuthorised("Not management user".into()));
        }
        Ok(Caller { user })
    }
}

/// `Basic base64(name:password)`.
fn basic(header: &str) -> Option<(String, String)> {
    let encoded = header.strip_prefix("Basic ").or_else(|| header.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.user.has_tag("administrator")
    }

    /// `monitoring` or `administrator`: sees every vhost, connection and node.
    pub fn is_monitor(&self) -> bool {
        self.is_admin() || self.user.has_tag("monitoring")
    }

    /// `policymaker` or `administrator`: manages policies.
    pub fn is_policymaker(&self) -> bool {
        self.is_admin() || self.user.has_tag("policymaker")
    }

    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not administrator user".into()))
        }
    }

    pub fn require_monitor(&self) -> Result<(), ApiError> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not monitor user".into()))
        }
    }

    pub fn require_policymaker(&self) -> Result<(), ApiError> {
        if self.is_policymaker() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not policymaker user".into()))
        }
    }

    /// Whether the caller sees what is inside `vhost` (its queues, exchanges, bindings):
    /// administrators everywhere, others where they have permissions.
    pub fn sees(&self, state: &Management, vhost: &str) -> bool {
        self.is_admin() || state.broker.permissions(&self.user.name, vhost).is_some()
    }

    /// 404 for a vhost that does not exist, 401 for one the caller may not look into.
    pub fn vhost(
        &self,
        state: &Management,
        vhost: &str,
    ) -> Result<Arc<warren_core::vhost::VHost>, ApiError> {
        let v = state.broker.vhost(vhost).ok_or(ApiError::NotFound)?;
        if !self.sees(state, vhost) {
            return Err(ApiError::NotAuthorised(
                "User not authorised to access virtual host".into(),
            ));
        }
        Ok(v)
    }

    /// The caller's AMQP permissions in `vhost`: the API's declares, deletes, publishes and
    /// gets are checked as the same operations over AMQP are.
    pub fn access(&self, state: &Management, vhost: &str) -> warren_core::users::Access {
        warren_core::users::Access::new(state.broker.clone(), &self.user.name, vhost)
    }

    /// The vhosts whose contents the caller sees, by name.
    pub fn visible_vhosts(&self, state: &Management) -> Vec<Arc<warren_core::vhost::VHost>> {
        let mut all: Vec<_> =
            state.broker.vhost_list().into_iter().filter(|v| self.sees(state, &v.name)).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        assert_eq!(basic("Basic Z3Vlc3Q6Z3Vlc3Q="), Some(("guest".into(), "guest".into())));
        assert_eq!(
            basic("Basic dTpwOnE="),
            Some(("u".into(), "p:q".into())),
            "colons in passwords"
        );
        assert_eq!(basic("Bearer x"), None);
        assert_eq!(basic("Basic !!!"), None);
    }
}
