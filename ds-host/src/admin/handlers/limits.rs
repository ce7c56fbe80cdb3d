//! `/v1/appspaces/{key}/limits`: show and change, live.

use super::appspaces::limits_view;
use super::*;

pub(super) async fn show_limits(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::Limits> {
    let (_, live) = find(&admin, &key).await?;
    Ok(Json(limits_view(live.limits())))
}

fn check_limits(change: &api::LimitsChange) -> Result<(), Failure> {
    use ds_api::limits::{check_cpus, check_memory, check_pids};
    let invalid = |m: String| Failure::new(ErrorCode::Invalid, m);
    if let Some(m) = change.memory_bytes {
        check_memory(m).map_err(invalid)?;
    }
    if let Some(c) = change.cpus {
        check_cpus(c).map_err(invalid)?;
    }
    if let Some(p) = change.pids {
        check_pids(p).map_err(invalid)?;
    }
    if change.memory_bytes.is_none() && change.cpus.is_none() && change.pids.is_none() {
        return Err(invalid("no limit to change".into()));
    }
    Ok(())
}

pub(super) async fn change_limits(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath(key): UrlPath<String>,
    body: Result<Json<api::LimitsChange>, axum::extract::rejection::JsonRejection>,
) -> Answer<api::LimitsApplied> {
    let (outcome, detail) = match body {
        Err(e) => (
            Err(Failure::new(ErrorCode::Invalid, e.body_text())),
            String::new(),
        ),
        Ok(Json(change)) => (
            apply_limits(&admin, &key, change).await,
            format!("{change:?}"),
        ),
    };
    audited(&admin, &peer, "appspace.limits", &key, detail, outcome)
        .await
        .map(Json)
}

/// Applies to the running sandbox first (the kernel may refuse, e.g. a
/// memory limit below what is in use), then records; a failure on either
/// side leaves both as they were.
async fn apply_limits(
    admin: &Admin,
    key: &str,
    change: api::LimitsChange,
) -> Result<api::LimitsApplied, Failure> {
    check_limits(&change)?;
    let (rec, live) = find(admin, key).await?;
    let old = live.limits();
    let new = ResourceLimits {
        memory_bytes: change.memory_bytes.unwrap_or(old.memory_bytes),
        cpus: change.cpus.unwrap_or(old.cpus),
        pids: change.pids.unwrap_or(old.pids),
    };
    let applied_live = match live.set_limits(new) {
        Ok(live) => live,
        Err(e) => {
            let _ = live.set_limits(old);
            return Err(Failure::new(
                ErrorCode::Invalid,
                format!("the running sandbox refused the limits: {e}"),
            ));
        }
    };
    let update = LimitsUpdate {
        memory_bytes: change.memory_bytes,
        cpus: change.cpus,
        pids: change.pids,
    };
    if let Err(e) = admin.state.set_limits(&rec.name, update).await {
        let _ = live.set_limits(old);
        return Err(e.into());
    }
    Ok(api::LimitsApplied {
        limits: limits_view(new),
        applied_live,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded() {
        let c = |memory_bytes, cpus, pids| {
            check_limits(&api::LimitsChange {
                memory_bytes,
                cpus,
                pids,
            })
            .is_ok()
        };
        assert!(c(Some(64 << 20), Some(0.5), Some(32)));
        assert!(!c(None, None, None));
        assert!(!c(Some(1024), None, None));
        assert!(!c(None, Some(0.0), None));
        assert!(!c(None, Some(f64::NAN), None));
        assert!(!c(None, None, Some(0)));
    }
}
