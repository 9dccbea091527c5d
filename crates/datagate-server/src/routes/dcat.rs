//! `GET /catalog/data.json`: the catalog the caller sees, as DCAT-US 1.1 (Project Open Data).

use super::{Caller, base_url};
use crate::problem::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use datagate_audit::usage::DatasetUsage;
use datagate_catalog::{Dataset, DatasetFilter};
use serde::Serialize;
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

/// The catalog document: DCAT-US 1.1's catalog object.
#[derive(Serialize)]
struct Catalog<'a> {
    #[serde(rename = "@context")]
    context: &'static str,
    #[serde(rename = "@id")]
    id: String,
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "conformsTo")]
    conforms_to: &'static str,
    #[serde(rename = "describedBy")]
    described_by: &'static str,
    dataset: Vec<Entry<'a>>,
}

/// One dataset of the catalog (DCAT-US 1.1's dataset fields).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    title: &'a str,
    description: &'a str,
    keyword: &'a [String],
    modified: String,
    issued: String,
    publisher: Organization<'a>,
    contact_point: Contact<'a>,
    identifier: String,
    access_level: &'static str,
    landing_page: String,
    distribution: Vec<Distribution>,
    language: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    license: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accrual_periodicity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temporal: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spatial: Option<&'a str>,
    /// Not a DCAT-US field (extensions are allowed): reads and downloads from the audit log,
    /// as Socrata and Opendatasoft publish them.
    usage: DatasetUsage,
}

#[derive(Serialize)]
struct Organization<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    name: &'a str,
}

#[derive(Serialize)]
struct Contact<'a> {
    #[serde(rename = "@type")]
    kind: &'static str,
    #[serde(rename = "fn")]
    name: &'a str,
    #[serde(rename = "hasEmail")]
    email: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Distribution {
    #[serde(rename = "@type")]
    kind: &'static str,
    title: String,
    #[serde(rename = "downloadURL")]
    download_url: String,
    media_type: &'static str,
    format: &'static str,
}

/// The distributions of a dataset: its export in each format.
fn distributions(d: &Dataset, base: &str) -> Vec<Distribution> {
    let export = format!("{base}/api/v1/datasets/{}/{}/export", d.department, d.name);
    [
        ("csv", "text/csv", "CSV"),
        ("json", "application/json", "JSON"),
        ("ndjson", "application/x-ndjson", "NDJSON"),
        ("parquet", "application/vnd.apache.parquet", "Parquet"),
        ("arrow", "application/vnd.apache.arrow.stream", "Arrow IPC"),
    ]
    .into_iter()
    .map(|(fmt, media_type, format)| Distribution {
        kind: "dcat:Distribution",
        title: format!("{} ({format})", d.metadata.title),
        download_url: format!("{export}?format={fmt}"),
        media_type,
        format,
    })
    .collect()
}

fn dataset_entry<'a>(
    d: &'a Dataset,
    publisher: &'a str,
    base: &str,
    usage: DatasetUsage,
) -> Entry<'a> {
    let m = &d.metadata;
    let page = format!("{base}/api/v1/datasets/{}/{}", d.department, d.name);
    Entry {
        kind: "dcat:Dataset",
        title: &m.title,
        description: if m.description.is_empty() {
            &m.title
        } else {
            &m.description
        },
        keyword: &m.tags,
        modified: d
            .updated_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        issued: d.created_at.format("%Y-%m-%d").to_string(),
        publisher: Organization {
            kind: "org:Organization",
            name: publisher,
        },
        contact_point: Contact {
            kind: "vcard:Contact",
            name: if m.contact.name.is_empty() {
                publisher
            } else {
                &m.contact.name
            },
            email: if m.contact.email.is_empty() {
                String::new()
            } else {
                format!("mailto:{}", m.contact.email)
            },
        },
        identifier: page.clone(),
        access_level: m.access_level.dcat_access_level(),
        landing_page: page,
        distribution: distributions(d, base),
        language: ["zh-CN"],
        license: (!m.license.is_empty()).then_some(m.license.as_str()),
        accrual_periodicity: periodicity(&m.update_frequency),
        temporal: m.temporal_coverage.as_deref(),
        spatial: m.spatial_coverage.as_deref(),
        usage,
    }
}

/// The DCAT-US 1.1 catalog of the datasets the caller sees.
#[utoipa::path(get, path = "/catalog/data.json", tag = "catalog",
    responses((status = 200, description = "DCAT-US 1.1 catalog", content_type = "application/json")))]
pub async fn data_json(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
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
            // DCAT describes datasets, not their columns.
            skip_columns: true,
            ..Default::default()
        })
        .await?;
    let base = base_url(&state, &headers);
    let today = chrono::Utc::now().date_naive();
    let usage = state.audit.usage();
    let dataset = page
        .datasets
        .iter()
        .map(|d| {
            let publisher = departments
                .get(&d.department)
                .map(String::as_str)
                .unwrap_or(&d.department);
            let counters = usage.get(&format!("{}.{}", d.department, d.name), today);
            dataset_entry(d, publisher, &base, counters)
        })
        .collect();
    let catalog = Catalog {
        context: "https://project-open-data.cio.gov/v1.1/schema/catalog.jsonld",
        id: format!("{base}/catalog/data.json"),
        kind: "dcat:Catalog",
        conforms_to: "https://project-open-data.cio.gov/v1.1/schema",
        described_by: "https://project-open-data.cio.gov/v1.1/schema/catalog.json",
        dataset,
    };
    Ok(Json(catalog).into_response())
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
