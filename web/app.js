// waservice web interface — vanilla JS, no build step, no external assets.
// Every URL is relative so the page keeps working behind a reverse-proxy prefix.

const ID_RE = /^[A-Za-z0-9_-]{1,64}$/;
const REFRESH_MS = 5000;        // normal auto-refresh of GET sessions
const FAST_REFRESH_MS = 1500;   // while a session is "connecting"
const OFFLINE_RETRY_MS = 3000;  // while the server is unreachable
const QR_POLL_MS = 2500;        // while a session is "qr_ready"
const REQUEST_TIMEOUT_MS = 15000;
const UPLOAD_TIMEOUT_MS = 120000; // a file upload (up to 64 MiB) may take longer on a slow link
const KEY_STORAGE = "waservice.apiKey";
// The live stream (GET /events): while it is up the page does not poll; it reconnects after these
// delays (ms, then the last one again), resuming from the last event id it saw.
const STREAM_TYPES = "session.status,session.qr,message.received";
const STREAM_BACKOFF_MS = [1000, 2000, 4000, 8000, 15000, 30000];
const RECENT_MAX = 20; // messages kept per card
const RECENT_WINDOW = 2000; // log ids read back at load to fill "Recent messages" (bounded)

const STATES = {
  disconnected: { label: "Disconnected", icon: "○" },
  connecting: { label: "Connecting", icon: "◌" },
  qr_ready: { label: "QR ready", icon: "▦" },
  connected: { label: "Connected", icon: "✓" },
  error: { label: "Error", icon: "!" },
  failed: { label: "Failed", icon: "✕" },
};

const $ = (sel, root = document) => root.querySelector(sel);

// ---------------------------------------------------------------- storage --

function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return memoryKey;
  }
}
let memoryKey = "";
function setKey(value) {
  memoryKey = value;
  try {
    if (value) localStorage.setItem(KEY_STORAGE, value);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage unavailable (private mode): keep it in memory only */
  }
}

// -------------------------------------------------------------------- API --

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}
class NetworkError extends Error {}

// `body` is sent as JSON; `form` (a FormData) as multipart/form-data, with the boundary the
// browser picks. `headers` adds to the defaults (an Idempotency-Key, say).
async function api(path, { method = "GET", body, form, headers: extra = {}, timeout = REQUEST_TIMEOUT_MS } = {}) {
  const headers = { Accept: "application/json", ...extra };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const key = getKey();
  if (key) headers["X-API-Key"] = key;

  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), timeout);
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: form !== undefined ? form : body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "same-origin",
      signal: ctrl.signal,
    });
  } catch (err) {
    setOnline(false);
    throw new NetworkError("The server is unreachable.");
  } finally {
    clearTimeout(timer);
  }

  let data = null;
  try {
    data = await res.json();
  } catch {
    data = null;
  }
  // A reverse proxy answering 502/503/504 with a non-JSON page means the
  // service itself is down: treat it like a failed fetch.
  if (!data && [502, 503, 504].includes(res.status)) {
    setOnline(false);
    throw new NetworkError("The server is unreachable.");
  }
  setOnline(true);

  if (res.status === 401) {
    requireKey();
    throw new ApiError((data && data.error) || "An API key is required.", 401);
  }
  if (!res.ok || !data || data.success === false) {
    const msg = (data && data.error) || `Request failed (HTTP ${res.status}).`;
    throw new ApiError(msg, res.status);
  }
  if (res.ok) authOk();
  return data;
}

const q = (id) => encodeURIComponent(id);

// One Idempotency-Key per message, kept while that message is retried: a send whose answer was
// lost (a timeout, a dropped connection) and is sent again is answered, not sent twice.
// crypto.getRandomValues works on plain http too (randomUUID needs a secure context).
function newIdempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
// Answers after which the same message may be sent again under the same key.
const RETRYABLE_STATUS = new Set([408, 409, 429, 500, 502, 503, 504]);

// The media type /send-media takes, from a file's mimetype.
function mediaType(mimetype) {
  const kind = (mimetype || "").split("/")[0];
  return ["image", "video", "audio"].includes(kind) ? kind : "document";
}

// ------------------------------------------------------------ live region --

const live = $("#live");
let liveTimer = 0;
function announce(text, kind = "info", visual = true) {
  // Everything goes to the aria-live region; only page-level news is also shown as a toast
  // (card-level results are already visible inside their card).
  live.textContent = "";
  live.dataset.kind = kind;
  clearTimeout(liveTimer);
  if (!visual) live.classList.remove("show");
  // A tick between clearing and setting makes screen readers repeat
  // identical consecutive messages.
  requestAnimationFrame(() => {
    live.textContent = text;
    if (visual) {
      live.classList.add("show");
      liveTimer = setTimeout(() => live.classList.remove("show"), 5000);
    }
  });
}

// ------------------------------------------------------------ time helpers --

const rtf = new Intl.RelativeTimeFormat(undefined, { numeric: "auto", style: "short" });
function relativeTime(iso) {
  if (!iso) return "—";
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) return String(iso);
  const sec = Math.round((t.getTime() - Date.now()) / 1000);
  const abs = Math.abs(sec);
  if (abs < 10) return "just now";
  if (abs < 60) return rtf.format(sec, "second");
  if (abs < 3600) return rtf.format(Math.round(sec / 60), "minute");
  if (abs < 86400) return rtf.format(Math.round(sec / 3600), "hour");
  return rtf.format(Math.round(sec / 86400), "day");
}
function absoluteTime(iso) {
  const t = new Date(iso);
  return Number.isNaN(t.getTime()) ? String(iso || "") : t.toLocaleString();
}
function formatPhone(p) {
  if (p === null || p === undefined || p === "") return null;
  const s = String(p);
  return /^\d+$/.test(s) ? `+${s}` : s;
}

// ----------------------------------------------------------- online state --

const offlineBanner = $("#offline-banner");
const offlineText = $("#offline-text");
let online = true;
let lastUpdated = null;

function setOnline(value) {
  if (value === online) return;
  online = value;
  offlineBanner.hidden = value;
  document.body.classList.toggle("is-offline", !value);
  if (!value) {
    const since = lastUpdated ? ` Last update ${lastUpdated.toLocaleTimeString()}.` : "";
    offlineText.textContent = `The page can't reach waservice. Retrying automatically…${since}`;
  } else {
    announce("Connection to the server restored.", "success");
    scheduleRefresh(0);
  }
}

const lastUpdatedEl = $("#last-updated");
function renderLastUpdated() {
  if (!lastUpdated) {
    lastUpdatedEl.textContent = "";
    return;
  }
  lastUpdatedEl.textContent = `Updated ${relativeTime(lastUpdated.toISOString())}`;
  lastUpdatedEl.title = lastUpdated.toLocaleString();
}

// ---------------------------------------------------------------- API key --

const keyPanel = $("#key-panel");
const keyForm = $("#key-form");
const keyInput = $("#key-input");
const keyError = $("#key-error");
const keyBtn = $("#key-btn");
const keyForget = $("#key-forget");
let authRequired = false;

function showKeyPanel(focus = true) {
  const wasHidden = keyPanel.hidden;
  keyPanel.hidden = false;
  keyBtn.setAttribute("aria-expanded", "true");
  keyForget.hidden = !getKey();
  if (wasHidden && focus) keyInput.focus();
}
function hideKeyPanel() {
  keyPanel.hidden = true;
  keyBtn.setAttribute("aria-expanded", "false");
  keyError.hidden = true;
}
function showKeyError(text) {
  keyError.textContent = text;
  keyError.hidden = false;
}

function requireKey() {
  const firstTime = !authRequired;
  authRequired = true;
  document.body.classList.add("needs-key");
  if (getKey()) showKeyError("The saved API key was rejected by the server. Enter the correct key.");
  else showKeyError("This server requires an API key.");
  showKeyPanel(firstTime); // reopen if closed, but only steal focus the first time
  if (!cards.size) setLoading("Enter the API key to load sessions.");
  if (firstTime) announce("An API key is required.", "error");
}
function authOk() {
  if (!authRequired) return;
  authRequired = false;
  document.body.classList.remove("needs-key");
  hideKeyPanel();
}

keyBtn.addEventListener("click", () => {
  if (keyPanel.hidden) {
    keyError.hidden = true;
    showKeyPanel(true);
  } else if (!authRequired) {
    hideKeyPanel();
  }
});
$("#key-cancel").addEventListener("click", () => {
  hideKeyPanel();
  keyBtn.focus();
});
keyForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const value = keyInput.value.trim();
  if (!value) {
    showKeyError("Enter the API key.");
    keyInput.focus();
    return;
  }
  setKey(value);
  keyInput.value = "";
  keyError.hidden = true;
  hideKeyPanel();
  authRequired = false;
  document.body.classList.remove("needs-key");
  announce("API key saved.", "success");
  scheduleRefresh(0);
  restartStream();
});
keyForget.addEventListener("click", () => {
  setKey("");
  keyInput.value = "";
  keyForget.hidden = true;
  announce("API key forgotten.", "info");
  scheduleRefresh(0);
  restartStream();
});
keyPanel.addEventListener("keydown", (ev) => {
  if (ev.key === "Escape" && !authRequired) {
    hideKeyPanel();
    keyBtn.focus();
  }
});

// --------------------------------------------------------- confirm dialog --

const confirmDialog = $("#confirm-dialog");
function confirmAction(text, okLabel = "Delete") {
  if (typeof confirmDialog.showModal !== "function") {
    return Promise.resolve(window.confirm(text));
  }
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  confirmDialog.returnValue = "";
  return new Promise((resolve) => {
    confirmDialog.addEventListener(
      "close",
      () => resolve(confirmDialog.returnValue === "ok"),
      { once: true },
    );
    confirmDialog.showModal();
    $("#confirm-cancel").focus();
  });
}
// Click on the backdrop cancels.
confirmDialog.addEventListener("click", (ev) => {
  if (ev.target === confirmDialog) confirmDialog.close("cancel");
});

// ------------------------------------------------------------------ cards --

const grid = $("#sessions");
const template = $("#card-template");
const cards = new Map(); // session_id -> Card
let uid = 0;

// QR images are fetched only for cards on screen (or about to be): with hundreds of sessions
// waiting for a scan, polling every card's QR would load the server for images nobody sees.
const cardOfElement = new WeakMap(); // card element -> Card
const qrObserver =
  typeof IntersectionObserver === "function"
    ? new IntersectionObserver(
        (entries) => {
          for (const entry of entries) cardOfElement.get(entry.target)?.setVisible(entry.isIntersecting);
        },
        { rootMargin: "200px 0px" },
      )
    : null;

const ACTIONS = [
  { name: "connect", label: "Connect", kind: "primary" },
  { name: "qr", label: "Get QR" },
  { name: "status", label: "Check status" },
  { name: "disconnect", label: "Disconnect" },
  { name: "reset", label: "Reset reconnect" },
  { name: "delete", label: "Delete", kind: "danger" },
];

class Card {
  constructor(id) {
    this.id = id;
    this.state = null;
    this.data = null;
    this.qrCode = null;
    this.qrTimer = 0;
    this.qrBusy = false;
    this.msgTimer = 0;
    this.destroyed = false;
    this.visible = qrObserver === null; // without IntersectionObserver every card counts as visible
    const n = ++uid;

    const el = template.content.firstElementChild.cloneNode(true);
    this.el = el;
    cardOfElement.set(el, this);
    qrObserver?.observe(el);
    el.dataset.sessionId = id;
    const titleId = `card-title-${n}`;
    const title = $(".card-title", el);
    title.textContent = id;
    title.id = titleId;
    $(".card-inner", el).setAttribute("aria-labelledby", titleId);

    this.badge = $(".badge", el);
    this.badgeIcon = $(".badge-icon", el);
    this.badgeText = $(".badge-text", el);
    this.phone = $(".phone", el);
    this.attempts = $(".attempts", el);
    this.changed = $(".changed", el);
    this.lastError = $(".last-error", el);
    this.lastErrorText = $(".last-error-text", el);
    this.qrBox = $(".qr-box", el);
    this.qrImg = $(".qr", el);
    this.qrImg.alt = `QR code to link session ${id}`;
    this.msg = $(".card-msg", el);
    this.recentList = $(".recent-list", el);
    this.recentEmpty = $(".recent-empty", el);
    this.qrActive = false; // showing the QR (its image is fetched on each session.qr, or polled)
    this.sendForm = $(".send-form", el);
    this.sendResult = $(".send-result", el);
    this.replyBox = $(".send-reply", el);
    this.replyText = $(".send-reply-text", el);
    this.replyTo = null; // { id, chat } of the message the next send quotes
    this.pendingSend = null; // { signature, key }: the message being sent or to retry, and its key

    // Unique ids for the send form's label/input pairs.
    const numId = `send-number-${n}`;
    const textId = `send-text-${n}`;
    const fileId = `send-file-${n}`;
    $(".send-number-label", el).htmlFor = numId;
    $(".send-number", el).id = numId;
    $(".send-text-label", el).htmlFor = textId;
    $(".send-text", el).id = textId;
    $(".send-file-label", el).htmlFor = fileId;
    $(".send-file", el).id = fileId;
    $(".send-reply-cancel", el).addEventListener("click", () => {
      this.setReply(null);
      $(".send-text", el).focus();
    });
    this.sendForm.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.send();
    });

    const actions = $(".actions", el);
    actions.setAttribute("aria-label", `Actions for session ${id}`);
    this.buttons = {};
    for (const a of ACTIONS) {
      if (a.name === "delete" && id === "default") continue;
      const b = document.createElement("button");
      b.type = "button";
      b.className = `btn btn-small ${a.kind ? `btn-${a.kind}` : "btn-secondary"}`;
      b.textContent = a.label;
      b.dataset.action = a.name;
      b.setAttribute("aria-describedby", titleId);
      b.addEventListener("click", () => this.run(a.name, b));
      actions.append(b);
      this.buttons[a.name] = b;
    }
    this.renderRecent();
  }

  update(s) {
    if (this.destroyed) return;
    this.data = { ...(this.data || {}), ...s };
    const d = this.data;
    const state = d.state || "disconnected";
    const info = STATES[state] || { label: state, icon: "?" };
    const prev = this.state;
    this.state = state;

    this.el.dataset.state = state;
    this.badge.dataset.state = state;
    this.badgeIcon.textContent = info.icon;
    this.badgeText.textContent = info.label;
    this.badge.title = `State: ${state}`;

    const phone = formatPhone(d.phone_number);
    this.phone.textContent = phone || "Not linked";
    this.phone.classList.toggle("muted", !phone);
    this.attempts.textContent = String(d.reconnect_attempts ?? 0);
    this.attempts.classList.toggle("warn", (d.reconnect_attempts ?? 0) > 0);
    this.changed.dateTime = d.state_changed_at || "";
    this.changed.dataset.iso = d.state_changed_at || "";
    this.changed.textContent = relativeTime(d.state_changed_at);
    this.changed.title = d.state_changed_at ? absoluteTime(d.state_changed_at) : "";

    const showErr = state !== "connected" && !!d.last_error;
    this.lastError.hidden = !showErr;
    this.lastErrorText.textContent = showErr ? d.last_error : "";

    const busyConnecting = state === "connected" || state === "connecting" || state === "qr_ready";
    this.toggleButton("connect", !busyConnecting);
    this.toggleButton("disconnect", state !== "disconnected");
    this.buttons.qr.classList.toggle("btn-primary", state === "qr_ready");
    this.buttons.qr.classList.toggle("btn-secondary", state !== "qr_ready");

    this.sendForm.hidden = state !== "connected";

    if (state === "qr_ready") {
      if (this.visible && !this.qrActive) this.startQr();
    } else if (this.qrActive || !d.has_qr) {
      this.stopQr();
    }

    if (prev && prev !== state) {
      announce(`Session ${this.id} changed to ${info.label}.`, state === "connected" ? "success" : "info", false);
    }
  }

  toggleButton(name, enabled) {
    const b = this.buttons[name];
    if (b && !b.dataset.busy) b.disabled = !enabled;
  }

  tick() {
    if (this.data) this.changed.textContent = relativeTime(this.data.state_changed_at);
  }

  // ----- QR -----
  setVisible(visible) {
    if (this.destroyed || visible === this.visible) return;
    this.visible = visible;
    if (this.state !== "qr_ready") return;
    if (visible) this.startQr();
    else this.pauseQr(); // the last image stays; polling resumes when the card is back in view
  }
  pauseQr() {
    this.qrActive = false;
    this.pollQrEvery(false);
  }
  startQr() {
    if (this.destroyed) return;
    this.qrActive = true;
    this.pollQrEvery(!stream.up); // live, each session.qr event fetches the new image instead
    this.pollQr();
  }
  pollQrEvery(on) {
    clearInterval(this.qrTimer);
    this.qrTimer = on ? setInterval(() => this.pollQr(), QR_POLL_MS) : 0;
  }
  stopQr() {
    this.pauseQr();
    this.qrCode = null;
    this.qrBox.hidden = true;
    this.qrImg.removeAttribute("src");
    delete this.qrImg.dataset.code;
  }
  async pollQr(manual = false) {
    if (this.qrBusy) return;
    this.qrBusy = true;
    try {
      const data = await api(`qr?session_id=${q(this.id)}`);
      if (this.destroyed) return;
      this.showQr(data);
      if (manual) this.message("QR code loaded.", "success");
    } catch (err) {
      if (manual) {
        this.message(err.message, "error");
      } else if (err instanceof ApiError && err.status === 404) {
        // The QR is gone: the session probably changed state. Look again.
        scheduleRefresh(0);
      }
    } finally {
      this.qrBusy = false;
    }
  }
  showQr(data) {
    if (!data.qr) return;
    if (data.code !== this.qrCode || !this.qrImg.getAttribute("src")) {
      const rotated = this.qrCode !== null;
      this.qrCode = data.code ?? null;
      this.qrImg.src = data.qr;
      this.qrImg.dataset.code = data.code ?? "";
      if (rotated) announce(`New QR code for session ${this.id}.`, "info", false);
    }
    this.qrBox.hidden = false;
  }

  // ----- messages -----
  message(text, kind = "info", { announceIt = true } = {}) {
    clearTimeout(this.msgTimer);
    this.msg.textContent = text;
    this.msg.dataset.kind = kind;
    this.msg.hidden = false;
    if (announceIt) announce(`${this.id}: ${text}`, kind, false);
    if (kind !== "error") this.msgTimer = setTimeout(() => (this.msg.hidden = true), 10000);
  }

  async run(action, button) {
    if (action === "delete") {
      const ok = await confirmAction(
        `Delete session “${this.id}”? Its WhatsApp link and stored credentials are removed; you will have to scan a QR code again to use it.`,
      );
      if (!ok) {
        button.focus();
        return;
      }
    }
    button.dataset.busy = "1";
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    this.el.classList.add("busy");
    const body = { session_id: this.id };
    try {
      switch (action) {
        case "connect": {
          const r = await api("connect", { method: "POST", body });
          this.message(r.message || "Connecting…", "success");
          scheduleRefresh(0);
          break;
        }
        case "qr":
          await this.pollQr(true);
          break;
        case "status": {
          const r = await api(`status?session_id=${q(this.id)}`);
          this.update(r);
          const info = STATES[r.state] || { label: r.state };
          const parts = [`State: ${info.label}`];
          if (r.phone_number) parts.push(formatPhone(r.phone_number));
          parts.push(`${r.reconnect_attempts ?? 0} reconnect attempt(s)`);
          if (r.last_error && r.state !== "connected") parts.push(`reason: ${r.last_error}`);
          this.message(parts.join(" · "), "info");
          break;
        }
        case "disconnect": {
          const r = await api("disconnect", { method: "POST", body });
          this.message(r.message || "Disconnected.", "success");
          scheduleRefresh(0);
          break;
        }
        case "reset": {
          const r = await api("reset-reconnect", { method: "POST", body });
          this.message(r.message || "Reconnect counter reset.", "success");
          scheduleRefresh(0);
          break;
        }
        case "delete": {
          const r = await api(`sessions/${q(this.id)}`, { method: "DELETE" });
          // A device that could not be unlinked stays on the phone: say so, it needs the user.
          if (r.warning) announce(`${this.id}: deleted, but ${r.warning}`, "error");
          else announce(`${this.id}: ${r.message || "Session deleted."}`, "success");
          removeCard(this.id);
          $("#sessions-heading").focus();
          scheduleRefresh(0);
          return;
        }
      }
    } catch (err) {
      this.message(err.message, "error");
    } finally {
      delete button.dataset.busy;
      button.removeAttribute("aria-busy");
      button.disabled = false;
      this.el.classList.remove("busy");
      if (this.data) this.update({}); // re-apply state-dependent enabling
    }
  }

  setReply(ev) {
    if (!ev) {
      this.replyTo = null;
      this.replyBox.hidden = true;
      this.replyText.textContent = "";
      return;
    }
    const d = ev.data || {};
    this.replyTo = { id: d.message_id, chat: d.chat || d.chat_jid };
    this.replyText.textContent = `Replying to ${messageSender(d)}: ${messageText(d)}`;
    this.replyBox.hidden = false;
  }

  reply(ev) {
    if (this.sendForm.hidden) {
      this.message("Connect the session to reply.", "error");
      return;
    }
    this.setReply(ev);
    const chat = this.replyTo.chat;
    if (chat) $(".send-number", this.el).value = chat;
    $(".send-text", this.el).focus();
  }

  async send() {
    const numberEl = $(".send-number", this.el);
    const textEl = $(".send-text", this.el);
    const fileEl = $(".send-file", this.el);
    const btn = $(".send-btn", this.el);
    const number = numberEl.value.replace(/[\s()-]/g, "");
    const message = textEl.value;
    const file = fileEl.files && fileEl.files[0];
    const show = (text, kind) => {
      this.sendResult.textContent = text;
      this.sendResult.dataset.kind = kind;
      this.sendResult.hidden = false;
      announce(`${this.id}: ${text}`, kind, false);
    };
    if (!number) {
      show("Enter the recipient's number.", "error");
      numberEl.focus();
      return;
    }
    if (!file && !message.trim()) {
      show("Enter a message.", "error");
      textEl.focus();
      return;
    }
    const replyTo = this.replyTo && this.replyTo.id;
    // The same message sent again (after a timeout, say) keeps its key; any change makes a new one.
    const signature = JSON.stringify([number, message, replyTo, file ? [file.name, file.size, file.lastModified] : null]);
    if (!this.pendingSend || this.pendingSend.signature !== signature) {
      this.pendingSend = { signature, key: newIdempotencyKey() };
    }
    const headers = { "Idempotency-Key": this.pendingSend.key };
    const to = number.includes("@") ? { chat: number } : { number };
    btn.disabled = true;
    btn.setAttribute("aria-busy", "true");
    try {
      let r;
      if (file) {
        const form = new FormData();
        form.append("session_id", this.id);
        for (const [name, value] of Object.entries(to)) form.append(name, value);
        form.append("type", mediaType(file.type));
        if (message.trim()) form.append("caption", message);
        if (replyTo) form.append("reply_to", replyTo);
        form.append("file", file, file.name);
        r = await api("send-media", { method: "POST", form, headers, timeout: UPLOAD_TIMEOUT_MS });
      } else {
        const body = { session_id: this.id, ...to, message };
        if (replyTo) body.reply_to = replyTo;
        r = await api("send", { method: "POST", body, headers });
      }
      this.pendingSend = null;
      this.setReply(null);
      fileEl.value = "";
      const id = r.result && r.result.id;
      show(id ? `Sent ✓ — message id ${id}` : r.message || "Message sent.", "success");
    } catch (err) {
      const retryable = err instanceof NetworkError || RETRYABLE_STATUS.has(err.status);
      if (retryable) {
        // Keep the key: sending the same message again cannot send it twice.
        show(`${err.message} Press Send again to retry: it will not be sent twice.`, "error");
      } else {
        this.pendingSend = null;
        show(err.message, "error");
      }
    } finally {
      btn.disabled = false;
      btn.removeAttribute("aria-busy");
    }
  }

  // ----- recent messages -----
  renderRecent() {
    const list = recentMessages.get(this.id) || [];
    const items = list.map((ev) => messageItem(ev, () => this.reply(ev)));
    this.recentList.replaceChildren(...items);
    this.recentEmpty.hidden = list.length > 0;
  }

  destroy() {
    this.destroyed = true;
    qrObserver?.unobserve(this.el);
    this.stopQr();
    clearTimeout(this.msgTimer);
    this.el.remove();
  }
}

function removeCard(id) {
  const c = cards.get(id);
  if (!c) return;
  c.destroy();
  cards.delete(id);
  renderSummary();
}

function sortSessions(a, b) {
  if (a.session_id === "default") return -1;
  if (b.session_id === "default") return 1;
  return a.session_id.localeCompare(b.session_id, undefined, { numeric: true });
}

const emptyEl = $("#sessions-empty");
const loadingEl = $("#sessions-loading");
function setLoading(text) {
  loadingEl.textContent = text;
  loadingEl.hidden = !text;
}

function renderSessions(list) {
  const sorted = list.filter((s) => s && typeof s.session_id === "string").sort(sortSessions);
  const seen = new Set();
  sorted.forEach((s, i) => {
    let card = cards.get(s.session_id);
    if (!card) {
      card = new Card(s.session_id);
      cards.set(s.session_id, card);
    }
    card.update(s);
    const at = grid.children[i];
    if (at !== card.el) grid.insertBefore(card.el, at || null);
    seen.add(s.session_id);
  });
  for (const id of [...cards.keys()]) if (!seen.has(id)) removeCard(id);
  setLoading("");
  renderSummary();
}

function renderSummary() {
  const all = [...cards.values()];
  emptyEl.hidden = all.length > 0 || !loadingEl.hidden;
  const connected = all.filter((c) => c.state === "connected").length;
  $("#session-count").textContent = all.length
    ? `${all.length} session${all.length === 1 ? "" : "s"} · ${connected} connected`
    : "";
}

// ---------------------------------------------------------- auto-refresh --

let refreshTimer = 0;
let refreshing = false;
let refreshAgain = false;

function scheduleRefresh(ms) {
  clearTimeout(refreshTimer);
  if (ms === undefined) {
    if (stream.up) return; // the stream reports every change: polling is only the fallback
    const transient = [...cards.values()].some((c) => c.state === "connecting");
    ms = !online ? OFFLINE_RETRY_MS : transient ? FAST_REFRESH_MS : REFRESH_MS;
  }
  refreshTimer = setTimeout(refresh, ms);
}

async function refresh() {
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  clearTimeout(refreshTimer);
  try {
    const data = await api("sessions");
    renderSessions(Array.isArray(data.sessions) ? data.sessions : []);
    lastUpdated = new Date();
    renderLastUpdated();
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) {
      if (!cards.size) setLoading(`Could not load sessions: ${err.message}`);
      else announce(`Could not refresh sessions: ${err.message}`, "error");
    } else if (err instanceof NetworkError && !cards.size) {
      setLoading("Waiting for the server…");
    }
  } finally {
    refreshing = false;
    if (refreshAgain) {
      refreshAgain = false;
      scheduleRefresh(0);
    } else {
      scheduleRefresh();
    }
  }
}

$("#refresh-btn").addEventListener("click", () => {
  scheduleRefresh(0);
  announce("Refreshing…", "info", false);
});

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") scheduleRefresh(0);
});

// Keep the relative times fresh between refreshes.
setInterval(() => {
  for (const c of cards.values()) c.tick();
  renderLastUpdated();
}, 5000);

// --------------------------------------------------------- create session --

const createForm = $("#create-form");
const createInput = $("#create-id");
const createError = $("#create-error");
const createBtn = $("#create-btn");

function validateId(id) {
  if (!id) return "Enter a session ID.";
  if (id.length > 64) return `A session ID can have at most 64 characters (this one has ${id.length}).`;
  if (!ID_RE.test(id)) {
    const bad = [...new Set(id.replace(/[A-Za-z0-9_-]/g, ""))]
      .map((ch) => (ch === " " ? "space" : `“${ch}”`))
      .join(", ");
    return `Only letters, digits, “_” and “-” are allowed (not ${bad}).`;
  }
  return "";
}
function showCreateError(text) {
  createError.textContent = text;
  createError.hidden = !text;
  createInput.setAttribute("aria-invalid", text ? "true" : "false");
}

createInput.addEventListener("input", () => {
  const v = createInput.value;
  // Only complain live about real mistakes, not an empty field.
  showCreateError(v ? validateId(v) : "");
});

createForm.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = createInput.value.trim();
  const problem = validateId(id);
  if (problem) {
    showCreateError(problem);
    createInput.focus();
    return;
  }
  showCreateError("");
  createBtn.disabled = true;
  createBtn.setAttribute("aria-busy", "true");
  try {
    const existed = cards.has(id);
    const r = await api("connect", { method: "POST", body: { session_id: id } });
    createInput.value = "";
    announce(
      existed ? `Session ${id} already existed — ${r.message || "connecting"}.` : `Session ${id} created — ${r.message || "connecting"}.`,
      "success",
    );
    await refresh();
    const card = cards.get(id);
    if (card) {
      card.el.classList.add("flash");
      setTimeout(() => card.el.classList.remove("flash"), 1600);
      card.el.scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
  } catch (err) {
    showCreateError(err instanceof NetworkError ? "The server is unreachable. Try again when it is back." : err.message);
    createInput.focus();
  } finally {
    createBtn.disabled = false;
    createBtn.removeAttribute("aria-busy");
  }
});

// ------------------------------------------------------------ live stream --
// GET /events read with fetch(), so that the API key travels in a header (EventSource cannot send
// one, and a key in the URL ends up in logs). Blocks are parsed by hand: the server writes "\n".

const stream = {
  up: false, // live: the replay is over and events arrive as they happen
  lastId: null, // the last event id seen: a reconnect resumes after it (Last-Event-ID)
  ctrl: null,
  attempt: 0,
  timer: 0,
};
const recentMessages = new Map(); // session id -> its last RECENT_MAX message.received, newest first
const liveStatus = $("#live-status");

function setStreamUp(up) {
  if (stream.up === up) return;
  stream.up = up;
  liveStatus.dataset.live = up ? "on" : "off";
  liveStatus.textContent = up ? "Live" : "Polling";
  liveStatus.title = up
    ? "Changes appear as they happen (event stream connected)."
    : "The event stream is down: the page polls for changes and reconnects.";
  for (const c of cards.values()) if (c.qrActive) c.pollQrEvery(!up);
  // Going live: one refresh catches what changed meanwhile (a session deleted elsewhere, say);
  // going down: polling takes over at once.
  scheduleRefresh(up ? 0 : undefined);
}

function restartStream() {
  stream.ctrl?.abort();
  clearTimeout(stream.timer);
  stream.attempt = 0;
  stream.timer = setTimeout(runStream, 0);
}

async function runStream() {
  const ctrl = new AbortController();
  stream.ctrl = ctrl;
  let outcome = "ended";
  try {
    if (stream.lastId === null) {
      // The first time, learn where the log ends, then read back a bounded window of it.
      const head = await streamOnce(ctrl, "events?types=session.qr", { headOnly: true });
      if (typeof head === "number") stream.lastId = Math.max(0, head - RECENT_WINDOW);
      else outcome = head;
    }
    if (stream.lastId !== null) outcome = await streamOnce(ctrl, `events?types=${STREAM_TYPES}`);
  } catch (err) {
    outcome = err && err.name === "AbortError" ? "aborted" : "failed";
  }
  if (stream.ctrl !== ctrl || outcome === "aborted" || outcome === "unauthorized") {
    if (stream.ctrl === ctrl) setStreamUp(false);
    return;
  }
  setStreamUp(false);
  const delay = STREAM_BACKOFF_MS[Math.min(stream.attempt, STREAM_BACKOFF_MS.length - 1)];
  stream.attempt += 1;
  stream.timer = setTimeout(runStream, delay * (0.8 + Math.random() * 0.4));
}

// Reads one stream until it ends. With headOnly, returns the opening block's id (the log's head).
async function streamOnce(ctrl, path, { headOnly = false } = {}) {
  const headers = { Accept: "text/event-stream" };
  const key = getKey();
  if (key) headers["X-API-Key"] = key;
  if (!headOnly && stream.lastId !== null) headers["Last-Event-ID"] = String(stream.lastId);
  const res = await fetch(path, { headers, cache: "no-store", credentials: "same-origin", signal: ctrl.signal });
  if (res.status === 401) {
    await res.body?.cancel();
    return "unauthorized"; // the polling shows the key panel
  }
  if (!res.ok || !res.body) {
    await res.body?.cancel();
    return "failed";
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = parseBlock(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
        if (headOnly && block.id !== null) return block.id;
        if (!headOnly) handleBlock(block);
      }
    }
  } finally {
    reader.cancel().catch(() => {});
  }
}

function parseBlock(text) {
  const block = { id: null, event: null, data: null, comments: [] };
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (name === "") block.comments.push(value);
    else if (name === "id" && /^\d+$/.test(value)) block.id = Number(value);
    else if (name === "event") block.event = value;
    else if (name === "data") block.data = block.data === null ? value : `${block.data}\n${value}`;
  }
  return block;
}

function handleBlock(block) {
  if (block.id !== null) stream.lastId = block.id;
  if (block.comments.includes("live")) {
    stream.attempt = 0;
    setStreamUp(true);
  }
  if (block.event === null || block.data === null) return;
  let envelope;
  try {
    envelope = JSON.parse(block.data);
  } catch {
    return;
  }
  if (block.event === "overflow") return; // the stream ends next; the reconnect resumes
  applyEvent(envelope);
}

function applyEvent(ev) {
  const card = cards.get(ev.session_id);
  const d = ev.data || {};
  switch (ev.type) {
    case "session.status":
      if (!stream.up) return; // replayed history: the state comes from GET /sessions
      if (!card) {
        scheduleRefresh(0); // a session created elsewhere
        return;
      }
      card.update({
        state: d.state,
        phone_number: d.phone,
        reconnect_attempts: d.reconnect_attempts,
        last_error: d.reason,
        state_changed_at: ev.timestamp,
        has_qr: d.state === "qr_ready",
      });
      renderSummary();
      if (d.state === "disconnected") scheduleRefresh(0); // perhaps deleted: look once
      break;
    case "session.qr":
      if (stream.up && card && card.visible) card.pollQr(); // the image of the new code, now
      break;
    case "message.received":
      addRecentMessage(ev);
      break;
  }
}

function addRecentMessage(ev) {
  const list = recentMessages.get(ev.session_id) || [];
  if (list.some((m) => m.id === ev.id)) return;
  list.unshift(ev);
  list.sort((a, b) => b.id - a.id);
  list.length = Math.min(list.length, RECENT_MAX);
  recentMessages.set(ev.session_id, list);
  cards.get(ev.session_id)?.renderRecent();
}

const KIND_LABELS = {
  text: "Text",
  image: "Image",
  video: "Video",
  audio: "Audio",
  voice: "Voice message",
  document: "Document",
  sticker: "Sticker",
  location: "Location",
  contact: "Contact",
  unknown: "Message",
};

function messageSender(d) {
  if (d.from_me) return "You";
  const phone = formatPhone(d.from);
  if (d.push_name && phone) return `${d.push_name} (${phone})`;
  return d.push_name || phone || d.from_jid || "Unknown sender";
}

function messageText(d) {
  if (d.text) return d.text;
  const label = KIND_LABELS[d.kind] || KIND_LABELS.unknown;
  if (d.kind === "document" && d.media && d.media.file_name) return `[${label}: ${d.media.file_name}]`;
  if (d.kind === "location" && d.location) return `[${label}: ${d.location.name || `${d.location.lat}, ${d.location.lng}`}]`;
  if (d.kind === "contact" && d.contact && d.contact.name) return `[${label}: ${d.contact.name}]`;
  return `[${label}]`;
}

function messageItem(ev, onReply) {
  const d = ev.data || {};
  const li = document.createElement("li");
  li.className = "recent-item";
  li.dataset.eventId = String(ev.id);
  const head = document.createElement("div");
  head.className = "recent-head";
  const from = document.createElement("span");
  from.className = "recent-from";
  from.textContent = d.is_group && d.chat ? `${messageSender(d)} in ${d.chat}` : messageSender(d);
  const when = document.createElement("time");
  when.className = "recent-time";
  when.dateTime = ev.timestamp || "";
  when.textContent = ev.timestamp ? new Date(ev.timestamp).toLocaleTimeString() : "";
  when.title = ev.timestamp ? absoluteTime(ev.timestamp) : "";
  head.append(from, when);
  const text = document.createElement("p");
  text.className = "recent-text";
  text.textContent = messageText(d);
  li.append(head, text);
  if (d.message_id) {
    const reply = document.createElement("button");
    reply.type = "button";
    reply.className = "btn btn-ghost btn-small recent-reply";
    reply.textContent = "Reply";
    reply.setAttribute("aria-label", `Reply to ${messageSender(d)}: ${messageText(d)}`.slice(0, 200));
    reply.addEventListener("click", onReply);
    li.append(reply);
  }
  return li;
}

// ------------------------------------------------------------------ start --

refresh();
runStream();
