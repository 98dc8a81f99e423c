// Live pages: the server says when what they show changed (server-sent events); the page
// fetches itself again and swaps in its [data-live] parts. No markup is built here: the
// server renders (and escapes) everything.
"use strict";

function typing(live) {
  const focused = document.activeElement;
  return focused && live.contains(focused) && focused.matches("input, select, textarea");
}

function openDetails(root) {
  return new Set(
    [...root.querySelectorAll("details[open]")].map((d) => d.closest("[data-letter]")?.dataset.letter)
  );
}

async function refresh() {
  const response = await fetch(location.href, { headers: { Accept: "text/html" } });
  if (!response.ok) return;
  const fresh = new DOMParser().parseFromString(await response.text(), "text/html");
  for (const live of document.querySelectorAll("[data-live]")) {
    const replacement = fresh.getElementById(live.id);
    if (!replacement || typing(live)) continue;
    const open = openDetails(live);
    live.replaceChildren(...replacement.childNodes);
    for (const letter of live.querySelectorAll("[data-letter]")) {
      if (open.has(letter.dataset.letter)) letter.querySelector("details")?.setAttribute("open", "");
    }
  }
}

function listen() {
  const status = document.getElementById("live-status");
  const stream = new EventSource(document.body.dataset.stream);
  let busy = false, again = false;
  stream.addEventListener("open", () => status.classList.add("on"));
  stream.addEventListener("error", () => status.classList.remove("on"));
  stream.addEventListener("change", async () => {
    if (busy) { again = true; return; }
    busy = true;
    try {
      do { again = false; await refresh(); } while (again);
    } finally {
      busy = false;
    }
  });
}

// A form with data-confirm asks first.
document.addEventListener("submit", (event) => {
  const question = event.target.dataset.confirm;
  if (question && !window.confirm(question)) event.preventDefault();
});

if (document.querySelector("[data-live]")) listen();
