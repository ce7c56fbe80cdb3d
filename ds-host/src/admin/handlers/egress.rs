//! `/v1/appspaces/{key}/egress`: the allowlist and the egress log.

use super::*;

async fn egress_view(
    admin: &Admin,
    rec: &AppspaceRecord,
    live: &Appspace,
) -> Result<api::Egress, Failure> {
    let version = parse_version(&rec.version)?;
    let manifest = admin.state.manifest(&rec.app, &version).await?;
    Ok(api::Egress {
        allow: live
            .egress()
            .rules()
            .iter()
            .map(ToString::to_string)
            .collect(),
        requested: manifest
            .egress
            .iter()
            .map(|e| match e.port {
                Some(p) => format!("{}:{p}", e.host),
                None => e.host.clone(),
            })
            .collect(),
    })
}

pub(super) async fn show_egress(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
) -> Answer<api::Egress> {
    let (rec, live) = find(&admin, &key).await?;
    Ok(Json(egress_view(&admin, &rec, &live).await?))
}

/// Adds (`allow`) or removes entries; all are checked first, and an entry
/// to remove that is not on the list is an error: nothing changes then.
async fn change_egress(
    admin: &Admin,
    key: &str,
    body: Result<Json<api::EgressChange>, axum::extract::rejection::JsonRejection>,
    allow: bool,
) -> Result<api::Egress, Failure> {
    let Json(change) = body.map_err(|e| Failure::new(ErrorCode::Invalid, e.body_text()))?;
    if change.entries.is_empty() {
        return Err(Failure::new(ErrorCode::Invalid, "no entries given"));
    }
    let mut parsed = Vec::new();
    for e in &change.entries {
        let rule: Rule = e.parse().map_err(|err: crate::egress::rules::BadEntry| {
            Failure::new(ErrorCode::Invalid, format!("egress entry {err}"))
        })?;
        parsed.push(rule);
    }
    let (rec, live) = find(admin, key).await?;
    let mut rules = live.egress().rules();
    for rule in parsed {
        let present = rules.iter().position(|r| *r == rule);
        match (allow, present) {
            (true, None) => rules.push(rule),
            (true, Some(_)) => {}
            (false, Some(i)) => {
                rules.remove(i);
            }
            (false, None) => {
                return Err(Failure::new(
                    ErrorCode::NotFound,
                    format!("{rule} is not on the egress allowlist of {}", rec.domain),
                ))
            }
        }
    }
    let texts: Vec<String> = rules.iter().map(ToString::to_string).collect();
    admin.state.set_egress(&rec.name, &texts).await?;
    live.egress().set_rules(rules);
    super::follow_successor(admin, &live).await;
    admin.host.restart_for_allowlist(&live);
    egress_view(admin, &rec, &live).await
}

/// `POST /v1/appspaces/{key}/egress/{allow,deny}`, audited.
pub(super) async fn change_egress_list(
    State(admin): State<Arc<Admin>>,
    Extension(peer): Extension<Peer>,
    UrlPath((key, verb)): UrlPath<(String, String)>,
    body: Result<Json<api::EgressChange>, axum::extract::rejection::JsonRejection>,
) -> Answer<api::Egress> {
    let (action, allow) = match verb.as_str() {
        "allow" => ("appspace.egress.allow", true),
        "deny" => ("appspace.egress.deny", false),
        _ => return Err(Failure::new(ErrorCode::NotFound, "no such admin API route")),
    };
    let detail = body
        .as_ref()
        .map(|b| b.entries.join(" "))
        .unwrap_or_default();
    let outcome = change_egress(&admin, &key, body, allow).await;
    audited(&admin, &peer, action, &key, detail, outcome)
        .await
        .map(Json)
}

pub(super) async fn egress_log(
    State(admin): State<Arc<Admin>>,
    UrlPath(key): UrlPath<String>,
    Query(q): Query<LinesQuery>,
) -> Answer<Vec<api::EgressLogEntry>> {
    let rec = admin.state.appspace(&key).await?;
    let lines = q.lines.unwrap_or(50).min(10_000);
    let entries = admin.state.egress_log(&rec.name, lines).await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|e| api::EgressLogEntry {
                id: e.id,
                at: e.at,
                destination: e.event.destination,
                address: e.event.address,
                outcome: e.event.outcome.as_str().into(),
                reason: e.event.reason,
                bytes_up: e.event.bytes_up,
                bytes_down: e.event.bytes_down,
                duration_ms: e.event.duration.as_millis() as u64,
            })
            .collect(),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LinesQuery {
    lines: Option<u32>,
}
