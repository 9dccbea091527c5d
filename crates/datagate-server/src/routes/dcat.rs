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

/// DCAT-US `accrualPeriodicity` (ISO 8601 repeating duration) of an update frequency.
fn periodicity(freq: &str) -> Option<&'static str> {
    Some(match freq.to_ascii_lowercase().as_str() {
        "realtime" | "continuous" => "R/PT1S",
        "hourly" => "R/PT1H",
        "daily" => "R/P1D",
        "weekly" => "R/P1W",
        "monthly" => "R/P1M",
        "quarterly" => "R/P3M",
        "semiannual" | "semiannually" => "R/P6M",
        "annual" | "annually" | "yearly" => "R/P1Y",
        "irregular" => "irregular",
        _ => return None,
    })
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
