// datagate portal: small enhancements only; every page works without this file.
// - the SQL console runs on Ctrl/Cmd+Enter;
// - buttons with data-confirm ask before submitting their form;
// - the SQL console's table search keeps the statement as edited (not as the page came).
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (t instanceof HTMLTextAreaElement && t.classList.contains("sql") && e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    t.form?.requestSubmit();
  }
});
document.addEventListener("submit", (e) => {
  const b = e.submitter;
  if (b && b.dataset.confirm && !window.confirm(b.dataset.confirm)) e.preventDefault();
  const statement = document.getElementById("q");
  if (e.target.id === "table-search" && statement instanceof HTMLTextAreaElement) {
    e.target.querySelector("input[name=q]").value = statement.value;
  }
});
// Upload with a progress bar (department pages): the file is the request body, typed by its
// extension (and the chosen text encoding); the API's answer is shown as it came (the new version, or the problem with its
// line and column).
const TYPES = { csv: "text/csv", ndjson: "application/x-ndjson", jsonl: "application/x-ndjson",
  parquet: "application/vnd.apache.parquet", arrow: "application/vnd.apache.arrow.stream",
  arrows: "application/vnd.apache.arrow.stream" };
const upload = document.getElementById("upload");
if (upload) {
  upload.addEventListener("submit", (e) => {
    e.preventDefault();
    const file = upload.querySelector("input[type=file]").files[0];
    if (!file) return;
    const mode = upload.querySelector("input[name=mode]:checked")?.value || "append";
    const parts = file.name.toLowerCase().split(".");
    const gz = parts[parts.length - 1] === "gz";
    if (gz) parts.pop();
    const bar = document.getElementById("progress");
    const label = document.getElementById("progress-text");
    const out = document.getElementById("upload-result");
    out.textContent = "";
    out.className = "";
    const xhr = new XMLHttpRequest();
    xhr.open("POST", upload.action + "?mode=" + encodeURIComponent(mode));
    // Text in another encoding than UTF-8 says so; the gateway stores it as UTF-8.
    let type = TYPES[parts[parts.length - 1]] || "text/csv";
    const charset = upload.querySelector("select[name=encoding]")?.value || "utf-8";
    if ((type === "text/csv" || type === "application/x-ndjson") && charset !== "utf-8") {
      type += "; charset=" + charset;
    }
    xhr.setRequestHeader("Content-Type", type);
    if (gz) xhr.setRequestHeader("Content-Encoding", "gzip");
    xhr.upload.addEventListener("progress", (p) => {
      if (p.lengthComputable) {
        const pct = Math.round((p.loaded / p.total) * 100);
        bar.value = pct;
        label.textContent = pct + "%";
      }
    });
    xhr.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (_) { body = { detail: xhr.responseText }; }
      if (xhr.status === 201) {
        bar.value = 100;
        label.textContent = "100%";
        out.className = "notice ok";
        out.textContent = `${upload.dataset.done} ${body.version}: ${body.row_count} rows (+${body.rows_added})`;
        const a = document.createElement("a");
        a.href = upload.dataset.dataset;
        a.textContent = " →";
        out.appendChild(a);
      } else {
        out.className = "notice error";
        const where = body.line ? ` (line ${body.line}${body.column ? ", column " + body.column : ""})` : "";
        out.textContent = `${upload.dataset.failed} ${xhr.status}: ${body.detail || ""}${where}`;
      }
    });
    xhr.addEventListener("error", () => {
      out.className = "notice error";
      out.textContent = upload.dataset.failed;
    });
    xhr.send(file);
  });
}
