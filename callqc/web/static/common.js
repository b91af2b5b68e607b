// Helpers shared by the reviewer pages. DOM is built with textContent only (no innerHTML): transcript
// text is data, never markup.
"use strict";

const callqc = (() => {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function fmtTime(seconds) {
    const s = Math.max(0, Number(seconds) || 0);
    const m = Math.floor(s / 60);
    return `${m}:${(s - m * 60).toFixed(1).padStart(4, "0")}`;
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    opts.headers = Object.assign({ Accept: "application/json" }, opts.headers);
    const res = await fetch(path, opts);
    if (res.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
      throw new Error("not logged in");
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(body.error || `HTTP ${res.status}`);
    return body;
  }

  const VERDICT = { fail: "不合格 (fail)", needs_review: "待复核 (needs review)", pass: "合格 (pass)" };
  const ROLE = { agent: "坐席 (agent)", customer: "客户 (customer)", third_party: "第三方 (third party)",
                 unknown: "未知 (unknown)" };

  const REVIEW_STATE = { draft: "草稿 (draft)", reviewed: "已复核 (reviewed)", appealed: "申诉中 (appealed)",
                         final: "已定稿 (final)" };

  function status(text, isError) {
    const node = document.getElementById("status");
    if (!node) return;
    node.textContent = text || "";
    node.className = isError ? "error" : "";
  }

  return { el, fmtTime, api, status, VERDICT, ROLE, REVIEW_STATE };
})();
