//! The portal's two languages: Chinese first, English by `?lang=en`, the `lang` cookie or
//! `Accept-Language`. Every string a page shows is looked up here by key, so both languages
//! stay complete together (a test checks that no key is missing either).

use axum::http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// `?lang=` first, then the `lang` cookie, then the first language of `Accept-Language`
    /// that is Chinese or English; Chinese when nothing says.
    pub fn choose(query: Option<&str>, cookie: Option<&str>, headers: &HeaderMap) -> Self {
        if let Some(l) = query.or(cookie).and_then(Self::parse) {
            return l;
        }
        let accept = headers
            .get(axum::http::header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        accept
            .split(',')
            .filter_map(|part| Self::parse(part.split(';').next().unwrap_or("").trim()))
            .next()
            .unwrap_or(Lang::Zh)
    }

    pub fn parse(tag: &str) -> Option<Self> {
        let primary = tag
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Lang::Zh),
            "en" => Some(Lang::En),
            _ => None,
        }
    }

    /// The `lang` attribute of `<html>`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Zh => "zh-CN",
            Lang::En => "en",
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
        }
    }

    /// The other language (for the switch).
    pub fn other(self) -> Self {
        match self {
            Lang::Zh => Lang::En,
            Lang::En => Lang::Zh,
        }
    }

    /// The text of `key` in this language (the key itself if the table lacks it).
    pub fn s(self, key: &str) -> &'static str {
        match TEXTS.binary_search_by(|(k, _, _)| (*k).cmp(key)) {
            Ok(i) => match self {
                Lang::Zh => TEXTS[i].1,
                Lang::En => TEXTS[i].2,
            },
            Err(_) => {
                tracing::warn!(key, "portal text missing");
                "?"
            }
        }
    }

    /// The label of an open level (`open`, `conditional`, `shared`).
    pub fn level(self, level: &str) -> &'static str {
        self.s(match level {
            "open" => "level.open",
            "conditional" => "level.conditional",
            "shared" => "level.shared",
            _ => "level.unknown",
        })
    }

    /// The label of a column sensitivity (`public`, `masked`, `private`).
    pub fn sensitivity(self, s: &str) -> &'static str {
        self.s(match s {
            "public" => "sens.public",
            "masked" => "sens.masked",
            "private" => "sens.private",
            _ => "level.unknown",
        })
    }
}

/// (key, Chinese, English), sorted by key (a test checks).
static TEXTS: &[(&str, &str, &str)] = &[
    ("admin.departments", "部门", "Departments"),
    (
        "admin.key_once",
        "请立即复制此密钥：它只显示这一次，系统只保存其哈希。",
        "Copy this key now: it is shown only this once, and only its hash is kept.",
    ),
    ("admin.keys", "API 密钥", "API keys"),
    ("admin.name", "名称", "Name"),
    ("admin.new_department", "新建部门", "New department"),
    ("admin.new_key", "签发密钥", "Issue a key"),
    ("admin.revoked", "已撤销", "Revoked"),
    ("admin.title", "系统管理", "Administration"),
    (
        "apply.done",
        "申请已提交，等待数据提供部门审批。",
        "Application sent; the publishing department will review it.",
    ),
    ("apply.purpose", "用途", "Purpose"),
    (
        "apply.signin",
        "登录后可申请使用此数据。",
        "Sign in to apply for this dataset.",
    ),
    ("apply.submit", "提交申请", "Apply"),
    ("apply.title", "申请使用", "Apply for access"),
    (
        "apply.why",
        "此数据为有条件开放：经数据提供部门批准后可查看和下载。",
        "This dataset is conditional: you can read and download it once its department approves.",
    ),
    ("audit.action", "操作", "Action"),
    ("audit.broken", "审计链已被破坏", "The chain is broken"),
    (
        "audit.by_dataset",
        "按数据集（近30天）",
        "By dataset (last 30 days)",
    ),
    (
        "audit.by_principal",
        "按调用方（近30天）",
        "By principal (last 30 days)",
    ),
    (
        "audit.bytes_per_day",
        "每日下载字节数",
        "Bytes sent per day",
    ),
    ("audit.charts", "访问统计", "Usage"),
    (
        "audit.checkpoint",
        "下载最新签名检查点",
        "Download the latest signed checkpoint",
    ),
    ("audit.dataset", "数据集", "Dataset"),
    ("audit.detail", "详情", "Detail"),
    ("audit.from", "起始日期", "From"),
    (
        "audit.intact",
        "审计链完整，未被篡改",
        "The chain is intact",
    ),
    ("audit.log", "访问日志", "Access log"),
    ("audit.principal", "调用方（密钥 ID）", "Principal (key id)"),
    ("audit.public_key", "签名公钥", "Signing public key"),
    ("audit.reads", "访问次数", "Reads"),
    ("audit.reads_per_day", "每日访问次数", "Reads per day"),
    ("audit.reports", "常用报表", "Saved reports"),
    ("audit.status", "状态码", "Status"),
    ("audit.time", "时间 (UTC)", "Time (UTC)"),
    ("audit.title", "审计", "Audit"),
    ("audit.to", "截止日期", "To"),
    ("audit.verify", "校验审计链", "Verify the chain"),
    ("catalog.all", "全部", "All"),
    (
        "catalog.empty",
        "没有符合条件的数据集。",
        "No dataset matches.",
    ),
    ("catalog.found", "个数据集", "datasets"),
    ("catalog.search", "搜索数据集", "Search datasets"),
    ("catalog.search_button", "搜索", "Search"),
    ("catalog.title", "数据目录", "Data catalog"),
    ("col.description", "说明", "Description"),
    ("col.mask", "脱敏方式", "Mask"),
    ("col.name", "字段", "Column"),
    ("col.sensitivity", "敏感级别", "Sensitivity"),
    ("col.type", "类型", "Type"),
    ("ds.contact", "联系人", "Contact"),
    ("ds.created", "创建时间", "Created"),
    ("ds.department", "提供部门", "Department"),
    ("ds.downloads", "下载", "Downloads"),
    ("ds.downloads_30d", "近30天下载", "Downloads, last 30 days"),
    ("ds.format", "发布格式", "Published as"),
    ("ds.frequency", "更新频率", "Update frequency"),
    ("ds.license", "许可协议", "Licence"),
    ("ds.metadata", "基本信息", "About"),
    ("ds.preview", "数据预览", "Preview"),
    ("ds.primary_key", "主键", "Primary key"),
    ("ds.reads_30d", "近30天访问", "Reads, last 30 days"),
    (
        "ds.reads_chart",
        "每日访问量（近30天）",
        "Reads per day (last 30 days)",
    ),
    ("ds.rows", "行", "rows"),
    ("ds.schema", "数据结构", "Schema"),
    ("ds.snippets", "调用示例", "Use it from code"),
    ("ds.tags", "标签", "Tags"),
    ("ds.updated", "更新时间", "Updated"),
    ("ds.versions", "版本历史", "Versions"),
    ("ds.versions_all", "全部版本（API）", "every version (API)"),
    (
        "ds.versions_latest",
        "显示最近的版本",
        "The latest versions",
    ),
    ("error.back", "返回数据目录", "Back to the catalog"),
    ("error.title", "出错了", "Something went wrong"),
    ("facet.access_level", "开放类型", "Open level"),
    ("facet.department", "提供部门", "Department"),
    ("facet.format", "发布格式", "Format"),
    ("facet.frequency", "更新频率", "Update frequency"),
    ("facet.tag", "标签", "Tag"),
    ("level.conditional", "有条件开放", "Conditional"),
    ("level.open", "无条件开放", "Open"),
    ("level.shared", "共享", "Shared"),
    ("level.unknown", "未知", "Unknown"),
    ("me.applications", "我的申请", "My applications"),
    ("me.bytes_today", "今日已用流量", "Bytes used today"),
    ("me.daily_bytes", "每日流量上限", "Daily bytes"),
    ("me.expires", "到期", "Expires"),
    ("me.grants", "已获授权", "Grants"),
    ("me.key", "密钥", "Key"),
    ("me.limits", "额度", "Limits"),
    ("me.none", "无", "None"),
    ("me.requests", "请求速率", "Requests"),
    ("me.role", "角色", "Role"),
    ("me.status", "状态", "Status"),
    ("me.tier", "等级", "Tier"),
    ("me.title", "我的权限", "My access"),
    ("me.unlimited", "不限", "unlimited"),
    ("nav.admin", "系统管理", "Admin"),
    ("nav.api", "API 文档", "API"),
    ("nav.audit", "审计", "Audit"),
    ("nav.catalog", "数据目录", "Catalog"),
    ("nav.me", "我的权限", "My access"),
    ("nav.publish", "发布管理", "Publish"),
    ("nav.signin", "登录", "Sign in"),
    ("nav.signout", "退出", "Sign out"),
    ("nav.sql", "SQL 查询", "SQL console"),
    ("page.next", "下一页", "Next page"),
    ("page.prev", "上一页", "Previous page"),
    ("preview.apply_filter", "筛选", "Filter"),
    ("preview.clear", "清除", "Clear"),
    (
        "preview.where",
        "筛选条件（SQL 表达式）",
        "Filter (an SQL expression)",
    ),
    (
        "publish.append",
        "追加到当前版本",
        "Append to the current version",
    ),
    (
        "publish.applications",
        "待审批的申请",
        "Applications to decide",
    ),
    ("publish.approve", "批准", "Approve"),
    (
        "publish.columns_help",
        "每行一个字段；空行忽略。脱敏字段请选择脱敏方式。不填字段则按首次上传的数据推断。",
        "One column per row; blank rows are ignored. Masked columns need a mask. Without columns, the first upload's schema is inferred.",
    ),
    (
        "publish.confirm",
        "确定吗？此操作会立即生效。",
        "Are you sure? This takes effect at once.",
    ),
    (
        "publish.datasets",
        "本部门的数据集",
        "The department's datasets",
    ),
    ("publish.done", "已完成", "Done"),
    ("publish.edit", "编辑元数据", "Edit metadata"),
    (
        "publish.encoding",
        "文本编码（CSV、NDJSON）",
        "Text encoding (CSV, NDJSON)",
    ),
    (
        "publish.encoding_gbk",
        "GB18030 / GBK（中文版 Excel 保存的 CSV）",
        "GB18030 / GBK (CSV saved by Excel in Chinese)",
    ),
    (
        "publish.expires",
        "授权到期日（可选）",
        "Grant expires (optional)",
    ),
    ("publish.failed", "上传失败", "Upload failed"),
    (
        "publish.field_name",
        "数据集标识（小写字母、数字、下划线）",
        "Name (lower case letters, digits, underscores)",
    ),
    ("publish.field_title", "标题", "Title"),
    (
        "publish.file",
        "数据文件（CSV、NDJSON、Parquet、Arrow，可 gzip 压缩）",
        "Data file (CSV, NDJSON, Parquet, Arrow; gzip allowed)",
    ),
    ("publish.grants", "已授予的权限", "Grants"),
    ("publish.manage", "管理", "Manage"),
    (
        "publish.noscript",
        "上传需要启用 JavaScript（或使用 API：POST /api/v1/datasets/…/versions）。",
        "Uploading needs JavaScript (or the API: POST /api/v1/datasets/…/versions).",
    ),
    (
        "publish.only",
        "此页面仅限数据提供部门的发布人员和管理员使用。",
        "This page is for the department's publishers and admins.",
    ),
    ("publish.progress", "上传进度", "Upload progress"),
    ("publish.reason", "驳回理由", "Reason"),
    ("publish.register", "登记新数据集", "Register a dataset"),
    ("publish.reject", "驳回", "Reject"),
    ("publish.replace", "替换全部数据", "Replace all data"),
    ("publish.republish", "重新上架", "Publish again"),
    ("publish.revoke", "撤销", "Revoke"),
    ("publish.save", "保存", "Save"),
    ("publish.title", "发布管理", "Publishing"),
    ("publish.unpublish", "下架数据集", "Unpublish"),
    (
        "publish.unpublished",
        "已下架的数据集",
        "Unpublished datasets",
    ),
    ("publish.unpublished_at", "下架时间", "Unpublished"),
    ("publish.upload", "上传新版本", "Upload a version"),
    ("publish.uploaded", "已发布新版本", "Published version"),
    ("sens.masked", "脱敏", "Masked"),
    ("sens.private", "不公开", "Private"),
    ("sens.public", "公开", "Public"),
    (
        "signin.expired",
        "会话已结束，请重新登录。",
        "Your session ended; sign in again.",
    ),
    (
        "signin.failed",
        "密钥无效或已停用。",
        "The key is not valid or was revoked.",
    ),
    (
        "signin.help",
        "使用数据开放平台签发的 API 密钥登录。密钥只在登录时提交一次，不会保存在浏览器中。",
        "Sign in with the API key the platform issued you. The key is sent once and never kept in your browser.",
    ),
    ("signin.key", "API 密钥", "API key"),
    ("signin.submit", "登录", "Sign in"),
    ("signin.title", "登录", "Sign in"),
    (
        "site.footer",
        "公共数据开放平台 · 由 datagate 提供服务 · 每次数据访问均记入防篡改审计日志",
        "Public data platform · served by datagate · every data access is written to a tamper-evident audit log",
    ),
    ("site.name", "公共数据开放平台", "Public Data Portal"),
    ("site.skip", "跳到正文", "Skip to content"),
    ("sort.label", "排序", "Sort"),
    ("sort.reads", "访问最多", "Most read"),
    ("sort.title", "标题", "Title"),
    ("sort.updated", "最近更新", "Recently updated"),
    ("sql.download", "下载结果", "Download the result"),
    ("sql.elapsed", "耗时", "Elapsed"),
    ("sql.error_at", "位置", "At"),
    ("sql.explain", "执行计划", "Explain"),
    (
        "sql.help",
        "只读 SQL（DataFusion 方言）：表名为 部门.数据集。",
        "Read-only SQL (DataFusion dialect): tables are department.dataset.",
    ),
    ("sql.label", "SQL 语句", "SQL statement"),
    ("sql.no_tables", "没有匹配的表", "No table matches"),
    ("sql.rows", "行", "rows"),
    ("sql.run", "运行", "Run"),
    ("sql.tables", "可查询的表", "Tables you can query"),
    (
        "sql.tables_search",
        "按表名、标题或标签查找",
        "Find by table name, title or tag",
    ),
    ("sql.title", "SQL 查询", "SQL console"),
    (
        "sql.truncated",
        "结果已截断（超过行数上限）",
        "Truncated at the row limit",
    ),
    ("version.bytes", "大小", "Size"),
    ("version.created", "时间", "When"),
    ("version.mode", "方式", "Mode"),
    ("version.rows", "行数", "Rows"),
    ("version.version", "版本", "Version"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_unique_and_complete() {
        for pair in TEXTS.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (k, zh, en) in TEXTS {
            assert!(!zh.is_empty() && !en.is_empty(), "{k}");
        }
        assert_eq!(Lang::En.s("nav.catalog"), "Catalog");
        assert_eq!(Lang::Zh.level("conditional"), "有条件开放");
    }

    /// Every text a template or the portal's code asks for by name is in the table (a
    /// missing one shows as `?`).
    #[test]
    fn every_text_asked_for_is_in_the_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/portal");
        let mut sources = Vec::new();
        for sub in [dir.clone(), dir.join("templates")] {
            for entry in std::fs::read_dir(&sub).unwrap() {
                let path = entry.unwrap().path();
                // This file names texts in its tests and comments, not for pages.
                if path.is_file() && !path.ends_with("i18n.rs") {
                    sources.push(path);
                }
            }
        }
        let mut asked = 0;
        for path in &sources {
            let text = std::fs::read_to_string(path).unwrap();
            // `.s("key")`, as templates and code call it.
            for piece in text.split(".s(\"").skip(1) {
                let key = piece.split('"').next().unwrap();
                asked += 1;
                assert!(
                    TEXTS.binary_search_by(|(k, _, _)| (*k).cmp(key)).is_ok(),
                    "{}: the text {key:?} is missing",
                    path.display()
                );
            }
        }
        assert!(
            asked > 100,
            "{asked} texts found: the scan reads the sources"
        );
    }

    #[test]
    fn language_comes_from_query_then_cookie_then_accept_language() {
        let mut h = HeaderMap::new();
        assert_eq!(Lang::choose(None, None, &h), Lang::Zh);
        h.insert("accept-language", "de-DE,en-GB;q=0.8".parse().unwrap());
        assert_eq!(Lang::choose(None, None, &h), Lang::En);
        assert_eq!(Lang::choose(None, Some("zh"), &h), Lang::Zh);
        assert_eq!(Lang::choose(Some("en"), Some("zh"), &h), Lang::En);
    }
}
