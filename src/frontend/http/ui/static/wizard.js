// image-factory web UI: optional enhancements; every page works without this file.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  // Live extension filter (the form's Filter button does the same on the server).
  for (const input of document.querySelectorAll("input[data-filter]")) {
    const list = document.querySelector(input.dataset.filter);
    if (!list) continue;
    input.addEventListener("input", () => {
      const q = input.value.trim().toLowerCase();
      for (const li of list.querySelectorAll("li[data-search]")) {
        li.hidden = q !== "" && !li.dataset.search.includes(q);
      }
    });
  }
  // Copy buttons on snippets.
  for (const pre of document.querySelectorAll("pre[data-copy]")) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "copy secondary";
    b.textContent = "Copy";
    b.setAttribute("aria-label", "Copy to clipboard");
    b.addEventListener("click", async () => {
      const text = pre.firstChild ? pre.firstChild.textContent : pre.textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (_) {
        const r = document.createRange();
        r.selectNodeContents(pre);
        const s = window.getSelection();
        s.removeAllRanges();
        s.addRange(r);
        document.execCommand("copy");
      }
      b.textContent = "Copied";
      setTimeout(() => { b.textContent = "Copy"; }, 1500);
    });
    pre.appendChild(b);
  }
});
