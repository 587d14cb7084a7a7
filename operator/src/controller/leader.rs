//! Leader election on a `coordination.k8s.io/v1` Lease, so two operator
//! replicas never act at once. Writes are conditional on the Lease's
//! resourceVersion: of two racing candidates exactly one wins.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tracing::{info, warn};

use crate::error::{Error, Result};

/// A Lease held (or wanted) by this process.
#[derive(Clone, Debug)]
pub struct LeaderLease {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Ours,
    Theirs { holder: String },
}

/// Who holds `lease` at `now` (pure).
fn holder(lease: &Lease, me: &str, now: Timestamp) -> Verdict {
    let Some(spec) = &lease.spec else {
        return Verdict::Ours;
    };
    let Some(h) = spec.holder_identity.as_deref().filter(|h| !h.is_empty()) else {
        return Verdict::Ours;
    };
    if h == me {
        return Verdict::Ours;
    }
    let ttl = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let renewed = spec.renew_time.as_ref().map_or(0, |t| t.0.as_second());
    if now.as_second() - renewed > ttl {
        Verdict::Ours // expired: free to take
    } else {
        Verdict::Theirs {
            holder: h.to_string(),
        }
    }
}

impl LeaderLease {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.identity.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.duration.as_secs() as i32),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to take or renew the lease. `Ok(true)`: we hold it.
    pub async fn try_acquire(&self) -> Result<bool> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(None, now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Some(current) => match holder(&current, &self.identity, now) {
                Verdict::Theirs { holder } => {
                    tracing::debug!(%holder, "lease held by another replica");
                    Ok(false)
                }
                Verdict::Ours => {
                    let mut next = current.clone();
                    next.spec = Some(self.spec(current.spec.as_ref(), now));
                    match self
                        .api
                        .replace(&self.name, &PostParams::default(), &next)
                        .await
                    {
                        Ok(_) => Ok(true),
                        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                        Err(e) => Err(e.into()),
                    }
                }
            },
        }
    }

    /// Waits until this process holds the lease.
    pub async fn acquire(&self) -> Result<()> {
        let mut logged = false;
        loop {
            match self.try_acquire().await {
                Ok(true) => {
                    info!(lease = %self.name, identity = %self.identity, "became leader");
                    return Ok(());
                }
                Ok(false) if !logged => {
                    info!(lease = %self.name, "another replica leads; standing by");
                    logged = true;
                }
                Ok(false) => {}
                Err(e) => warn!(error = %e, "lease acquisition failed; retrying"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// Renews forever; returns an error once the lease could not be renewed
    /// within its duration (then another replica may take over: stop acting).
    pub async fn hold(&self) -> Error {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => return Error::LeaseLost(self.name.clone()),
                Err(e) => warn!(error = %e, "lease renewal failed"),
            }
            if last_ok.elapsed() >= self.duration {
                return Error::LeaseLost(self.name.clone());
            }
        }
    }

    /// Gives the lease up on shutdown so a standby takes over at once.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        if holder(&lease, &self.identity, Timestamp::now()) != Verdict::Ours {
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = None;
        }
        let _ = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed: i64, ttl: i32) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(ttl),
                renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn who_holds_the_lease() {
        let now = Timestamp::from_second(1_000).unwrap();
        assert_eq!(holder(&lease(Some("a"), 995, 15), "a", now), Verdict::Ours);
        assert_eq!(
            holder(&lease(Some("b"), 995, 15), "a", now),
            Verdict::Theirs { holder: "b".into() }
        );
        assert_eq!(
            holder(&lease(Some("b"), 980, 15), "a", now),
            Verdict::Ours,
            "expired"
        );
        assert_eq!(
            holder(&lease(None, 995, 15), "a", now),
            Verdict::Ours,
            "released"
        );
        assert_eq!(
            holder(&lease(Some(""), 995, 15), "a", now),
            Verdict::Ours,
            "released"
        );
    }
}
