// Batch page: calls listed by verdict, then highest severity (the server sorts).
"use strict";

(async () => {
  const { el, api, status, VERDICT, REVIEW_STATE } = callqc;
  const root = document.getElementById("app");
  const batch = root.dataset.batch;
  try {
    const data = await api(`/api/batches/${encodeURIComponent(batch)}`);
    const body = document.querySelector("#calls tbody");
    for (const row of data.calls) {
      const link = row.verdict
        ? el("a", { href: `/calls/${encodeURIComponent(batch)}/${encodeURIComponent(row.call_id)}` }, row.call_id)
        : row.call_id;
      body.append(el("tr", { class: `verdict-${row.verdict || "none"}`, dataset: { call: row.call_id } },
        el("td", {}, link),
        el("td", { class: "verdict" }, VERDICT[row.verdict] || "—"),
        el("td", {}, row.top_severity ? el("span", { class: `sev sev-${row.top_severity}` }, row.top_severity) : "—"),
        el("td", {}, row.findings ?? "—"),
        el("td", {}, row.score === null || row.score === undefined ? "—" : Number(row.score).toFixed(0)),
        el("td", { class: "review" }, row.review && row.review.state
          ? `${REVIEW_STATE[row.review.state] || row.review.state} · ${(row.review.reviewers || []).join(", ")}` : "—"),
        el("td", {}, row.state)));
    }
    status(`${data.calls.length} 通 (calls)`);
  } catch (err) {
    status(err.message, true);
  }
})();
