//! The conformance suite every [`CatalogStore`] implementation passes.
//!
//! Each check is a plain async function over a fresh, empty store. A backend runs them all with
//! [`catalog_conformance_tests!`](crate::catalog_conformance_tests), which expands into one
//! `#[tokio::test]` per check:
//!
//! ```text
//! datagate_catalog::catalog_conformance_tests!(async {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store = SqliteCatalog::open(&dir.path().join("c.sqlite")).unwrap();
//!     (std::sync::Arc::new(store) as std::sync::Arc<dyn CatalogStore>, dir)
//! });
//! ```

use crate::grants::{ApplicationFilter, ApplicationStatus, Decision, GrantFilter, NewApplication};
use crate::keys::{KeyToken, NewApiKey, Role};
use crate::model::*;
use crate::store::{CatalogError, CatalogStore};
use datagate_core::{AccessLevel, ColumnType, Mask, Sensitivity};

/// Expands into one test per conformance check; `$make` is an async block returning
/// `(Arc<dyn CatalogStore>, guard)` where `guard` lives as long as the test (e.g. a temp dir).
#[macro_export]
macro_rules! catalog_conformance_tests {
    ($make:expr) => {
        $crate::catalog_conformance_tests!(@each $make;
            departments_round_trip,
            department_upsert_is_idempotent,
            dataset_registration,
            dataset_errors,
            metadata_updates,
            column_annotations,
            listing_filters_and_visibility,
            listing_orders_and_facets,
            versions_append_and_replace,
            appends_compact_trailing_files,
            version_conflict,
            concurrent_commits_never_lose_an_update,
            unpublish_hides_but_keeps,
            referenced_files_cover_every_version,
            keys_round_trip,
            retention_forgets_old_versions,
            applications_and_grants,
            key_tiers_and_daily_usage,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _guard) = $make.await;
                $crate::conformance::$name(store.as_ref()).await;
            }
        )*
    };
}

fn dept(id: &str) -> NewDepartment {
    NewDepartment {
        id: id.to_string(),
        name: format!("{id} 局"),
        description: format!("the {id} department"),
    }
}

fn meta(title: &str, level: AccessLevel) -> DatasetMetadata {
    DatasetMetadata {
        title: title.to_string(),
        description: format!("{title}，每日更新"),
        tags: vec!["城市".into(), title.to_string()],
        license: "CC-BY-4.0".into(),
        contact: Contact {
            name: "数据处".into(),
            email: "data@example.gov.cn".into(),
        },
        update_frequency: "daily".into(),
        access_level: level,
        temporal_coverage: Some("2020-01-01/2024-12-31".into()),
        spatial_coverage: None,
    }
}

fn columns() -> Vec<Column> {
    vec![
        Column {
            name: "id".into(),
            data_type: ColumnType::Int64,
            description: "row id".into(),
            sensitivity: Sensitivity::Public,
            mask: None,
        },
        Column {
            name: "owner".into(),
            data_type: ColumnType::Utf8,
            description: "owner name".into(),
            sensitivity: Sensitivity::Masked,
            mask: Some(Mask::Partial),
        },
        Column {
            name: "phone".into(),
            data_type: ColumnType::Utf8,
            description: String::new(),
            sensitivity: Sensitivity::Private,
            mask: None,
        },
    ]
}

fn new_dataset(d: &str, name: &str, level: AccessLevel, cols: Vec<Column>) -> NewDataset {
    NewDataset {
        department: d.into(),
        name: name.into(),
        metadata: meta(name, level),
        primary_key: if cols.is_empty() {
            vec![]
        } else {
            vec!["id".into()]
        },
        columns: cols,
    }
}

fn file(path: &str, rows: u64) -> DataFile {
    DataFile {
        path: path.into(),
        rows,
        bytes: rows * 10,
    }
}

fn version(base: Option<i64>, mode: VersionMode, files: Vec<DataFile>) -> NewVersion {
    NewVersion {
        base_version: base,
        mode,
        new_files: files,
        columns: columns(),
        source_digest: None,
        source_format: Some("csv".into()),
        created_by: "tester".into(),
        compacted: Vec::new(),
    }
}

pub async fn departments_round_trip(s: &dyn CatalogStore) {
    s.ping().await.unwrap();
    assert!(
        s.list_departments(&AccessLevel::ALL)
            .await
            .unwrap()
            .is_empty()
    );
    let d = s.create_department(dept("transport")).await.unwrap();
    assert_eq!(d.id, "transport");
    assert_eq!(d.name, "transport 局");
    assert!(matches!(
        s.create_department(dept("transport")).await,
        Err(CatalogError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.create_department(dept("Bad-Id")).await,
        Err(CatalogError::Invalid(_))
    ));
    let nameless = NewDepartment {
        name: " ".into(),
        ..dept("nameless")
    };
    assert!(matches!(
        s.create_department(nameless.clone()).await,
        Err(CatalogError::Invalid(_))
    ));
    assert!(matches!(
        s.upsert_department(nameless).await,
        Err(CatalogError::Invalid(_))
    ));
    assert_eq!(s.get_department("nameless").await.unwrap(), None);
    assert_eq!(
        s.get_department("transport").await.unwrap(),
        Some(d.clone())
    );
    assert_eq!(s.get_department("nope").await.unwrap(), None);
    s.create_department(dept("justice")).await.unwrap();
    let ids: Vec<String> = s
        .list_departments(&AccessLevel::ALL)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.department.id)
        .collect();
    assert_eq!(ids, ["justice", "transport"]);
}

pub async fn department_upsert_is_idempotent(s: &dyn CatalogStore) {
    let (d1, changed) = s.upsert_department(dept("market")).await.unwrap();
    assert!(changed);
    let (d2, changed) = s.upsert_department(dept("market")).await.unwrap();
    assert!(!changed);
    assert_eq!(d1, d2);
    let mut edited = dept("market");
    edited.name = "市场监督管理局".into();
    let (d3, changed) = s.upsert_department(edited).await.unwrap();
    assert!(changed);
    assert_eq!(d3.name, "市场监督管理局");
    assert_eq!(d3.created_at, d1.created_at);
    assert!(d3.updated_at >= d1.updated_at);
}

pub async fn dataset_registration(s: &dyn CatalogStore) {
    s.create_department(dept("market")).await.unwrap();
    let ds = s
        .create_dataset(new_dataset(
            "market",
            "entities",
            AccessLevel::Open,
            columns(),
        ))
        .await
        .unwrap();
    assert_eq!(ds.columns, columns());
    assert_eq!(ds.current_version, None);
    assert_eq!(ds.row_count, 0);
    assert_eq!(ds.primary_key, vec!["id".to_string()]);
    let got = s.get_dataset("market", "entities").await.unwrap().unwrap();
    assert_eq!(got, ds);
    assert_eq!(got.metadata, meta("entities", AccessLevel::Open));
    // Without declared columns.
    let open = s
        .create_dataset(new_dataset("market", "later", AccessLevel::Shared, vec![]))
        .await
        .unwrap();
    assert!(open.columns.is_empty());
}

pub async fn dataset_errors(s: &dyn CatalogStore) {
    assert!(matches!(
        s.create_dataset(new_dataset("ghost", "x", AccessLevel::Open, vec![]))
            .await,
        Err(CatalogError::NotFound(_))
    ));
    s.create_department(dept("market")).await.unwrap();
    s.create_dataset(new_dataset("market", "x", AccessLevel::Open, vec![]))
        .await
        .unwrap();
    assert!(matches!(
        s.create_dataset(new_dataset("market", "x", AccessLevel::Open, vec![]))
            .await,
        Err(CatalogError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.create_dataset(new_dataset("market", "X!", AccessLevel::Open, vec![]))
            .await,
        Err(CatalogError::Invalid(_))
    ));
    let mut dup = columns();
    dup.push(dup[0].clone());
    assert!(matches!(
        s.create_dataset(new_dataset("market", "dup", AccessLevel::Open, dup))
            .await,
        Err(CatalogError::Invalid(_))
    ));
    // Names no column may have: blank, a line break or NUL (PostgreSQL text cannot hold one),
    // longer than the limit; a long Chinese name within it is taken.
    let long = "名".repeat(datagate_core::names::MAX_COLUMN_NAME_CHARS + 1);
    for name in ["", " ", "a\nb", "a\0b", long.as_str()] {
        let mut cols = columns();
        cols[2].name = name.to_string();
        assert!(
            matches!(
                s.create_dataset(new_dataset("market", "badname", AccessLevel::Open, cols))
                    .await,
                Err(CatalogError::Invalid(_))
            ),
            "{name:?}"
        );
    }
    assert_eq!(s.get_dataset("market", "badname").await.unwrap(), None);
    let mut cols = columns();
    cols[2].name = "名".repeat(datagate_core::names::MAX_COLUMN_NAME_CHARS);
    s.create_dataset(new_dataset("market", "longname", AccessLevel::Open, cols))
        .await
        .unwrap();
    let mut no_mask = columns();
    no_mask[1].mask = None;
    assert!(matches!(
        s.create_dataset(new_dataset("market", "nomask", AccessLevel::Open, no_mask))
            .await,
        Err(CatalogError::Invalid(_))
    ));
    let mut bad_pk = new_dataset("market", "badpk", AccessLevel::Open, columns());
    bad_pk.primary_key = vec!["nope".into()];
    assert!(matches!(
        s.create_dataset(bad_pk).await,
        Err(CatalogError::Invalid(_))
    ));
    // A key naming one column twice, declared or not.
    for cols in [columns(), vec![]] {
        let mut twice = new_dataset("market", "twice", AccessLevel::Open, cols);
        let first = columns()[0].name.clone();
        twice.primary_key = vec![first.clone(), first];
        assert!(matches!(
            s.create_dataset(twice).await,
            Err(CatalogError::Invalid(_))
        ));
    }
    let first = columns()[0].name.clone();
    assert!(matches!(
        s.update_dataset_metadata(
            "market",
            "x",
            meta("x", AccessLevel::Open),
            Some(vec![first.clone(), first])
        )
        .await,
        Err(CatalogError::Invalid(_))
    ));
    assert_eq!(s.get_dataset("market", "nomask").await.unwrap(), None);
    assert!(matches!(
        s.update_dataset_metadata("market", "ghost", meta("g", AccessLevel::Open), None)
            .await,
        Err(CatalogError::NotFound(_))
    ));
    // Metadata a catalog cannot show: no title, a blank tag or one given twice, a contact
    // e-mail that is no address; refused on registration and on change, leaving the dataset
    // as it was.
    let mut untitled = new_dataset("market", "untitled", AccessLevel::Open, columns());
    untitled.metadata.title = "  ".into();
    assert!(matches!(
        s.create_dataset(untitled).await,
        Err(CatalogError::Invalid(_))
    ));
    assert_eq!(s.get_dataset("market", "untitled").await.unwrap(), None);
    let before = s.get_dataset("market", "x").await.unwrap().unwrap();
    let bad: [fn(&mut DatasetMetadata); 4] = [
        |m| m.title = String::new(),
        |m| m.tags.push(" ".into()),
        |m| m.tags.push(m.tags[0].clone()),
        |m| m.contact.email = "data at example.gov.cn".into(),
    ];
    for change in bad {
        let mut m = before.metadata.clone();
        change(&mut m);
        assert!(matches!(
            s.update_dataset_metadata("market", "x", m, None).await,
            Err(CatalogError::Invalid(_))
        ));
    }
    assert_eq!(s.get_dataset("market", "x").await.unwrap().unwrap(), before);
}

pub async fn metadata_updates(s: &dyn CatalogStore) {
    s.create_department(dept("env")).await.unwrap();
    let ds = s
        .create_dataset(new_dataset("env", "air", AccessLevel::Open, columns()))
        .await
        .unwrap();
    let (same, changed) = s
        .update_dataset_metadata("env", "air", ds.metadata.clone(), None)
        .await
        .unwrap();
    assert!(!changed);
    assert_eq!(same, ds);
    let mut m = ds.metadata.clone();
    m.title = "空气质量".into();
    m.access_level = AccessLevel::Conditional;
    m.tags = vec!["环境".into()];
    let (upd, changed) = s
        .update_dataset_metadata("env", "air", m.clone(), None)
        .await
        .unwrap();
    assert!(changed);
    assert_eq!(upd.metadata, m);
    assert_eq!(upd.created_at, ds.created_at);
    assert_eq!(
        s.get_dataset("env", "air").await.unwrap().unwrap().metadata,
        m
    );
}

pub async fn column_annotations(s: &dyn CatalogStore) {
    s.create_department(dept("env")).await.unwrap();
    s.create_dataset(new_dataset("env", "air", AccessLevel::Open, columns()))
        .await
        .unwrap();
    let mut cols = columns();
    assert!(
        !s.update_column_annotations("env", "air", cols.clone())
            .await
            .unwrap()
    );
    cols[1].mask = Some(Mask::Hash);
    cols[0].description = "标识".into();
    assert!(
        s.update_column_annotations("env", "air", cols.clone())
            .await
            .unwrap()
    );
    let got = s.get_dataset("env", "air").await.unwrap().unwrap();
    assert_eq!(got.columns, cols);
    let ghost = Column {
        name: "ghost".into(),
        ..cols[0].clone()
    };
    assert!(matches!(
        s.update_column_annotations("env", "air", vec![ghost]).await,
        Err(CatalogError::Invalid(_))
    ));
}

pub async fn listing_filters_and_visibility(s: &dyn CatalogStore) {
    s.create_department(dept("a")).await.unwrap();
    s.create_department(dept("b")).await.unwrap();
    s.create_department(dept("empty")).await.unwrap();
    let mut levels = AccessLevel::ALL.iter().cycle();
    for (d, n) in [
        ("a", "one"),
        ("a", "two"),
        ("a", "three"),
        ("b", "four"),
        ("b", "five"),
        ("b", "six"),
    ] {
        // Some with columns, in different orders: a listing carries each dataset's own.
        let cols = match n {
            "two" => columns(),
            "four" => columns().into_iter().take(2).rev().collect(),
            _ => vec![],
        };
        let mut ds = new_dataset(d, n, *levels.next().unwrap(), cols);
        if n == "five" {
            ds.metadata.description = "bus stops 公交站点 of the city".into();
            ds.metadata.tags = vec!["交通".into()];
        }
        s.create_dataset(ds).await.unwrap();
    }
    let all = |f: DatasetFilter| DatasetFilter {
        limit: if f.limit == 0 { 100 } else { f.limit },
        ..f
    };
    let page = s
        .list_datasets(&all(DatasetFilter {
            visible_levels: AccessLevel::ALL.to_vec(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(page.total, 6);
    let names: Vec<_> = page
        .datasets
        .iter()
        .map(|d| format!("{}/{}", d.department, d.name))
        .collect();
    assert_eq!(
        names,
        ["a/one", "a/three", "a/two", "b/five", "b/four", "b/six"]
    );
    // Each listed dataset is what a lookup of it answers, its columns in order.
    for d in &page.datasets {
        let one = s.get_dataset(&d.department, &d.name).await.unwrap();
        assert_eq!(Some(d), one.as_ref());
    }
    assert_eq!(page.datasets[2].columns, columns());
    assert_eq!(page.datasets[4].columns.len(), 2);
    // Without columns: the same datasets, their columns left empty.
    let bare = s
        .list_datasets(&all(DatasetFilter {
            visible_levels: AccessLevel::ALL.to_vec(),
            skip_columns: true,
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(bare.total, 6);
    for (b, d) in bare.datasets.iter().zip(&page.datasets) {
        assert!(b.columns.is_empty(), "{}: {:?}", b.name, b.columns);
        assert_eq!(
            Dataset {
                columns: d.columns.clone(),
                ..b.clone()
            },
            *d
        );
    }

    // Visibility: open + conditional only.
    let visible = vec![AccessLevel::Open, AccessLevel::Conditional];
    let page = s
        .list_datasets(&all(DatasetFilter {
            visible_levels: visible.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert_eq!(page.total, 4);
    assert!(
        page.datasets
            .iter()
            .all(|d| d.metadata.access_level != AccessLevel::Shared)
    );
    let counts: Vec<(String, u64)> = s
        .list_departments(&visible)
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.department.id, d.dataset_count))
        .collect();
    assert_eq!(
        counts,
        [
            ("a".to_string(), 2),
            ("b".to_string(), 2),
            ("empty".to_string(), 0)
        ]
    );
    assert_eq!(
        s.list_datasets(&all(DatasetFilter::default()))
            .await
            .unwrap()
            .total,
        0,
        "no visible levels sees nothing"
    );

    // Filters.
    let by = |f: DatasetFilter| {
        let f = all(DatasetFilter {
            visible_levels: AccessLevel::ALL.to_vec(),
            ..f
        });
        async move { s.list_datasets(&f).await.unwrap() }
    };
    assert_eq!(
        by(DatasetFilter {
            department: Some("b".into()),
            ..Default::default()
        })
        .await
        .total,
        3
    );
    assert_eq!(
        by(DatasetFilter {
            access_level: Some(AccessLevel::Shared),
            ..Default::default()
        })
        .await
        .total,
        2
    );
    assert_eq!(
        by(DatasetFilter {
            tag: Some("交通".into()),
            ..Default::default()
        })
        .await
        .total,
        1
    );
    assert_eq!(
        by(DatasetFilter {
            tag: Some("交".into()),
            ..Default::default()
        })
        .await
        .total,
        0
    );
    let q = by(DatasetFilter {
        q: Some("公交 stops".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(q.total, 1);
    assert_eq!(q.datasets[0].name, "five");
    assert_eq!(
        by(DatasetFilter {
            q: Some("通".into()),
            ..Default::default()
        })
        .await
        .total,
        1,
        "q searches tags"
    );
    assert_eq!(
        by(DatasetFilter {
            q: Some("100%".into()),
            ..Default::default()
        })
        .await
        .total,
        0
    );
    assert_eq!(
        by(DatasetFilter {
            q: Some("_".into()),
            ..Default::default()
        })
        .await
        .total,
        0,
        "LIKE wildcards are literal"
    );
    // A table search: each word in the SQL name `department.name` too, or in the text.
    let tables = |q: &str, q_names: bool| {
        let f = DatasetFilter {
            q: Some(q.into()),
            q_names,
            ..Default::default()
        };
        async move {
            by(f)
                .await
                .datasets
                .iter()
                .map(|d| format!("{}.{}", d.department, d.name))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(tables("b.f", true).await, ["b.five", "b.four"]);
    assert!(
        tables("b.f", false).await.is_empty(),
        "names only when asked"
    );
    assert_eq!(tables("A.T", true).await, ["a.three", "a.two"], "any case");
    assert_eq!(
        tables("公交 b.", true).await,
        ["b.five"],
        "a word in the text, a word in the name"
    );
    assert_eq!(tables("ix", true).await, ["b.six"], "the titles match too");
    assert!(tables("a_t", true).await.is_empty(), "wildcards literal");
    assert!(tables(".", false).await.is_empty());
    assert_eq!(tables(".", true).await.len(), 6);
    // Paging.
    let p = by(DatasetFilter {
        limit: 2,
        offset: 3,
        ..Default::default()
    })
    .await;
    assert_eq!(p.total, 6);
    let names: Vec<_> = p.datasets.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["five", "four"]);
}

/// Listings in each order, paged through, and the facets of each filter: both what the
/// unordered matches say, counted and sorted here.
pub async fn listing_orders_and_facets(s: &dyn CatalogStore) {
    s.create_department(dept("a")).await.unwrap();
    s.create_department(dept("b")).await.unwrap();
    // (department, name, title, level, tags, frequency, format of the current version)
    type Entry<'a> = (
        &'a str,
        &'a str,
        &'a str,
        AccessLevel,
        &'a [&'a str],
        &'a str,
        Option<&'a str>,
    );
    let entries: [Entry; 7] = [
        (
            "a",
            "one",
            "Zebra crossings",
            AccessLevel::Open,
            &["交通", "城市"],
            "daily",
            Some("csv"),
        ),
        (
            "a",
            "two",
            "air quality",
            AccessLevel::Open,
            &["环境"],
            "monthly",
            Some("parquet"),
        ),
        (
            "a",
            "three",
            "公交站点",
            AccessLevel::Conditional,
            &["交通"],
            "daily",
            None,
        ),
        (
            "b",
            "four",
            "Air quality",
            AccessLevel::Shared,
            &[],
            "",
            Some("csv"),
        ),
        (
            "b",
            "five",
            "Zebra crossings",
            AccessLevel::Open,
            &["交通"],
            "",
            Some("arrow"),
        ),
        (
            "b",
            "six",
            "_under",
            AccessLevel::Conditional,
            &["城市"],
            "yearly",
            Some("csv"),
        ),
        (
            "b",
            "seven",
            "公交线路",
            AccessLevel::Open,
            &["环境"],
            "daily",
            None,
        ),
    ];
    for (d, n, title, level, tags, frequency, format) in entries {
        let mut ds = new_dataset(d, n, level, columns());
        ds.metadata.title = title.into();
        ds.metadata.tags = tags.iter().map(|t| t.to_string()).collect();
        ds.metadata.update_frequency = frequency.into();
        s.create_dataset(ds).await.unwrap();
        if let Some(format) = format {
            let mut v = version(
                None,
                VersionMode::Replace,
                vec![file(&format!("{n}.parquet"), 5)],
            );
            v.source_format = Some(format.into());
            s.commit_version(d, n, v).await.unwrap();
        }
        // Updated at distinct times (kept to the millisecond).
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    // Updated again, out of registration order: "one" is now the newest.
    let one = s.get_dataset("a", "one").await.unwrap().unwrap();
    let mut m = one.metadata.clone();
    m.description = "now with cycle lanes".into();
    s.update_dataset_metadata("a", "one", m, None)
        .await
        .unwrap();

    let filters = [
        DatasetFilter::default(),
        DatasetFilter {
            department: Some("b".into()),
            ..Default::default()
        },
        DatasetFilter {
            tag: Some("交通".into()),
            ..Default::default()
        },
        DatasetFilter {
            update_frequency: Some("daily".into()),
            ..Default::default()
        },
        DatasetFilter {
            source_format: Some("csv".into()),
            ..Default::default()
        },
        DatasetFilter {
            q: Some("quality".into()),
            access_level: Some(AccessLevel::Open),
            ..Default::default()
        },
        DatasetFilter {
            source_format: Some("json".into()),
            ..Default::default()
        },
    ];
    for visible in [AccessLevel::ALL.to_vec(), vec![AccessLevel::Open]] {
        for filter in &filters {
            let filter = DatasetFilter {
                visible_levels: visible.clone(),
                limit: 100,
                ..filter.clone()
            };
            let matches = s.list_datasets(&filter).await.unwrap().datasets;
            for d in &matches {
                if let Some(f) = &filter.update_frequency {
                    assert_eq!(&d.metadata.update_frequency, f);
                }
                if let Some(f) = &filter.source_format {
                    assert_eq!(d.source_format.as_ref(), Some(f));
                }
            }
            // The facets: each field of the matches counted here.
            let mut expected = DatasetFacets::default();
            let add = |list: &mut Vec<(String, u64)>, value: &str| {
                if value.is_empty() {
                    return;
                }
                match list.iter_mut().find(|(v, _)| v == value) {
                    Some((_, n)) => *n += 1,
                    None => list.push((value.to_string(), 1)),
                }
            };
            for d in &matches {
                add(&mut expected.department, &d.department);
                add(&mut expected.access_level, d.metadata.access_level.as_str());
                for t in &d.metadata.tags {
                    add(&mut expected.tag, t);
                }
                add(&mut expected.update_frequency, &d.metadata.update_frequency);
                add(
                    &mut expected.source_format,
                    d.source_format.as_deref().unwrap_or_default(),
                );
            }
            let facets = s.dataset_facets(&filter).await.unwrap();
            assert_eq!(facets, expected.sorted(), "{filter:?}");
            // Each order, whole and paged through two at a time.
            for order in [
                DatasetOrder::Name,
                DatasetOrder::Updated,
                DatasetOrder::Title,
            ] {
                let mut sorted = matches.clone();
                sorted.sort_by(|a, b| order.compare(a, b));
                let whole = s
                    .list_datasets(&DatasetFilter {
                        order,
                        ..filter.clone()
                    })
                    .await
                    .unwrap();
                assert_eq!(whole.datasets, sorted, "{order:?} {filter:?}");
                let mut paged = Vec::new();
                for offset in (0..sorted.len() as u64).step_by(2) {
                    let page = s
                        .list_datasets(&DatasetFilter {
                            order,
                            limit: 2,
                            offset,
                            skip_columns: true,
                            ..filter.clone()
                        })
                        .await
                        .unwrap();
                    assert_eq!(page.total, sorted.len() as u64);
                    paged.extend(page.datasets.into_iter().map(|d| d.name));
                }
                let names: Vec<String> = sorted.iter().map(|d| d.name.clone()).collect();
                assert_eq!(paged, names, "{order:?} {filter:?}");
            }
        }
    }
    // The orders themselves, over everything.
    let names = |order| async move {
        s.list_datasets(&DatasetFilter {
            visible_levels: AccessLevel::ALL.to_vec(),
            limit: 100,
            order,
            ..Default::default()
        })
        .await
        .unwrap()
        .datasets
        .into_iter()
        .map(|d| d.name)
        .collect::<Vec<_>>()
    };
    assert_eq!(
        names(DatasetOrder::Updated).await,
        ["one", "seven", "six", "five", "four", "three", "two"]
    );
    // By bytes: capitals before lower case, then `_`, then CJK; equal titles by key.
    assert_eq!(
        names(DatasetOrder::Title).await,
        ["four", "one", "five", "six", "two", "three", "seven"]
    );
    let all = DatasetFilter {
        visible_levels: AccessLevel::ALL.to_vec(),
        ..Default::default()
    };
    assert_eq!(
        s.dataset_facets(&all).await.unwrap().tag,
        [
            ("交通".to_string(), 3),
            ("城市".to_string(), 2),
            ("环境".to_string(), 2)
        ],
        "each dataset under each of its tags"
    );
}

pub async fn versions_append_and_replace(s: &dyn CatalogStore) {
    s.create_department(dept("t")).await.unwrap();
    s.create_dataset(new_dataset("t", "stops", AccessLevel::Open, columns()))
        .await
        .unwrap();
    assert!(s.list_versions("t", "stops").await.unwrap().is_empty());
    let v1 = s
        .commit_version(
            "t",
            "stops",
            version(
                None,
                VersionMode::Replace,
                vec![file("t/stops/a/0.parquet", 10)],
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        (v1.version, v1.rows_added, v1.row_count, v1.bytes),
        (1, 10, 10, 100)
    );
    let mut nv = version(
        Some(1),
        VersionMode::Append,
        vec![
            file("t/stops/b/0.parquet", 5),
            file("t/stops/b/1.parquet", 7),
        ],
    );
    nv.source_digest = Some("abc".into());
    nv.source_format = Some("parquet".into());
    let v2 = s.commit_version("t", "stops", nv).await.unwrap();
    assert_eq!((v2.version, v2.rows_added, v2.row_count), (2, 12, 22));
    assert_eq!(v2.files.len(), 3);
    assert_eq!(v2.files[0].path, "t/stops/a/0.parquet");
    assert_eq!(v2.source_digest.as_deref(), Some("abc"));
    assert_eq!(v2.source_format.as_deref(), Some("parquet"));
    let d = s.get_dataset("t", "stops").await.unwrap().unwrap();
    assert_eq!(
        d.source_format.as_deref(),
        Some("parquet"),
        "the current version's format"
    );
    let v3 = s
        .commit_version(
            "t",
            "stops",
            version(
                Some(2),
                VersionMode::Replace,
                vec![file("t/stops/c/0.parquet", 3)],
            ),
        )
        .await
        .unwrap();
    assert_eq!((v3.version, v3.row_count, v3.files.len()), (3, 3, 1));
    let ds = s.get_dataset("t", "stops").await.unwrap().unwrap();
    assert_eq!(
        (ds.current_version, ds.row_count, ds.size_bytes),
        (Some(3), 3, 30)
    );
    let history: Vec<i64> = s
        .list_versions("t", "stops")
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(history, [3, 2, 1]);
    // Pages of the history, newest first, with the count of all.
    let page = |limit, offset| async move {
        let (versions, total) = s
            .list_versions_page("t", "stops", limit, offset)
            .await
            .unwrap();
        (
            versions.iter().map(|v| v.version).collect::<Vec<_>>(),
            total,
        )
    };
    assert_eq!(page(2, 0).await, (vec![3, 2], 3));
    assert_eq!(page(2, 2).await, (vec![1], 3));
    assert_eq!(page(10, 5).await, (vec![], 3));
    assert_eq!(page(u64::MAX, u64::MAX).await, (vec![], 3));
    // Several versions at once, before any was looked up alone (nothing cached): each as
    // `get_version` gives it, in order, a missing version or dataset as `None`.
    let keys: Vec<(String, String, i64)> = [
        ("stops", 2),
        ("stops", 9),
        ("nope", 1),
        ("stops", 1),
        ("stops", 3),
        ("stops", 2),
    ]
    .iter()
    .map(|(name, v)| ("t".to_string(), name.to_string(), *v))
    .collect();
    let together = s.get_versions(&keys).await.unwrap();
    let numbers: Vec<Option<i64>> = together
        .iter()
        .map(|v| v.as_ref().map(|v| v.version))
        .collect();
    assert_eq!(numbers, [Some(2), None, None, Some(1), Some(3), Some(2)]);
    assert_eq!(together[0].as_ref(), Some(&v2));
    assert_eq!(together[4].as_ref(), Some(&v3));
    for ((department, name, version), found) in keys.iter().zip(&together) {
        let alone = s.get_version(department, name, *version).await.unwrap();
        assert_eq!(&alone, found, "{name} v{version}");
    }
    // And again, once they are cached.
    assert_eq!(s.get_versions(&keys).await.unwrap(), together);
    assert!(s.get_versions(&[]).await.unwrap().is_empty());
    assert_eq!(s.get_version("t", "stops", 2).await.unwrap().unwrap(), v2);
    assert_eq!(s.get_version("t", "stops", 9).await.unwrap(), None);
    assert_eq!(v2.created_by, "tester");
}

/// An append may replace the base version's last files (small ones, rewritten with its rows):
/// the version keeps the files before them, in order, and counts only the rows it adds; a
/// compaction naming anything but the base's last files, in order, is refused and changes
/// nothing.
pub async fn appends_compact_trailing_files(s: &dyn CatalogStore) {
    s.create_department(dept("t")).await.unwrap();
    s.create_dataset(new_dataset("t", "stops", AccessLevel::Open, columns()))
        .await
        .unwrap();
    let files = vec![
        file("t/stops/a/0.parquet", 100),
        file("t/stops/b/0.parquet", 2),
        file("t/stops/c/0.parquet", 3),
    ];
    s.commit_version("t", "stops", version(None, VersionMode::Replace, files))
        .await
        .unwrap();
    for wrong in [
        vec!["t/stops/b/0.parquet"],
        vec!["t/stops/c/0.parquet", "t/stops/b/0.parquet"],
        vec![
            "t/stops/x/0.parquet",
            "t/stops/a/0.parquet",
            "t/stops/b/0.parquet",
            "t/stops/c/0.parquet",
        ],
    ] {
        let mut nv = version(
            Some(1),
            VersionMode::Append,
            vec![file("t/stops/m/0.parquet", 9)],
        );
        nv.compacted = wrong.iter().map(|p| p.to_string()).collect();
        assert!(
            matches!(
                s.commit_version("t", "stops", nv).await,
                Err(CatalogError::Invalid(_))
            ),
            "{wrong:?}"
        );
    }
    let mut replace = version(
        Some(1),
        VersionMode::Replace,
        vec![file("t/stops/m/0.parquet", 9)],
    );
    replace.compacted = vec!["t/stops/c/0.parquet".into()];
    assert!(matches!(
        s.commit_version("t", "stops", replace).await,
        Err(CatalogError::Invalid(_))
    ));
    // The two small files and 4 new rows in one file.
    let mut nv = version(
        Some(1),
        VersionMode::Append,
        vec![file("t/stops/m/0.parquet", 9)],
    );
    nv.compacted = vec!["t/stops/b/0.parquet".into(), "t/stops/c/0.parquet".into()];
    let v2 = s.commit_version("t", "stops", nv).await.unwrap();
    assert_eq!((v2.version, v2.rows_added, v2.row_count), (2, 4, 109));
    let paths: Vec<&str> = v2.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["t/stops/a/0.parquet", "t/stops/m/0.parquet"]);
    // The version before keeps its files.
    assert_eq!(
        s.get_version("t", "stops", 1)
            .await
            .unwrap()
            .unwrap()
            .files
            .len(),
        3
    );
}

pub async fn version_conflict(s: &dyn CatalogStore) {
    s.create_department(dept("t")).await.unwrap();
    s.create_dataset(new_dataset("t", "x", AccessLevel::Open, vec![]))
        .await
        .unwrap();
    s.commit_version(
        "t",
        "x",
        version(None, VersionMode::Replace, vec![file("p1", 1)]),
    )
    .await
    .unwrap();
    let stale = s
        .commit_version(
            "t",
            "x",
            version(None, VersionMode::Replace, vec![file("p2", 1)]),
        )
        .await;
    assert!(matches!(stale, Err(CatalogError::Conflict(_))), "{stale:?}");
    let ds = s.get_dataset("t", "x").await.unwrap().unwrap();
    assert_eq!(ds.current_version, Some(1));
    assert_eq!(ds.columns, columns(), "the first version fixes the schema");
    assert!(matches!(
        s.commit_version("ghost", "x", version(None, VersionMode::Replace, vec![]))
            .await,
        Err(CatalogError::NotFound(_))
    ));
}

pub async fn concurrent_commits_never_lose_an_update(s: &dyn CatalogStore) {
    s.create_department(dept("t")).await.unwrap();
    s.create_dataset(new_dataset("t", "x", AccessLevel::Open, columns()))
        .await
        .unwrap();
    // Each writer retries on conflict; every append must survive.
    let writers = 8;
    let per_writer = 5;
    let tasks = (0..writers).map(|w| async move {
        for i in 0..per_writer {
            loop {
                let base = s
                    .get_dataset("t", "x")
                    .await
                    .unwrap()
                    .unwrap()
                    .current_version;
                let nv = version(
                    base,
                    VersionMode::Append,
                    vec![file(&format!("w{w}/{i}"), 1)],
                );
                match s.commit_version("t", "x", nv).await {
                    Ok(_) => break,
                    Err(CatalogError::Conflict(_)) => continue,
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    futures_join_all(tasks).await;
    let ds = s.get_dataset("t", "x").await.unwrap().unwrap();
    assert_eq!(ds.row_count, (writers * per_writer) as u64);
    assert_eq!(ds.current_version, Some((writers * per_writer) as i64));
}

async fn futures_join_all<F: std::future::Future<Output = ()>>(fs: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in fs {
        set.push(Box::pin(f));
    }
    // Poll all futures concurrently on this task.
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

pub async fn unpublish_hides_but_keeps(s: &dyn CatalogStore) {
    s.create_department(dept("t")).await.unwrap();
    s.create_dataset(new_dataset("t", "x", AccessLevel::Open, columns()))
        .await
        .unwrap();
    s.commit_version(
        "t",
        "x",
        version(None, VersionMode::Replace, vec![file("keep.parquet", 4)]),
    )
    .await
    .unwrap();
    s.unpublish_dataset("t", "x").await.unwrap();
    let f = DatasetFilter {
        visible_levels: AccessLevel::ALL.to_vec(),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(s.list_datasets(&f).await.unwrap().total, 0);
    assert_eq!(
        s.list_departments(&AccessLevel::ALL).await.unwrap()[0].dataset_count,
        0
    );
    let ds = s.get_dataset("t", "x").await.unwrap().unwrap();
    assert!(ds.unpublished_at.is_some());
    // Listed among the unpublished, for the department to publish again.
    let hidden = DatasetFilter {
        unpublished: true,
        department: Some("t".into()),
        ..f.clone()
    };
    let page = s.list_datasets(&hidden).await.unwrap();
    assert_eq!((page.total, page.datasets[0].name.as_str()), (1, "x"));
    assert_eq!(s.referenced_files().await.unwrap(), ["keep.parquet"]);
    s.republish_dataset("t", "x").await.unwrap();
    assert_eq!(s.list_datasets(&f).await.unwrap().total, 1);
    assert_eq!(s.list_datasets(&hidden).await.unwrap().total, 0);
    assert!(matches!(
        s.unpublish_dataset("t", "ghost").await,
        Err(CatalogError::NotFound(_))
    ));
}

pub async fn referenced_files_cover_every_version(s: &dyn CatalogStore) {
    s.create_department(dept("t")).await.unwrap();
    s.create_dataset(new_dataset("t", "x", AccessLevel::Open, columns()))
        .await
        .unwrap();
    s.commit_version(
        "t",
        "x",
        version(None, VersionMode::Replace, vec![file("old.parquet", 1)]),
    )
    .await
    .unwrap();
    s.commit_version(
        "t",
        "x",
        version(Some(1), VersionMode::Replace, vec![file("new.parquet", 1)]),
    )
    .await
    .unwrap();
    assert_eq!(
        s.referenced_files().await.unwrap(),
        ["new.parquet", "old.parquet"]
    );
}

pub async fn keys_round_trip(s: &dyn CatalogStore) {
    assert!(s.list_keys().await.unwrap().is_empty());
    let token = KeyToken::generate();
    let new = |id: &str, role: Role, department: Option<&str>| NewApiKey {
        id: id.to_string(),
        name: format!("{id} key"),
        role,
        department: department.map(str::to_string),
        tier: "standard".into(),
        secret_hash: token.secret_hash(),
        created_by: "bootstrap".into(),
        expires_at: None,
    };
    let k = s
        .create_key(new(&token.id, Role::Admin, None))
        .await
        .unwrap();
    assert_eq!((k.role, k.department.as_deref()), (Role::Admin, None));
    assert!(k.is_active(chrono::Utc::now()));
    assert!(token.matches(&k.secret_hash));
    assert!(matches!(
        s.create_key(new(&token.id, Role::Admin, None)).await,
        Err(CatalogError::AlreadyExists(_))
    ));
    assert!(matches!(
        s.create_key(new("p1", Role::Publisher, None)).await,
        Err(CatalogError::Invalid(_))
    ));
    // A key without a name, or born expired, is refused the same way by every backend.
    let nameless = NewApiKey {
        name: "  ".into(),
        ..new("c0", Role::Consumer, None)
    };
    assert!(matches!(
        s.create_key(nameless).await,
        Err(CatalogError::Invalid(m)) if m.contains("name")
    ));
    let expired = NewApiKey {
        expires_at: Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
        ..new("c0", Role::Consumer, None)
    };
    assert!(matches!(
        s.create_key(expired).await,
        Err(CatalogError::Invalid(m)) if m.contains("expires_at")
    ));
    assert_eq!(s.get_key("c0").await.unwrap(), None);
    assert!(matches!(
        s.create_key(new("p1", Role::Publisher, Some("ghost")))
            .await,
        Err(CatalogError::NotFound(_))
    ));
    s.create_department(dept("market")).await.unwrap();
    let p = s
        .create_key(new("p1", Role::Publisher, Some("market")))
        .await
        .unwrap();
    assert_eq!(p.department.as_deref(), Some("market"));
    assert_eq!(s.get_key("p1").await.unwrap(), Some(p));
    assert_eq!(s.list_keys().await.unwrap().len(), 2);
    s.revoke_key("p1").await.unwrap();
    let revoked = s.get_key("p1").await.unwrap().unwrap();
    assert!(!revoked.is_active(chrono::Utc::now()));
    assert!(matches!(
        s.revoke_key("nope").await,
        Err(CatalogError::NotFound(_))
    ));
    assert_eq!(s.get_key("nope").await.unwrap(), None);
    assert_eq!(s.get_key_and_grants("nope").await.unwrap(), None);
    assert_eq!(
        s.get_key_and_grants("p1").await.unwrap(),
        Some((revoked, Vec::new()))
    );
}

pub async fn retention_forgets_old_versions(s: &dyn CatalogStore) {
    s.create_department(dept("t")).await.unwrap();
    s.create_dataset(new_dataset("t", "x", AccessLevel::Open, columns()))
        .await
        .unwrap();
    s.commit_version(
        "t",
        "x",
        version(None, VersionMode::Replace, vec![file("a", 1)]),
    )
    .await
    .unwrap();
    s.commit_version(
        "t",
        "x",
        version(Some(1), VersionMode::Append, vec![file("b", 1)]),
    )
    .await
    .unwrap();
    s.commit_version(
        "t",
        "x",
        version(Some(2), VersionMode::Replace, vec![file("c", 1)]),
    )
    .await
    .unwrap();
    s.commit_version(
        "t",
        "x",
        version(Some(3), VersionMode::Append, vec![file("d", 1)]),
    )
    .await
    .unwrap();
    // Keeping 2 (versions 4 = c+d and 3 = c) forgets 1 (a) and 2 (a+b).
    let mut gone = s.expire_versions("t", "x", 2).await.unwrap();
    gone.sort();
    assert_eq!(gone, ["a", "b"]);
    let left: Vec<i64> = s
        .list_versions("t", "x")
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(left, [4, 3]);
    assert_eq!(s.referenced_files().await.unwrap(), ["c", "d"]);
    assert!(
        s.expire_versions("t", "x", 2).await.unwrap().is_empty(),
        "idempotent"
    );
    // New versions keep counting up.
    let v = s
        .commit_version(
            "t",
            "x",
            version(Some(4), VersionMode::Append, vec![file("e", 1)]),
        )
        .await
        .unwrap();
    assert_eq!(v.version, 5);
    assert!(matches!(
        s.expire_versions("t", "ghost", 1).await,
        Err(CatalogError::NotFound(_))
    ));
}

/// Applications are filed, decided once (approval makes a grant), listed by applicant,
/// department and status; grants are listed and revoked, each transition with who and when.
pub async fn applications_and_grants(s: &dyn CatalogStore) {
    s.create_department(dept("justice")).await.unwrap();
    s.create_dataset(new_dataset(
        "justice",
        "aid",
        AccessLevel::Conditional,
        vec![],
    ))
    .await
    .unwrap();
    for id in ["c1", "c2"] {
        s.create_key(NewApiKey {
            id: id.into(),
            name: id.into(),
            role: Role::Consumer,
            department: None,
            tier: "standard".into(),
            secret_hash: KeyToken::generate().secret_hash(),
            created_by: "test".into(),
            expires_at: None,
        })
        .await
        .unwrap();
    }
    let apply = |who: &str| NewApplication {
        department: "justice".into(),
        dataset: "aid".into(),
        applicant: who.into(),
        purpose: "research on legal aid coverage".into(),
    };
    let a1 = s.create_application(apply("c1")).await.unwrap();
    let a2 = s.create_application(apply("c2")).await.unwrap();
    assert_eq!(a1.status, ApplicationStatus::Pending);
    assert!(a1.decided_by.is_none() && a1.decided_at.is_none());
    assert!(matches!(
        s.create_application(NewApplication {
            dataset: "ghost".into(),
            ..apply("c1")
        })
        .await,
        Err(CatalogError::NotFound(_))
    ));
    let mine = s
        .list_applications(&ApplicationFilter {
            applicant: Some("c1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(mine, vec![a1.clone()]);

    let expires = chrono::Utc::now() + chrono::Duration::days(30);
    let (approved, grant) = s
        .decide_application(
            &a1.id,
            Decision::Approve {
                expires_at: Some(expires),
            },
            "publisher-justice",
        )
        .await
        .unwrap();
    assert_eq!(approved.status, ApplicationStatus::Approved);
    assert_eq!(approved.decided_by.as_deref(), Some("publisher-justice"));
    assert!(approved.decided_at.is_some());
    let grant = grant.expect("an approval makes a grant");
    assert_eq!(
        (grant.key_id.as_str(), grant.dataset.as_str()),
        ("c1", "aid")
    );
    assert!(grant.is_active(chrono::Utc::now()));
    assert!(!grant.is_active(expires + chrono::Duration::seconds(1)));
    assert!(matches!(
        s.decide_application(&a1.id, Decision::Reject { reason: "x".into() }, "admin")
            .await,
        Err(CatalogError::Conflict(_))
    ));
    let (rejected, none) = s
        .decide_application(
            &a2.id,
            Decision::Reject {
                reason: "purpose too vague".into(),
            },
            "admin",
        )
        .await
        .unwrap();
    assert!(none.is_none());
    assert_eq!(rejected.reason.as_deref(), Some("purpose too vague"));
    assert!(matches!(
        s.decide_application("nope", Decision::Reject { reason: "x".into() }, "admin")
            .await,
        Err(CatalogError::NotFound(_))
    ));
    let pending = s
        .list_applications(&ApplicationFilter {
            status: Some(ApplicationStatus::Pending),
            department: Some("justice".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(pending.is_empty());

    let grants = s
        .list_grants(&GrantFilter {
            key_id: Some("c1".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(grants, vec![grant.clone()]);
    let c1 = s.get_key("c1").await.unwrap().unwrap();
    assert_eq!(
        s.get_key_and_grants("c1").await.unwrap(),
        Some((c1.clone(), grants))
    );
    let revoked = s.revoke_grant(&grant.id, "admin").await.unwrap();
    assert_eq!(
        s.get_key_and_grants("c1").await.unwrap(),
        Some((c1, vec![revoked.clone()])),
        "a revoked grant is still listed (the caller filters active ones)"
    );
    assert!(revoked.revoked_at.is_some() && !revoked.is_active(chrono::Utc::now()));
    assert_eq!(revoked.revoked_by.as_deref(), Some("admin"));
    let again = s.revoke_grant(&grant.id, "someone else").await.unwrap();
    assert_eq!(
        again.revoked_by.as_deref(),
        Some("admin"),
        "the first revocation stays"
    );
    assert!(matches!(
        s.revoke_grant("nope", "admin").await,
        Err(CatalogError::NotFound(_))
    ));
    assert_eq!(s.get_grant(&grant.id).await.unwrap(), Some(again));
    assert_eq!(s.get_application(&a2.id).await.unwrap(), Some(rejected));
}

pub async fn key_tiers_and_daily_usage(s: &dyn CatalogStore) {
    let token = KeyToken::generate();
    s.create_key(NewApiKey {
        id: token.id.clone(),
        name: "c".into(),
        role: Role::Consumer,
        department: None,
        tier: "standard".into(),
        secret_hash: token.secret_hash(),
        created_by: "bootstrap".into(),
        expires_at: None,
    })
    .await
    .unwrap();
    let k = s.set_key_tier(&token.id, "premium").await.unwrap();
    assert_eq!(k.tier, "premium");
    assert_eq!(s.get_key(&token.id).await.unwrap().unwrap().tier, "premium");
    assert!(matches!(
        s.set_key_tier("nope", "premium").await,
        Err(CatalogError::NotFound(_))
    ));

    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
    assert!(s.load_usage(day(26)).await.unwrap().is_empty());
    s.add_usage(
        day(26),
        vec![("key:a".into(), 10), ("ip:127.0.0.1".into(), 5)],
    )
    .await
    .unwrap();
    // Gateways add what they served: the counters are sums, saturating.
    s.add_usage(
        day(26),
        vec![("key:a".into(), 7), ("key:b".into(), u64::MAX)],
    )
    .await
    .unwrap();
    s.add_usage(day(26), vec![("key:b".into(), 1)])
        .await
        .unwrap();
    let mut got = s.load_usage(day(26)).await.unwrap();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("ip:127.0.0.1".to_string(), 5),
            ("key:a".to_string(), 17),
            ("key:b".to_string(), i64::MAX as u64),
        ]
    );
    // A new day starts from zero and forgets the old one.
    s.add_usage(day(27), vec![("key:a".into(), 1)])
        .await
        .unwrap();
    assert!(s.load_usage(day(26)).await.unwrap().is_empty());
    assert_eq!(
        s.load_usage(day(27)).await.unwrap(),
        vec![("key:a".to_string(), 1)]
    );
}
