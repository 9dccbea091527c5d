// datagate portal: small enhancements only; every page works without this file.
// - the SQL console runs on Ctrl/Cmd+Enter;
// - buttons with data-confirm ask before submitting their form.
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
});
