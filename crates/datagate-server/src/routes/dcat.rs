//! `GET /catalog/data.json`: the catalog the caller sees, as DCAT-US 1.1 (Project Open Data).

use super::{Caller, base_url};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use datagate_catalog::{Dataset, DatasetFilter};
use serde_json::{Value, json};
use std::collections::HashMap;

/// DCAT-US `accrualPeriodicity` (an ISO 8601 repeating duration, or `irregular`) of an update
/// frequency as departments write it: a word in English or Chinese (`monthly`, `每月`), or the
/// duration itself (`R/P1M`). Anything else has none.
fn periodicity(freq: &str) -> Option<String> {
    let freq = freq.trim();
    let word = match freq.to_ascii_lowercase().as_str() {
        "realtime" | "real-time" | "continuous" | "实时" => "R/PT1S",
        "hourly" | "每小时" => "R/PT1H",
        "daily" | "每日" | "每天" => "R/P1D",
        "weekly" | "每周" => "R/P1W",
        "biweekly" | "每两周" => "R/P2W",
        "monthly" | "每月" => "R/P1M",
        "bimonthly" | "每两月" | "每两个月" => "R/P2M",
        "quarterly" | "每季度" | "每季" => "R/P3M",
        "semiannual" | "semiannually" | "每半年" => "R/P6M",
        "annual" | "annually" | "yearly" | "每年" => "R/P1Y",
        "irregular" | "不定期" => "irregular",
        _ => return iso_repeating_duration(freq).then(|| freq.to_string()),
    };
    Some(word.to_string())
}

/// `R/P…`: a repeating ISO 8601 duration of at least one designated amount (`R/P1Y`,
/// `R/P0.5M`, `R/PT15M`, `R/P1DT12H`).
fn iso_repeating_duration(s: &str) -> bool {
    let Some(duration) = s.strip_prefix("R/P") else {
        return false;
    };
    let (date, time) = match duration.split_once('T') {
        Some((d, t)) if !t.is_empty() => (d, Some(t)),
        Some(_) => return false,
        None => (duration, None),
    };
    // Amounts followed by their designators, each designator at most once and in order.
    let amounts = |part: &str, designators: &str| -> Option<usize> {
        let mut rest = part;
        let mut allowed = designators;
        let mut count = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
            let number = &rest[..digits];
            let designator = rest[digits..].chars().next()?;
            let at = allowed.find(designator)?;
            if number.is_empty() || number.parse::<f64>().is_err() {
                return None;
            }
            allowed = &allowed[at + 1..];
            rest = &rest[digits + 1..];
            count += 1;
        }
        Some(count)
    };
    match (amounts(date, "YMWD"), time.map(|t| amounts(t, "HMS"))) {
        (Some(d), None) => d > 0,
        (Some(_), Some(Some(t))) => t > 0,
        _ => false,
    }
}

/// The distributions of a dataset: its export in each format.
fn distributions(d: &Dataset, base: &str) -> Vec<Value> {
    let export = format!("{base}/api/v1/datasets/{}/{}/export", d.department, d.name);
    [
        ("csv", "text/csv", "CSV"),
        ("json", "application/json", "JSON"),
        ("ndjson", "application/x-ndjson", "NDJSON"),
        ("parquet", "application/vnd.apache.parquet", "Parquet"),
        ("arrow", "application/vnd.apache.arrow.stream", "Arrow IPC"),
    ]
    .iter()
    .map(|(fmt, media, name)| {
        json!({
            "@type": "dcat:Distribution",
            "title": format!("{} ({name})", d.metadata.title),
            "downloadURL": format!("{export}?format={fmt}"),
            "mediaType": media,
            "format": name,
        })
    })
    .collect()
}

fn dataset_entry(
    d: &Dataset,
    publisher: &str,
    base: &str,
    usage: datagate_audit::usage::DatasetUsage,
) -> Value {
    let m = &d.metadata;
    let mut e = json!({
        "@type": "dcat:Dataset",
        "title": m.title,
        "description": if m.description.is_empty() { &m.title } else { &m.description },
        "keyword": m.tags,
        "modified": d.updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "issued": d.created_at.format("%Y-%m-%d").to_string(),
        "publisher": {"@type": "org:Organization", "name": publisher},
        "contactPoint": {
            "@type": "vcard:Contact",
            "fn": if m.contact.name.is_empty() { publisher } else { &m.contact.name },
            "hasEmail": if m.contact.email.is_empty() { String::new() } else { format!("mailto:{}", m.contact.email) },
        },
        "identifier": format!("{base}/api/v1/datasets/{}/{}", d.department, d.name),
        "accessLevel": m.access_level.dcat_access_level(),
        "landingPage": format!("{base}/api/v1/datasets/{}/{}", d.department, d.name),
        "distribution": distributions(d, base),
        "language": ["zh-CN"],
    });
    let obj = e.as_object_mut().expect("json! object");
    if !m.license.is_empty() {
        obj.insert("license".into(), json!(m.license));
    }
    if let Some(p) = periodicity(&m.update_frequency) {
        obj.insert("accrualPeriodicity".into(), json!(p));
    }
    if let Some(t) = &m.temporal_coverage {
        obj.insert("temporal".into(), json!(t));
    }
    if let Some(s) = &m.spatial_coverage {
        obj.insert("spatial".into(), json!(s));
    }
    // Not a DCAT-US field (extensions are allowed): reads and downloads from the audit log,
    // as Socrata and Opendatasoft publish them.
    obj.insert("usage".into(), json!(usage));
    e
}

/// The DCAT-US 1.1 catalog of the datasets the caller sees.
#[utoipa::path(get, path = "/catalog/data.json", tag = "catalog",
    responses((status = 200, description = "DCAT-US 1.1 catalog", content_type = "application/json")))]
pub async fn data_json(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let levels = caller.visible_levels();
    let departments: HashMap<String, String> = state
        .catalog
        .list_departments(&levels)
        .await?
        .into_iter()
        .map(|d| (d.department.id, d.department.name))
        .collect();
    let page = state
        .catalog
        .list_datasets(&DatasetFilter {
            visible_levels: levels,
            limit: u64::MAX,
            ..Default::default()
        })
        .await?;
    let base = base_url(&state, &headers);
    let datasets: Vec<Value> = page
        .datasets
        .iter()
        .map(|d| {
            let publisher = departments
                .get(&d.department)
                .map(String::as_str)
                .unwrap_or(&d.department);
            dataset_entry(
                d,
                publisher,
                &base,
                state.audit.usage().get(
                    &format!("{}.{}", d.department, d.name),
                    chrono::Utc::now().date_naive(),
                ),
            )
        })
        .collect();
    Ok(Json(json!({
        "@context": "https://project-open-data.cio.gov/v1.1/schema/catalog.jsonld",
        "@id": format!("{base}/catalog/data.json"),
        "@type": "dcat:Catalog",
        "conformsTo": "https://project-open-data.cio.gov/v1.1/schema",
        "describedBy": "https://project-open-data.cio.gov/v1.1/schema/catalog.json",
        "dataset": datasets,
    })))
}

#[cfg(test)]
mod tests {
    use super::periodicity;

    #[test]
    fn update_frequencies_as_accrual_periodicity() {
        for (freq, want) in [
            ("monthly", Some("R/P1M")),
            (" Daily ", Some("R/P1D")),
            ("每月", Some("R/P1M")),
            ("每季度", Some("R/P3M")),
            ("实时", Some("R/PT1S")),
            ("不定期", Some("irregular")),
            ("biweekly", Some("R/P2W")),
            ("R/P1Y", Some("R/P1Y")),
            ("R/PT15M", Some("R/PT15M")),
            ("R/P1DT12H", Some("R/P1DT12H")),
            ("R/P0.5M", Some("R/P0.5M")),
            ("R/P", None),
            ("R/PT", None),
            ("R/P1DT", None),
            ("R/P1H", None),
            ("R/PM", None),
            ("R/P1M1Y", None),
            ("P1M", None),
            ("as needed", None),
            ("", None),
        ] {
            assert_eq!(periodicity(freq).as_deref(), want, "{freq:?}");
        }
    }
}
