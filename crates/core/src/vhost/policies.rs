//! Policies: setting and clearing them, and applying the one that applies to each queue and
//! exchange whenever they change.

use std::sync::Arc;

use super::{VHost, read, write};
use crate::error::{AmqpError, Result};
use crate::exchange::Exchange;
use crate::policy::{self, Policy};

impl VHost {
    pub(super) fn insert_policy(&self, p: Policy) {
        let mut ps = write(&self.policies);
        match ps.binary_search_by(|x| x.name.as_str().cmp(&p.name)) {
            Ok(i) => ps[i] = p,
            Err(i) => ps.insert(i, p),
        }
    }

    /// Sets (adds or replaces) a policy: it applies at once to every queue and exchange of the
    /// vhost, and is durable.
    pub fn set_policy(&self, p: Policy) -> Result<()> {
        let _one_at_a_time = self.policy_change.lock().unwrap_or_else(|p| p.into_inner());
        self.insert_policy(p);
        self.reapply_policies();
        self.persisted(true)
    }

    /// Clears a policy; 404 if there is none of that name.
    pub fn clear_policy(&self, name: &str) -> Result<()> {
        let _one_at_a_time = self.policy_change.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut ps = write(&self.policies);
            let Ok(i) = ps.binary_search_by(|x| x.name.as_str().cmp(name)) else {
                return Err(AmqpError::not_found(format!(
                    "Parameter does not exist: policy '{name}' in vhost '{}'",
                    self.name
                )));
            };
            ps.remove(i);
        }
        self.reapply_policies();
        self.persisted(true)
    }

    /// The policies, by name.
    pub fn policies(&self) -> Vec<Policy> {
        read(&self.policies).clone()
    }

    /// Applies to every queue and exchange the policy that now applies to it.
    fn reapply_policies(&self) {
        let policies = self.policies();
        for q in self.queue_list() {
            q.apply_policy(policy::applying(&policies, &q.name, Some(q.kind())));
            if let Some(me) = self.me.upgrade() {
                me.watch_expiry(&q);
            }
        }
        let exchanges: Vec<Arc<Exchange>> = read(&self.exchanges).values().cloned().collect();
        for e in exchanges {
            e.apply_policy(policy::applying(&policies, &e.name, None));
        }
    }
}
