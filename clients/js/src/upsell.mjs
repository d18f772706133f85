// upsell-triggers browser client: prompts from the delivery gateway (Server-Sent Events over fetch,
// resumed with Last-Event-ID), rendered accessibly, with shown / clicked / dismissed reported back.
// No dependencies. Built into dist/upsell.js (script tag, global UpsellPrompts) by build.py.

const CSS = [
  ".upsell{--_bg:var(--upsell-bg,#fff);--_fg:var(--upsell-fg,#1b1f24);--_accent:var(--upsell-accent,#4f46e5);",
  "--_accent-fg:var(--upsell-accent-fg,#fff);--_radius:var(--upsell-radius,10px);",
  "font:var(--upsell-font,15px/1.4 system-ui,sans-serif);color:var(--_fg);background:var(--_bg);",
  "box-shadow:0 6px 24px rgba(0,0,0,.18);border-radius:var(--_radius);padding:16px 44px 16px 18px;",
  "position:relative;box-sizing:border-box;animation:upsell-in .18s ease-out}",
  ".upsell h2{font-size:1.05em;margin:0 0 4px}.upsell p{margin:0 0 12px}",
  ".upsell-cta{display:inline-block;background:var(--_accent);color:var(--_accent-fg);padding:8px 14px;",
  "border-radius:calc(var(--_radius) * .6);text-decoration:none;font-weight:600}",
  ".upsell-close{position:absolute;top:8px;right:8px;border:0;background:transparent;color:inherit;",
  "font-size:20px;line-height:1;cursor:pointer;padding:4px 8px;border-radius:6px}",
  ".upsell :focus-visible{outline:3px solid var(--_accent);outline-offset:2px}",
  ".upsell--banner{position:fixed;top:12px;left:50%;transform:translateX(-50%);width:min(680px,94vw);",
  "z-index:var(--upsell-z,2147483000)}",
  ".upsell--toast{position:fixed;right:16px;bottom:16px;width:min(360px,92vw);z-index:var(--upsell-z,2147483000)}",
  ".upsell-backdrop{position:fixed;inset:0;background:rgba(0,0,0,.45);display:flex;align-items:center;",
  "justify-content:center;z-index:var(--upsell-z,2147483000)}",
  ".upsell--modal{width:min(460px,92vw)}",
  "@keyframes upsell-in{from{opacity:0;translate:0 -6px}to{opacity:1;translate:0 0}}",
  "@media (prefers-reduced-motion:reduce){.upsell{animation:none}}",
].join("");

let uid = 0;

function injectStyle(doc) {
  if (doc.getElementById("upsell-style")) return;
  const s = doc.createElement("style");
  s.id = "upsell-style";
  s.textContent = CSS;
  doc.head.appendChild(s);
}

function el(doc, tag, attrs, text) {
  const e = doc.createElement(tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text != null) e.textContent = text; // never innerHTML: prompt copy is text
  return e;
}

// The default renderer: banner / modal / toast / inline. Returns the element to watch for visibility
// and a function that takes it down.
export function renderDefault(prompt, api, opts) {
  const doc = opts.document || document;
  injectStyle(doc);
  const placement = prompt.placement || "banner";
  const id = "upsell-" + ++uid;
  const isModal = placement === "modal";
  const box = el(doc, "div", { class: "upsell upsell--" + placement, "data-prompt-id": prompt.prompt_id });
  if (isModal) {
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-modal", "true");
    box.setAttribute("aria-labelledby", id + "-t");
    box.setAttribute("aria-describedby", id + "-b");
  } else if (placement === "toast") {
    box.setAttribute("role", "status");
    box.setAttribute("aria-live", "polite");
  } else {
    box.setAttribute("role", "region");
    box.setAttribute("aria-labelledby", id + "-t");
  }
  box.appendChild(el(doc, "h2", { id: id + "-t" }, prompt.title));
  box.appendChild(el(doc, "p", { id: id + "-b" }, prompt.body));
  const cta = prompt.cta || {};
  const link = el(doc, "a", { class: "upsell-cta", href: safeUrl(cta.url) }, cta.label || "Upgrade");
  link.addEventListener("click", () => api.clicked());
  box.appendChild(link);
  const close = el(doc, "button", { class: "upsell-close", type: "button", "aria-label": "Dismiss" }, "\u00d7");
  box.appendChild(close);

  let root = box;
  let previous = null;
  const onKey = (e) => {
    if (e.key === "Escape") {
      e.preventDefault();
      api.dismissed();
    } else if (e.key === "Tab" && isModal) {
      const f = [link, close];
      const i = f.indexOf(doc.activeElement);
      if (e.shiftKey && i <= 0) { e.preventDefault(); f[f.length - 1].focus(); }
      else if (!e.shiftKey && i === f.length - 1) { e.preventDefault(); f[0].focus(); }
    }
  };
  close.addEventListener("click", () => api.dismissed());
  if (isModal) {
    root = el(doc, "div", { class: "upsell-backdrop" });
    root.appendChild(box);
    previous = doc.activeElement;
    doc.addEventListener("keydown", onKey, true);
  } else {
    box.addEventListener("keydown", onKey);
  }
  const slot = placement === "inline" && (opts.container || doc.querySelector("[data-upsell-slot]"));
  if (placement === "inline" && !slot) box.className = "upsell upsell--banner";
  (slot || doc.body).appendChild(root);
  if (isModal) link.focus();
  return {
    element: box,
    remove() {
      if (isModal) doc.removeEventListener("keydown", onKey, true);
      root.remove();
      if (previous && previous.focus) previous.focus(); // focus returns where it was
    },
  };
}

function safeUrl(u) {
  try {
    const p = new URL(u, location.href);
    return p.protocol === "https:" || p.protocol === "http:" ? p.href : "#";
  } catch (_) {
    return "#";
  }
}

// Parses Server-Sent Events from text chunks; calls onEvent({id, event, data}) per complete event.
export function sseParser(onEvent) {
  let buf = "";
  let cr = false; // a chunk ended in CR: it may be the first half of a CRLF
  return (chunk) => {
    if (cr) chunk = "\r" + chunk;
    cr = chunk.endsWith("\r");
    if (cr) chunk = chunk.slice(0, -1);
    buf += chunk.replace(/\r\n?/g, "\n");
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const ev = { id: null, event: "message", data: [] };
      for (const line of block.split("\n")) {
        if (!line || line[0] === ":") continue;
        const c = line.indexOf(":");
        const field = c < 0 ? line : line.slice(0, c);
        const value = c < 0 ? "" : line.slice(c + (line[c + 1] === " " ? 2 : 1));
        if (field === "data") ev.data.push(value);
        else if (field === "id") ev.id = value;
        else if (field === "event") ev.event = value;
      }
      if (ev.data.length || ev.id !== null) onEvent({ id: ev.id, event: ev.event, data: ev.data.join("\n") });
    }
  };
}

export function connect(options) {
  const o = Object.assign(
    { heartbeatTimeoutMs: 45000, minBackoffMs: 500, maxBackoffMs: 30000, fetch: null },
    options,
  );
  const base = String(o.url || "").replace(/\/$/, "");
  const doFetch = o.fetch || ((...a) => fetch(...a));
  const live = new Map(); // prompt_id -> {prompt, view}
  const seen = new Set(); // prompt ids rendered by this page: a repeat never renders twice
  const sent = new Set(); // "id|action" reported by this page
  let lastId = null;
  let closed = false;
  let attempt = 0;
  let ctrl = null;
  let timer = null;
  let watchdog = null;
  const observer =
    typeof IntersectionObserver === "function"
      ? new IntersectionObserver((entries) => {
          for (const e of entries) {
            if (e.isIntersecting) {
              observer.unobserve(e.target);
              const id = e.target.getAttribute("data-prompt-id") || e.target.__upsellId;
              if (id) report(id, "shown");
            }
          }
        }, { threshold: 0.5 })
      : null;

  async function token() {
    return typeof o.token === "function" ? await o.token() : o.token;
  }

  async function report(promptId, action) {
    const key = promptId + "|" + action;
    if (sent.has(key)) return;
    sent.add(key);
    try {
      const r = await doFetch(base + "/v1/feedback", {
        method: "POST",
        keepalive: true, // a CTA click navigates away; the report still goes out
        headers: { Authorization: "Bearer " + (await token()), "Content-Type": "application/json" },
        body: JSON.stringify({ prompt_id: promptId, action }),
      });
      if (r.status >= 500 || r.status === 429) sent.delete(key);
      if (o.onFeedback) o.onFeedback(promptId, action, r.status);
    } catch (err) {
      sent.delete(key);
      if (o.onError) o.onError(err);
    }
  }

  function take(promptId) {
    const v = live.get(promptId);
    if (!v) return;
    live.delete(promptId);
    if (v.view && v.view.element && observer) observer.unobserve(v.view.element);
    if (v.view && v.view.remove) v.view.remove();
  }

  function show(prompt) {
    if (seen.has(prompt.prompt_id)) return;
    seen.add(prompt.prompt_id);
    const api = {
      shown: () => report(prompt.prompt_id, "shown"),
      clicked: () => report(prompt.prompt_id, "clicked"),
      dismissed: () => { report(prompt.prompt_id, "dismissed"); take(prompt.prompt_id); },
    };
    const view = (o.render || renderDefault)(prompt, api, o) || null;
    live.set(prompt.prompt_id, { prompt, view });
    if (view && view.element) {
      view.element.__upsellId = prompt.prompt_id;
      if (observer) observer.observe(view.element);
      else api.shown();
    }
    if (o.onPrompt) o.onPrompt(prompt);
  }

  const onEvent = (ev) => {
    if (ev.event === "prompt") {
      if (ev.id !== null) lastId = ev.id;
      show(JSON.parse(ev.data));
    } else if (ev.event === "dismissed") {
      take(JSON.parse(ev.data).prompt_id);
    }
  };

  function retry() {
    if (closed) return;
    const d = Math.min(o.maxBackoffMs, o.minBackoffMs * 2 ** attempt++);
    timer = setTimeout(open, d / 2 + Math.random() * (d / 2)); // jittered exponential backoff
  }

  function arm() {
    clearTimeout(watchdog);
    watchdog = setTimeout(() => ctrl && ctrl.abort(), o.heartbeatTimeoutMs);
  }

  async function open() {
    if (closed) return;
    ctrl = new AbortController();
    const headers = { Authorization: "Bearer " + (await token()), Accept: "text/event-stream" };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    const q = o.account ? "?account=" + encodeURIComponent(o.account) : "";
    try {
      arm();
      const r = await doFetch(base + "/v1/stream" + q, { headers, signal: ctrl.signal, cache: "no-store" });
      if (!r.ok) {
        const err = new Error("upsell gateway answered " + r.status);
        err.status = r.status;
        if (o.onError) o.onError(err);
        if ((r.status === 401 || r.status === 403) && typeof o.token !== "function") closed = true;
        clearTimeout(watchdog);
        return retry();
      }
      attempt = 0;
      if (o.onOpen) o.onOpen();
      const reader = r.body.getReader();
      const dec = new TextDecoder();
      const feed = sseParser(onEvent);
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        arm();
        feed(dec.decode(value, { stream: true }));
      }
    } catch (err) {
      if (!closed && o.onError) o.onError(err);
    }
    clearTimeout(watchdog);
    retry();
  }

  open();
  return {
    close() {
      closed = true;
      clearTimeout(timer);
      clearTimeout(watchdog);
      if (ctrl) ctrl.abort();
      if (observer) observer.disconnect();
      for (const id of [...live.keys()]) take(id);
    },
    prompts: () => [...live.values()].map((v) => v.prompt),
    report,
    get lastEventId() {
      return lastId;
    },
  };
}
