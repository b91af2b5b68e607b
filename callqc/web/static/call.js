// Call page: header, transcript by role with findings highlighted, audio player that jumps to a finding,
// machine result and human review side by side, review buttons.
"use strict";

(async () => {
  const { el, fmtTime, api, status, VERDICT, ROLE, REVIEW_STATE } = callqc;
  const root = document.getElementById("app");
  const batch = root.dataset.batch;
  const call = root.dataset.call;
  const base = `/api/calls/${encodeURIComponent(batch)}/${encodeURIComponent(call)}`;
  const audio = document.getElementById("player");
  let data = null;
  let stopAt = null; // end of the finding being played: pause there
  let activeKey = null;
  let audioExpires = 0;

  // -- audio ------------------------------------------------------------------------------------
  function setAudio(grant) {
    if (!grant) {
      document.getElementById("player-box").replaceChildren(el("p", { class: "hint" }, "无权收听录音 (no audio access)"));
      return;
    }
    audioExpires = grant.expires;
    const resumeAt = audio.currentTime || 0;
    const wasPlaying = !audio.paused;
    audio.src = grant.url;
    if (resumeAt) {
      audio.addEventListener("loadedmetadata", () => {
        audio.currentTime = resumeAt;
        if (wasPlaying) audio.play().catch(() => {});
      }, { once: true });
    }
  }

  async function renewAudio() {
    try {
      setAudio(await api(`${base}/audio-url`));
    } catch (err) {
      status(`录音链接失效 (audio link expired): ${err.message}`, true);
    }
  }

  // the signed URL is short-lived: fetch a new one when the old one is refused or about to expire
  audio.addEventListener("error", () => { if (audioExpires) renewAudio(); });
  setInterval(() => {
    if (audioExpires && audioExpires - Date.now() / 1000 < 20) { audioExpires = 0; renewAudio(); }
  }, 5000);

  function seek(start, end) {
    stopAt = end;
    const go = () => {
      audio.currentTime = start;
      audio.play().catch(() => {});
    };
    if (audio.readyState >= 1) go();
    else audio.addEventListener("loadedmetadata", go, { once: true });
  }

  function playFinding(finding) {
    if (activeKey === finding.key && !audio.paused) { // a second click on the playing finding pauses
      audio.pause();
      return;
    }
    activeKey = finding.key;
    for (const row of document.querySelectorAll(".finding")) {
      row.classList.toggle("active", row.dataset.key === finding.key);
    }
    seek(finding.start, finding.end);
  }

  audio.addEventListener("timeupdate", () => {
    const t = audio.currentTime;
    if (stopAt !== null && t >= stopAt) {
      audio.pause();
      audio.currentTime = stopAt;
      stopAt = null;
    }
    for (const seg of document.querySelectorAll(".seg")) {
      seg.classList.toggle("playing", t >= Number(seg.dataset.start) && t < Number(seg.dataset.end));
    }
  });
  audio.addEventListener("seeking", () => {
    if (stopAt !== null && (audio.currentTime < 0 || audio.currentTime > stopAt + 0.5)) stopAt = null;
  });

  // -- rendering --------------------------------------------------------------------------------
  const fmtScore = (x) => (x === null || x === undefined ? "—" : Number(x).toFixed(1));

  function renderHeader(h) {
    const v = h.versions || {};
    const r = data.review || {};
    const human = r.human_edited || r.state === "reviewed" || r.state === "final";
    const dl = el("dl", {},
      el("dt", {}, "机器结论 (machine verdict)"),
      el("dd", { id: "verdict", class: `verdict-${h.verdict}` }, VERDICT[h.verdict] || h.verdict, " · ",
         `评分 (score) ${fmtScore(h.score)}`),
      el("dt", {}, "人工结论 (human verdict)"),
      el("dd", { id: "human-verdict", class: human ? `verdict-${r.verdict}` : "" },
         human ? [VERDICT[r.verdict] || r.verdict, " · ", `评分 (score) ${fmtScore(r.score)}`] : "—"),
      el("dt", {}, "复核状态 (review state)"),
      el("dd", { id: "review-state" }, `${REVIEW_STATE[r.state] || r.state || "—"} · rev ${r.revision ?? 0}`
         + (r.reviewers && r.reviewers.length ? ` · ${r.reviewers.join(", ")}` : "")
         + (r.report_changed ? " · 报告已重新生成 (report re-generated)" : "")),
      el("dt", {}, "时长 (duration)"), el("dd", {}, fmtTime(h.duration)),
      el("dt", {}, "语言 (language)"), el("dd", {}, h.language),
      el("dt", {}, "版本 (versions)"),
      el("dd", { class: "versions" }, Object.entries(v).filter(([, x]) => x).map(([k, x]) => `${k} ${x}`).join(" · ")),
      h.needs_review_reasons && h.needs_review_reasons.length
        ? [el("dt", {}, "复核原因 (review reasons)"), el("dd", {}, h.needs_review_reasons.join("; "))] : null);
    document.getElementById("header").replaceChildren(dl);
  }

  function worstByTime(findings, seg) {
    let worst = null;
    for (const f of findings) {
      if (f.human && f.human.decision === "rejected") continue; // a rejected finding is not highlighted
      const linked = (f.segment_ids || []).includes(seg.id) || (f.start < seg.end && f.end > seg.start);
      if (linked && (worst === null || f.severity < worst)) worst = f.severity;
    }
    return worst;
  }

  function renderTranscript() {
    const list = document.getElementById("transcript");
    list.replaceChildren(...data.transcript.map((seg) => {
      const sev = worstByTime(data.findings, seg);
      return el("li", {
        class: `seg role-${seg.role}` + (sev ? ` hit hit-${sev}` : ""),
        dataset: { id: seg.id, start: seg.start, end: seg.end },
        onclick: () => { stopAt = null; audio.currentTime = seg.start; },
      },
      el("span", { class: "time" }, fmtTime(seg.start)),
      el("span", { class: "role" }, ROLE[seg.role] || seg.role),
      el("span", { class: "text" }, seg.text));
    }));
  }

  const DECISION = { confirmed: "确认 (confirmed)", rejected: "驳回 (rejected)", pending: "待定 (pending)" };
  const can = (action) => (data.actions || []).includes(action);
  const editable = () => ["draft", "appealed"].includes((data.review || {}).state || "draft");

  function humanCell(f) {
    const h = f.human || {};
    const added = f.origin === "human" ? "人工新增 (added) · " : "";
    const decision = h.decision || "pending";
    return el("span", { class: `human-${decision}` + (added ? " human-added" : "") },
      `${added}${DECISION[decision] || decision}${h.reason ? " · " + h.reason : ""}`);
  }

  function reviewButtons(f) {
    if (!editable()) return null;
    const act = (action) => async (event) => {
      event.stopPropagation(); // a button in the row must not seek the player
      const reason = action === "reject" ? prompt("驳回原因 (reason for rejecting)") : "";
      if (action === "reject" && !reason) return;
      await submit({ action, finding: f.key, reason: reason || "" });
    };
    return el("span", {},
      can("confirm") ? el("button", { class: "small confirm", type: "button", onclick: act("confirm") }, "确认 (confirm)") : null,
      " ",
      can("reject") ? el("button", { class: "small reject", type: "button", onclick: act("reject") }, "驳回 (reject)") : null);
  }

  function renderFindings() {
    const body = document.querySelector("#findings tbody");
    body.replaceChildren(...data.findings.map((f, i) => el("tr", {
      class: `finding sev-row-${f.severity}` + (f.key === activeKey ? " active" : ""),
      dataset: { key: f.key, index: i, start: f.start, end: f.end, rule: f.rule_id },
      title: "点击播放此段 (click to play this span)",
      onclick: () => playFinding(f),
    },
    el("td", { class: "time" }, `${fmtTime(f.start)}–${fmtTime(f.end)}`),
    el("td", {}, el("strong", {}, f.rule_id), " ", f.name, f.evidence ? el("div", { class: "evidence" }, f.evidence) : null),
    el("td", {}, el("span", { class: `sev sev-${f.severity}` }, f.severity)),
    el("td", {}, f.origin === "human" ? "—" : `${f.source} · ${(Number(f.confidence) * 100).toFixed(0)}%`),
    el("td", { class: "human" }, humanCell(f)),
    el("td", {}, reviewButtons(f)))));
  }

  function stateButton(action, label, needsReason) {
    return el("button", { type: "button", class: `state-${action}`, onclick: async () => {
      const reason = needsReason ? prompt(`${label}: 原因 (reason)`) : "";
      if (needsReason && !reason) return;
      await submit({ action, reason: reason || "" });
    } }, label);
  }

  function renderReview() {
    const box = document.getElementById("review-box");
    const r = data.review || {};
    const history = el("ol", { class: "history" }, (r.history || []).map((e) => el("li", {},
      `${e.at} · ${e.actor} · ${e.kind}${e.finding_id ? " " + e.finding_id : ""} → ${REVIEW_STATE[e.to_state] || e.to_state}`
      + (e.reason ? ` · ${e.reason}` : ""))));
    const state = r.state || "draft";
    const buttons = el("p", { class: "state-buttons" },
      can("complete") && editable() ? stateButton("complete", "完成复核 (complete review)", false) : null, " ",
      can("appeal") && state === "reviewed" ? stateButton("appeal", "申诉 (appeal)", true) : null, " ",
      can("finalize") && (state === "reviewed" || state === "appealed")
        ? stateButton("finalize", "定稿 (finalize)", true) : null);
    const parts = [el("h3", {}, "复核记录 (review history)"), history, buttons];
    if (!can("add") || !editable()) { box.replaceChildren(...parts); return; }
    const form = el("form", { id: "add-finding" },
      el("h3", {}, "新增发现 (add finding)"),
      el("label", {}, "规则 (rule id)", el("input", { name: "rule_id", required: true })),
      el("label", {}, "名称 (name)", el("input", { name: "name" })),
      el("label", {}, "级别 (severity)", el("select", { name: "severity" },
        el("option", { value: "S0" }, "S0"), el("option", { value: "S1" }, "S1"), el("option", { value: "S2" }, "S2"))),
      el("label", {}, "开始秒 (start s)", el("input", { name: "start", type: "number", step: "0.1", min: "0", required: true })),
      el("label", {}, "结束秒 (end s)", el("input", { name: "end", type: "number", step: "0.1", min: "0", required: true })),
      el("label", {}, "原因 (reason)", el("input", { name: "reason", required: true })),
      el("button", { type: "button", onclick: () => {
        form.elements.start.value = audio.currentTime.toFixed(1);
      } }, "用当前播放位置 (use player position)"),
      el("button", { type: "submit" }, "提交 (add)"));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const f = form.elements;
      await submit({ action: "add", rule_id: f.rule_id.value, name: f.name.value, severity: f.severity.value,
                     start: Number(f.start.value), end: Number(f.end.value), reason: f.reason.value });
      form.reset();
    });
    box.replaceChildren(...parts, form);
  }

  async function submit(action) {
    try {
      const updated = await api(`${base}/review`, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Requested-With": "callqc" },
        body: JSON.stringify(Object.assign({ revision: (data.review || {}).revision ?? 0 }, action)),
      });
      Object.assign(data, updated);
      render();
      status("已保存 (saved)");
    } catch (err) {
      status(err.message, true);
    }
  }

  function render() {
    renderHeader(data.header);
    renderTranscript();
    renderFindings();
    renderReview();
  }

  try {
    data = await api(base);
    setAudio(data.audio);
    render();
    root.dataset.ready = "1";
  } catch (err) {
    status(err.message, true);
  }
})();
