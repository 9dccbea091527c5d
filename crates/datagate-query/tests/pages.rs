//! Pages served without planning (`datagate_query::pages`) are exactly the pages the planned
//! path gives: the same rows, columns, types and order, for the cached small versions and for
//! seeks, across files and row groups, with masking, `select`, `where` and `order`.

mod support;

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datagate_core::{ColumnType, Mask, Sensitivity};
use datagate_query::execute;
use datagate_query::pages::PageCacheLimits;
use datagate_query::rows::{self, Paging, RowsRequest};
use datagate_query::{MaskKey, Principal, QueryEngine};
use support::{admin, column};

const ROWS_PER_UPLOAD: usize = 700;

struct Fixture {
    _dir: tempfile::TempDir,
    /// Pages from the cache of decoded versions.
    cached: QueryEngine,
    /// The cache off: pages are seeks (or planned).
    seeking: QueryEngine,
}

/// Rows in no key order, some values null, so storage order and every sort are visible.
fn csv(upload: usize) -> String {
    let mut out = String::from("id,name,phone,district,amount,day\n");
    for i in 0..ROWS_PER_UPLOAD {
        let id = (i * 7919 + upload * 131) % 5000;
        let district = ["西湖区", "上城区", "拱墅区", ""][i % 4];
        let amount = if i % 11 == 0 {
            String::new()
        } else {
            format!("{}.5", (i * 37) % 1000)
        };
        out.push_str(&format!(
            "{id},张{i}明,1380000{:04},{district},{amount},2024-{:02}-{:02}\n",
            i % 10_000,
            i % 12 + 1,
            i % 28 + 1
        ));
    }
    out
}

async fn fixture() -> Fixture {
    let published = support::publish_entities(
        vec![
            column("id", ColumnType::Int64, Sensitivity::Public, None),
            column(
                "name",
                ColumnType::Utf8,
                Sensitivity::Masked,
                Some(Mask::Partial),
            ),
            column("phone", ColumnType::Utf8, Sensitivity::Private, None),
            column("district", ColumnType::Utf8, Sensitivity::Public, None),
            column("amount", ColumnType::Float64, Sensitivity::Public, None),
            column("day", ColumnType::Date32, Sensitivity::Public, None),
        ],
        &(0..3).map(csv).collect::<Vec<_>>(),
    )
    .await;
    let support::Published {
        dir,
        catalog,
        url,
        warehouse,
    } = published;
    let key = MaskKey::random();
    let engine = |limits: PageCacheLimits| {
        QueryEngine::new(
            catalog.clone(),
            url.clone(),
            warehouse.root_store().clone(),
            Default::default(),
            key.clone(),
            datagate_query::QueryExecutor::new(&Default::default()).unwrap(),
        )
        .unwrap()
        .with_page_cache(limits)
    };
    Fixture {
        cached: engine(PageCacheLimits::default()),
        // Blocks of 50 rows: pages cross blocks, row groups and files.
        seeking: engine(PageCacheLimits {
            bytes: 1 << 20,
            max_rows: 0,
            block_rows: 50,
        }),
        _dir: dir,
    }
}

/// The page as the planned path gives it.
async fn planned(
    engine: &QueryEngine,
    who: &Principal,
    request: &RowsRequest,
    paging: Paging,
) -> String {
    let (dataset, snapshot) = engine
        .readable_dataset(who, "market", "entities", None)
        .await
        .unwrap();
    let session = engine
        .request_session(
            engine.dataset_catalog(&snapshot),
            request.needs_file_order(paging),
        )
        .unwrap();
    let plan = rows::plan_rows(&session, &snapshot, &dataset.primary_key, request, paging)
        .await
        .unwrap();
    let started = execute::start(&session, plan, None).await.unwrap();
    let schema = started.schema.clone();
    render(&schema, &started.collect().await.unwrap())
}

/// The page as `pages` gives it, and whether it came from the cache; `None` when it declines.
async fn served(
    engine: &QueryEngine,
    who: &Principal,
    request: &RowsRequest,
    paging: Paging,
) -> Option<(String, bool)> {
    let (dataset, snapshot) = engine
        .readable_dataset(who, "market", "entities", None)
        .await
        .unwrap();
    let page = engine
        .pages()
        .page(
            &snapshot,
            &dataset.primary_key,
            request,
            paging,
            engine.limits(),
        )
        .await
        .unwrap()?;
    Some((render(&page.schema, &page.batches), page.cached))
}

fn render(schema: &arrow::datatypes::SchemaRef, batches: &[RecordBatch]) -> String {
    let batches: Vec<RecordBatch> = batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .cloned()
        .collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    let fields: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| format!("{} {}", f.name(), f.data_type()))
        .collect();
    format!(
        "{}\n{rows} rows\n{}",
        fields.join(", "),
        pretty_format_batches(&batches).unwrap()
    )
}

fn request(select: Option<&str>, filter: Option<&str>, order: Option<&str>) -> RowsRequest {
    RowsRequest {
        select: select.map(str::to_string),
        filter: filter.map(str::to_string),
        order: order.map(str::to_string),
    }
}

fn page(limit: u64, offset: u64) -> Paging {
    Paging::Page { limit, offset }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_without_planning_are_the_planned_pages() {
    let f = fixture().await;
    let total = (3 * ROWS_PER_UPLOAD) as u64;
    let plain = request(None, None, None);
    let mut compared = 0;
    for who in [Principal::ANONYMOUS, admin()] {
        // Plain pages, across file and row-group boundaries, at and past the end: served from
        // the cache and by seeking, both equal to the planned page.
        for (limit, offset) in [
            (10, 0),
            (1, 63),
            (2, 63),
            (120, 40),
            (100, 650),
            (100, 699),
            (70, 1_390),
            (10, total - 3),
            (10, total),
            (5, total + 40),
        ] {
            let want = planned(&f.cached, &who, &plain, page(limit, offset)).await;
            for (engine, from_cache) in [(&f.cached, true), (&f.seeking, false)] {
                let (got, cached) = served(engine, &who, &plain, page(limit, offset))
                    .await
                    .expect("a plain page is served without planning");
                assert_eq!(cached, from_cache);
                assert_eq!(got, want, "limit={limit} offset={offset} cached={cached}");
                compared += 1;
            }
        }
        // select, where and order on a cached version.
        for (select, filter, order) in [
            (Some("amount, id"), None, None),
            (Some("name,district"), None, None),
            (None, Some("district = '西湖区' AND amount > 100"), None),
            (None, Some("amount IS NULL OR district = ''"), None),
            (None, Some("name LIKE '张1%'"), None),
            (
                None,
                Some("day BETWEEN '2024-03-01' AND '2024-06-30'"),
                None,
            ),
            (None, None, Some("amount desc")),
            (None, None, Some("district, amount desc nulls last")),
            (Some("id,name"), None, Some("name")),
            (Some("id"), Some("amount >= 500.5"), Some("day desc")),
        ] {
            let r = request(select, filter, order);
            for (limit, offset) in [(10, 0), (25, 40), (100, 300)] {
                let want = planned(&f.cached, &who, &r, page(limit, offset)).await;
                let (got, cached) = served(&f.cached, &who, &r, page(limit, offset))
                    .await
                    .expect("a page of a small version is served without planning");
                assert!(cached);
                assert_eq!(got, want, "{r:?} limit={limit} offset={offset}");
                compared += 1;
            }
            // Without the cache, only plain pages (and select) skip planning.
            let seek = served(&f.seeking, &who, &r, page(10, 0)).await;
            assert_eq!(seek.is_some(), filter.is_none() && order.is_none(), "{r:?}");
        }
    }
    assert!(compared > 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_and_private_columns_stay_hidden_on_the_fast_path() {
    let f = fixture().await;
    let r = request(None, None, None);
    let (anonymous, _) = served(&f.cached, &Principal::ANONYMOUS, &r, page(3, 0))
        .await
        .unwrap();
    assert!(!anonymous.contains("phone"), "{anonymous}");
    assert!(anonymous.contains("张*"), "{anonymous}");
    let (all, _) = served(&f.cached, &admin(), &r, page(3, 0)).await.unwrap();
    assert!(all.contains("phone") && all.contains("1380000"), "{all}");
    // The cache keeps the two views apart.
    let (again, _) = served(&f.cached, &Principal::ANONYMOUS, &r, page(3, 0))
        .await
        .unwrap();
    assert_eq!(again, anonymous);
    // A select of a private column is refused the same way the planned path refuses it.
    let e = match f
        .cached
        .pages()
        .page(
            &f.cached
                .readable_dataset(&Principal::ANONYMOUS, "market", "entities", None)
                .await
                .unwrap()
                .1,
            &["id".to_string()],
            &request(Some("phone"), None, None),
            page(3, 0),
            f.cached.limits(),
        )
        .await
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a private column was selectable"),
    };
    assert!(e.contains("phone"), "{e}");
}

/// The page as `ready_page` gives it without waiting (`None` when its rows are not in memory).
async fn ready(engine: &QueryEngine, who: &Principal, paging: Paging) -> Option<String> {
    let (_, snapshot) = engine
        .readable_dataset(who, "market", "entities", None)
        .await
        .unwrap();
    let page = engine
        .pages()
        .ready_page(&snapshot, &request(None, None, None), paging, 1000)
        .unwrap()?;
    Some(render(&page.schema, &page.batches))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_decoded_blocks_are_ready_without_waiting() {
    let f = fixture().await;
    let total = (3 * ROWS_PER_UPLOAD) as u64;
    let plain = request(None, None, None);
    // Nothing of a large version is ready before a page of it is read.
    assert!(ready(&f.seeking, &admin(), page(10, 0)).await.is_none());
    for who in [Principal::ANONYMOUS, admin()] {
        // Across blocks of 50 rows, row groups and files, and at and past the end.
        for (limit, offset) in [
            (10, 0),
            (1, 49),
            (2, 49),
            (120, 40),
            (100, 699),
            (70, 1_390),
            (10, total - 3),
            (10, total),
        ] {
            let paging = page(limit, offset);
            let want = planned(&f.cached, &who, &plain, paging).await;
            served(&f.seeking, &who, &plain, paging).await.unwrap();
            let got = ready(&f.seeking, &who, paging)
                .await
                .expect("a page whose blocks are decoded is ready");
            assert_eq!(got, want, "limit={limit} offset={offset}");
        }
    }
    // A page in blocks not decoded yet (rows 1,000 to 1,010: block 20) is not ready.
    assert!(ready(&f.seeking, &admin(), page(10, 1_000)).await.is_none());
}

/// A query whose stream has ended by the time its first batch is read is handed over whole (so
/// the gateway answers it like a page), the same rows as the stream gives; one larger than
/// asked stays a stream.
#[tokio::test]
async fn a_small_result_that_has_ended_is_whole() {
    let f = fixture().await;
    let engine = &f.cached;
    let session = engine
        .request_session(engine.readable_catalog(&admin()).await.unwrap(), false)
        .unwrap();
    let start = |sql: &'static str| {
        let session = &session;
        async move {
            let plan = datagate_query::sql::plan_sql(session, sql, &[])
                .await
                .unwrap();
            execute::start(session, plan, None).await.unwrap()
        }
    };
    let rows = |batches: &[RecordBatch]| batches.iter().map(RecordBatch::num_rows).sum::<usize>();
    for sql in [
        "SELECT count(*) FROM market.entities",
        "SELECT district, count(*) AS n FROM market.entities GROUP BY district ORDER BY n DESC",
        "SELECT id FROM market.entities ORDER BY id LIMIT 5",
    ] {
        let expected = start(sql).await.collect().await.unwrap();
        let (_, whole) = start(sql)
            .await
            .whole(1000)
            .unwrap_or_else(|_| panic!("{sql}: not whole"));
        assert_eq!(
            render(&whole[0].schema(), &whole),
            render(&whole[0].schema(), &expected),
            "{sql}"
        );
        // Larger than asked: a stream.
        if rows(&expected) > 1 {
            assert!(start(sql).await.whole(1).is_err(), "{sql}");
        }
    }
}
