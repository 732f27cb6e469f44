//! `spindle profiles show|explain|search` and `spindle identity resolve|rebuild`.

use std::path::Path;

use anyhow::Context;
use chrono::Utc;
use spindle_config::Config;
use spindle_identity::links::LinkRules;
use spindle_identity::profile::{self, ProfileDocument};
use spindle_identity::{IdentityEngine, explain};
use spindle_model::{JobId, JobTrigger, NewAuditEntry};
use spindle_store::{IdentityStore, ProfileStore, SqlStore};

use crate::commands::{cli_actor, lock_store, open_store, print};
use crate::{Failure, load_config};

/// `who` read as a profile id: digits only, without a leading zero (ids start at 1). `+33612345678` and
/// `0612345678` are phones, which `i64`'s parse would read as ids.
fn as_profile_id(who: &str) -> Option<i64> {
    if who.is_empty() || who.starts_with('0') || !who.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    who.parse().ok()
}

/// Finds the one profile `who` names: an id, an e-mail, a phone, or `type:value`.
async fn find(
    config: &Config,
    store: &SqlStore,
    who: &str,
) -> Result<(i64, ProfileDocument), Failure> {
    let who = who.trim();
    let id = if let Some(id) = as_profile_id(who) {
        id
    } else {
        let (kind, raw) = match who.split_once(':') {
            Some((kind, raw)) if !kind.contains('@') && !kind.starts_with('+') => {
                (kind.to_owned(), raw)
            }
            _ if who.contains('@') => ("email".to_owned(), who),
            _ => ("phone".to_owned(), who),
        };
        spindle_identity::lookup::profile_holding(
            store,
            config.identity.default_region.as_deref(),
            &kind,
            raw,
        )
        .await
        .map_err(|err| match err {
            spindle_identity::lookup::LookupError::Ambiguous { .. } => {
                anyhow::anyhow!("{err}; name one by id")
            }
            other => anyhow::Error::new(other),
        })?
    };
    let row = store
        .profile(id)
        .await
        .context("reading the profile")?
        .ok_or_else(|| {
            anyhow::anyhow!("there is no profile {id}; `spindle profiles search` lists them")
        })?;
    let doc: ProfileDocument =
        serde_json::from_value(row.document).context("reading the profile document")?;
    Ok((row.id, doc))
}

/// The line said before a profile named by an id it was merged under (`id` is what was asked for,
/// `found` the profile that holds its records now), or nothing.
fn merged_note(who: &str, found: i64) -> String {
    match as_profile_id(who.trim()) {
        Some(asked) if asked != found => {
            format!("profile {asked} was merged into profile {found}\n\n")
        }
        _ => String::new(),
    }
}

/// Prints the 360° view of one profile.
pub async fn show(path: &Path, who: &str) -> Result<(), Failure> {
    let config = load_config(path)?;
    let store = open_store(&config).await?;
    let (id, doc) = find(&config, &store, who).await?;
    let records = store
        .records_by_keys(&doc.records)
        .await
        .context("reading the profile's records")?;
    let members: Vec<&spindle_model::StoredRecord> = records.iter().collect();
    let timeline = profile::timeline(&members);
    // Windows such as `within 90d` are evaluated now, not when the profile was last resolved.
    let computed = profile::compute(&config.profiles.computed, &timeline, Utc::now());
    store.close().await;
    print(&(merged_note(who, id) + &explain::show(id, &doc, &computed, &timeline)))
}

/// Prints why one profile's records are one customer.
pub async fn explain(path: &Path, who: &str) -> Result<(), Failure> {
    let config = load_config(path)?;
    let store = open_store(&config).await?;
    let (id, doc) = find(&config, &store, who).await?;
    store.close().await;
    let rules = LinkRules::new(&config.identity).context("identity rules")?;
    print(&(merged_note(who, id) + &explain::explain(id, &doc, &rules)))
}

/// Lists profiles matching a text.
pub async fn search(path: &Path, text: &str, limit: u32) -> Result<(), Failure> {
    let config = load_config(path)?;
    let store = open_store(&config).await?;
    // One more than shown, to tell whether there are more.
    let mut rows = store
        .search_profiles(text, limit.saturating_add(1))
        .await
        .context("searching profiles")?;
    store.close().await;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let mut out = String::new();
    for row in &rows {
        let doc: ProfileDocument =
            serde_json::from_value(row.document.clone()).context("reading a profile")?;
        let name: Vec<String> = ["first_name", "last_name"]
            .iter()
            .filter_map(|t| {
                doc.traits
                    .get(*t)
                    .and_then(|v| v.value.as_str())
                    .map(str::to_owned)
            })
            .collect();
        let email = doc
            .identifiers
            .iter()
            .find(|i| i.kind == "email")
            .map_or("", |i| i.value.as_str());
        out.push_str(&format!(
            "{:>8}  {:<28} {:<34} {} record(s) from {}\n",
            row.id,
            name.join(" "),
            email,
            doc.records.len(),
            doc.sources.join(", ")
        ));
    }
    if rows.is_empty() {
        out.push_str(&format!("no profile matches `{text}`\n"));
    }
    if more {
        out.push_str(&format!(
            "more profiles match: the first {limit} are shown (`--limit` shows more)\n"
        ));
    }
    print(&out)
}

/// Resolves pending records now.
pub async fn resolve(path: &Path) -> Result<(), Failure> {
    let config = load_config(path)?;
    let _lock = lock_store(&config)?;
    let store = open_store(&config).await?;
    let engine = IdentityEngine::new(store.as_ref(), &config.identity, &config.profiles)
        .context("identity rules")?;
    let report = engine
        .resolve_pending()
        .await
        .context("resolving profiles")?;
    store.close().await;
    print(&format!(
        "resolved {} record(s): {} profile(s) written, {} new, {} merged, {} split\n",
        report.records, report.profiles_written, report.created, report.merged, report.split
    ))
}

/// Rebuilds every profile with the current rules.
pub async fn rebuild(path: &Path) -> Result<(), Failure> {
    let config = load_config(path)?;
    let _lock = lock_store(&config)?;
    let store = open_store(&config).await?;
    let engine = IdentityEngine::new(store.as_ref(), &config.identity, &config.profiles)
        .context("identity rules")?;
    let started = Utc::now();
    let run = store
        .start_run(&JobId::identity(), JobTrigger::Manual, started, started)
        .await
        .context("recording the run")?;
    let result = engine.rebuild().await;
    let (status, error) = match &result {
        Ok(_) => (spindle_model::JobStatus::Succeeded, None),
        Err(err) => (spindle_model::JobStatus::Failed, Some(err.to_string())),
    };
    let counts = result
        .as_ref()
        .map_or(Default::default(), |r| spindle_model::JobCounts {
            read: r.records,
            inserted: r.created,
            updated: r.profiles_written.saturating_sub(r.created),
            ..Default::default()
        });
    store
        .finish_run(run, status, error.as_deref(), counts, Utc::now())
        .await
        .context("recording the run")?;
    let report = result.context("rebuilding profiles")?;
    store
        .append_audit(NewAuditEntry {
            actor: cli_actor(),
            action: "identity.rebuild".into(),
            target: "profiles".into(),
            details: serde_json::to_value(&report).unwrap_or_default(),
        })
        .await
        .context("recording the rebuild in the audit log")?;
    let profiles = store.count_profiles().await.context("counting profiles")?;
    store.close().await;
    print(&format!(
        "rebuilt {} profile(s) from {} record(s): {} unchanged, {} changed, {} split, {} merged, {} new\n",
        profiles,
        report.records,
        report.unchanged,
        report.changed,
        report.split,
        report.merged,
        report.created
    ))
}

#[cfg(test)]
mod tests {
    use super::as_profile_id;

    #[test]
    fn a_merged_id_is_said_to_be_merged() {
        assert_eq!(
            super::merged_note(" 29 ", 24),
            "profile 29 was merged into profile 24\n\n"
        );
        assert_eq!(super::merged_note("24", 24), "");
        assert_eq!(super::merged_note("ada@example.com", 24), "");
    }

    #[test]
    fn only_plain_digits_name_a_profile_id() {
        assert_eq!(as_profile_id("42"), Some(42));
        for phone_or_other in [
            "+33612345678",
            "0612345678",
            "",
            "4 2",
            "-3",
            "ada@example.com",
        ] {
            assert_eq!(as_profile_id(phone_or_other), None, "{phone_or_other}");
        }
    }
}
