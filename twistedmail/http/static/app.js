// twistedmail web mail.  No framework, no external resources.
//
// Safety rules of this file: message data is only ever put into the page with
// textContent or as attribute values, never innerHTML; HTML mail is shown
// only in the sandboxed iframe, whose page the server sanitises and serves
// with its own Content-Security-Policy.  Every change request carries the
// X-Requested-With header the server's CSRF check asks for.
"use strict";

const PAGE = 50;

const state = {
  user: null,
  addresses: [],
  mailboxes: [],
  current: "INBOX",
  offset: 0,
  total: 0,
  search: "",
  messages: [],
  selected: null, // the open message (full JSON)
  events: null,
};

const $ = (id) => document.getElementById(id);

// --- Talking to the API -----------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function api(method, path, body) {
  const options = { method, headers: { "X-Requested-With": "twistedmail" }, credentials: "same-origin" };
  if (body instanceof FormData) {
    options.body = body;
  } else if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch (e) {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 && path !== "/api/session") showLogin();
    throw new ApiError(response.status, error.code, error.message || response.statusText, error.field);
  }
  return data;
}

const enc = encodeURIComponent;
const boxUrl = (name) => `/api/mailboxes/${enc(name)}`;

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3000);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

// A paperclip drawn in the page itself: an emoji may have no glyph in the
// user's fonts, and the page's CSP loads no image from elsewhere.
function clipIcon() {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "clip");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Has attachments");
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", "M21 11.5l-8.5 8.5a5 5 0 0 1-7-7L14 4.5a3.3 3.3 0 0 1 4.7 4.7L10.2 17.7a1.7 1.7 0 0 1-2.4-2.4L15.5 7.6");
  svg.append(path);
  return svg;
}

// Folders and message rows are list items: make them reachable and usable
// from the keyboard (Tab, then Enter or Space) as well as by a click.
function activate(node, handler) {
  node.tabIndex = 0;
  node.addEventListener("click", handler);
  node.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      handler();
    }
  });
}

function formatAddress(a) {
  if (!a) return "";
  return a.name ? `${a.name} <${a.address}>` : a.address;
}

function shortDate(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) {
    return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }
  return d.toLocaleDateString([], { day: "numeric", month: "short", year: d.getFullYear() === now.getFullYear() ? undefined : "numeric" });
}

// --- Login ------------------------------------------------------------------

function showLogin() {
  if (state.events) {
    state.events.close();
    state.events = null;
  }
  // Nothing of the last user's mail stays in the page, even hidden.
  closeReader();
  $("reader-subject").textContent = "";
  $("reader-body").textContent = "";
  $("reader-attachments").replaceChildren();
  $("whoami").textContent = "";
  $("messages").replaceChildren();
  $("mailboxes").replaceChildren();
  if ($("compose-dialog").open) $("compose-dialog").close();
  $("compose-form").reset();
  state.messages = [];
  $("app-view").hidden = true;
  if ($("login-view").hidden) {
    $("login-view").hidden = false;
    $("login-address").focus();
  }
}

async function onLogin(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    await api("POST", "/api/session", {
      address: $("login-address").value,
      password: $("login-password").value,
    });
    $("login-password").value = "";
    await showApp();
  } catch (e) {
    $("login-error").textContent = e.message;
  }
}

async function onLogout() {
  try {
    await api("DELETE", "/api/session");
  } finally {
    showLogin();
  }
}

async function showApp() {
  const me = await api("GET", "/api/session");
  if (me.user !== state.user) {
    // Someone else logged in: start from their INBOX, not the last user's folder.
    state.current = "INBOX";
    state.offset = 0;
    state.search = "";
    $("search-input").value = "";
  }
  state.user = me.user;
  state.addresses = me.addresses;
  $("whoami").textContent = me.user;
  $("login-view").hidden = true;
  $("app-view").hidden = false;
  await Promise.all([loadMailboxes(), loadMessages()]);
  listen();
}

// --- Folders -------------------------------------------------------------------

async function loadMailboxes() {
  const data = await api("GET", "/api/mailboxes");
  state.mailboxes = data.mailboxes;
  renderMailboxes();
}

function renderMailboxes() {
  const list = $("mailboxes");
  list.replaceChildren();
  const move = $("move-select");
  move.replaceChildren(el("option", null, "Move to…"));
  move.firstChild.value = "";
  for (const box of state.mailboxes) {
    const depth = box.name.split("/").length - 1;
    const item = el("li", depth ? "child" : "");
    item.dataset.name = box.name;
    const label = el("span", "name", box.name.split("/").pop());
    item.title = box.name;
    item.append(label);
    if (box.unseen) item.append(el("span", "count", String(box.unseen)));
    if (box.name === state.current) item.classList.add("current");
    if (box.selectable) {
      activate(item, () => selectMailbox(box.name));
      if (box.name === state.current) item.setAttribute("aria-current", "true");
    } else {
      item.classList.add("muted");
    }
    list.append(item);
    if (box.selectable && box.name !== state.current) {
      const option = el("option", null, box.name);
      option.value = box.name;
      move.append(option);
    }
  }
}

async function selectMailbox(name) {
  state.current = name;
  state.offset = 0;
  state.search = "";
  $("search-input").value = "";
  closeReader();
  renderMailboxes();
  await loadMessages();
}

async function onNewFolder() {
  const name = prompt("Name of the new folder (use / for subfolders):");
  if (!name) return;
  try {
    await api("POST", "/api/mailboxes", { name });
    await loadMailboxes();
    toast(`Created ${name}`);
  } catch (e) {
    toast(e.message);
  }
}

async function onRenameFolder() {
  const name = prompt("New name of the folder:", state.current);
  if (!name || name === state.current) return;
  try {
    await api("PATCH", boxUrl(state.current), { name });
    state.current = name;
    await loadMailboxes();
    await loadMessages();
  } catch (e) {
    toast(e.message);
  }
}

async function onDeleteFolder() {
  if (!confirm(`Delete the folder ${state.current} and every message in it?`)) return;
  try {
    await api("DELETE", boxUrl(state.current));
    toast(`Deleted ${state.current}`);
    await loadMailboxes();
    await selectMailbox("INBOX");
  } catch (e) {
    toast(e.message);
  }
}

// --- Message list ----------------------------------------------------------------

async function loadMessages() {
  const params = new URLSearchParams({ limit: PAGE, offset: state.offset });
  if (state.search) params.set("text", state.search);
  const data = await api("GET", `${boxUrl(state.current)}/messages?${params}`);
  state.messages = data.messages;
  state.total = data.total;
  renderMessages();
}

function renderMessages() {
  $("list-title").textContent = state.current;
  const box = state.mailboxes.find((b) => b.name === state.current);
  const own = Boolean(box) && state.current !== "INBOX" && !box.special_use;
  $("rename-folder-button").hidden = !own;
  $("delete-folder-button").hidden = !own;
  const end = Math.min(state.offset + state.messages.length, state.total);
  const range = state.total ? `${state.offset + 1}–${end} of ${state.total}` : "";
  $("list-count").textContent = state.search ? `${range || "none"} matching “${state.search}”` : range;
  const list = $("messages");
  list.replaceChildren();
  if (!state.messages.length) {
    list.append(el("li", "empty muted", state.search ? "Nothing matches." : "No messages."));
  }
  for (const m of state.messages) {
    const row = el("li", "message-row");
    row.dataset.uid = m.uid;
    if (!m.seen) row.classList.add("unread");
    if (state.selected && state.selected.uid === m.uid) row.classList.add("selected");
    const who = state.current === "Sent" || isSpecial("sent") ? (m.to[0] ? "To: " + formatAddress(m.to[0]) : "") : (m.from ? (m.from.name || m.from.address) : "");
    const marks = m.flagged ? "★ " : "";
    const from = el("span", "from", who || "(unknown)");
    const date = el("span", "date", shortDate(m.date || m.internal_date));
    const subject = el("span", "subject");
    if (marks) subject.append(el("span", "marks", marks));
    if (m.has_attachments) subject.append(clipIcon());
    subject.append(document.createTextNode(m.subject || "(no subject)"));
    row.append(from, date, subject, el("span", "preview", m.preview));
    activate(row, () => openMessage(m.uid));
    list.append(row);
  }
  $("pager").hidden = state.offset === 0 && state.total <= PAGE;
  $("newer-button").disabled = state.offset === 0;
  $("older-button").disabled = state.offset + PAGE >= state.total;
}

function isSpecial(use) {
  const box = state.mailboxes.find((b) => b.name === state.current);
  return box && box.special_use === use;
}

// --- Reading -----------------------------------------------------------------------

function closeReader() {
  state.selected = null;
  $("app-view").classList.remove("reading");
  $("reader-content").hidden = true;
  $("reader-empty").hidden = false;
  $("reader-frame").removeAttribute("src");
}

async function openMessage(uid, images) {
  const url = `${boxUrl(state.current)}/messages/${uid}`;
  const m = await api("GET", url + (images ? "?images=true" : ""));
  state.selected = m;
  $("app-view").classList.add("reading");
  $("reader-empty").hidden = true;
  $("reader-content").hidden = false;
  $("reader-subject").textContent = m.subject || "(no subject)";
  $("reader-from").textContent = formatAddress(m.from);
  $("reader-to").textContent = m.to.map(formatAddress).join(", ");
  $("reader-cc").textContent = m.cc.map(formatAddress).join(", ");
  $("reader-cc").hidden = $("reader-cc-label").hidden = !m.cc.length;
  $("reader-date").textContent = new Date(m.date || m.internal_date).toLocaleString();
  $("flag-button").textContent = m.flagged ? "Unflag" : "Flag";
  $("raw-link").href = m.raw_url;
  const attachments = $("reader-attachments");
  attachments.replaceChildren();
  for (const a of m.attachments) {
    const link = el("a", null, `${a.filename || "attachment"} (${sizeText(a.size)})`);
    link.href = a.url;
    link.setAttribute("download", a.filename || "attachment");
    const item = el("li");
    item.append(link);
    attachments.append(item);
  }
  const frame = $("reader-frame");
  if (m.html_url) {
    frame.hidden = false;
    frame.src = m.html_url + (images ? "?images=true" : "");
    $("reader-body").hidden = true;
    $("reader-body").textContent = "";
    $("images-note").hidden = !m.remote_images_blocked || images;
  } else {
    frame.hidden = true;
    frame.removeAttribute("src");
    $("reader-body").hidden = false;
    $("reader-body").textContent = m.text || "";
    $("images-note").hidden = true;
  }
  for (const row of document.querySelectorAll(".message-row")) {
    row.classList.toggle("selected", Number(row.dataset.uid) === uid);
  }
  if (!m.seen) {
    await api("PATCH", url, { seen: true });
    // Show it read at once; the event stream brings the server's view shortly.
    m.seen = true;
    const listed = state.messages.find((x) => x.uid === uid);
    if (listed) listed.seen = true;
    const box = state.mailboxes.find((b) => b.name === state.current);
    if (box && box.unseen) box.unseen -= 1;
    renderMailboxes();
    renderMessages();
  }
}

function sizeText(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

async function changeSelected(body, message) {
  const m = state.selected;
  if (!m) return;
  try {
    await api("PATCH", `${boxUrl(state.current)}/messages/${m.uid}`, body);
    if (message) toast(message);
    // Reopening an unread message would mark it read again at once.
    if (body.mailbox || body.seen === false) closeReader();
    else await openMessage(m.uid);
  } catch (e) {
    toast(e.message);
  }
  await Promise.all([loadMessages(), loadMailboxes()]);
}

async function onDelete() {
  const m = state.selected;
  if (!m) return;
  try {
    const result = await api("DELETE", `${boxUrl(state.current)}/messages/${m.uid}`);
    toast(result.deleted === "trash" ? "Moved to Trash" : "Deleted");
    closeReader();
  } catch (e) {
    toast(e.message);
  }
  await Promise.all([loadMessages(), loadMailboxes()]);
}

// --- Composing ------------------------------------------------------------------------

// The message as plain text, for quoting.  HTML-only mail is turned into
// text from the server's sanitised HTML in an inert document (DOMParser runs
// no script and loads nothing), which is read, never shown.
function plainText(m) {
  if (m.text !== null && m.text !== undefined) return m.text;
  if (!m.html) return "";
  const doc = new DOMParser().parseFromString(m.html, "text/html");
  for (const node of doc.querySelectorAll("style, title")) node.remove();
  for (const node of doc.querySelectorAll("br")) node.replaceWith("\n");
  for (const node of doc.querySelectorAll("p, div, tr, li, h1, h2, h3, h4, h5, h6, blockquote")) {
    node.append("\n");
  }
  return doc.body.textContent.replace(/[ \t]+\n/g, "\n").replace(/\n{3,}/g, "\n\n").trim();
}

function quote(m) {
  const body = plainText(m).split("\n").map((line) => "> " + line).join("\n");
  return `\n\nOn ${new Date(m.date || m.internal_date).toLocaleString()}, ${formatAddress(m.from)} wrote:\n${body}`;
}

function prefixed(prefix, subject) {
  return subject.toLowerCase().startsWith(prefix.toLowerCase()) ? subject : `${prefix} ${subject}`;
}

function compose(mode) {
  const m = state.selected;
  const from = $("compose-from");
  from.replaceChildren();
  for (const address of state.addresses) {
    const option = el("option", null, address);
    option.value = address;
    from.append(option);
  }
  from.value = state.user;
  $("compose-form").reset();
  from.value = state.user;
  $("compose-error").textContent = "";
  $("compose-in-reply-to").value = "";
  $("compose-references").value = "";
  $("compose-title").textContent = "New message";
  if (m && mode !== "new") {
    if (mode === "forward") {
      $("compose-title").textContent = "Forward";
      $("compose-subject").value = prefixed("Fwd:", m.subject || "");
      $("compose-text").value = `\n\n---------- Forwarded message ----------\nFrom: ${formatAddress(m.from)}\nDate: ${new Date(m.date || m.internal_date).toLocaleString()}\nSubject: ${m.subject}\nTo: ${m.to.map(formatAddress).join(", ")}\n\n${plainText(m)}`;
    } else {
      $("compose-title").textContent = "Reply";
      const replyTo = m.reply_to.length ? m.reply_to : [m.from].filter(Boolean);
      $("compose-to").value = replyTo.map(formatAddress).join(", ");
      if (mode === "all") {
        const mine = new Set(state.addresses.map((a) => a.toLowerCase()));
        const others = [...m.to, ...m.cc].filter((a) => !mine.has(a.address.toLowerCase()));
        $("compose-cc").value = others.map(formatAddress).join(", ");
      }
      $("compose-subject").value = prefixed("Re:", m.subject || "");
      $("compose-text").value = quote(m);
      if (m.message_id) {
        $("compose-in-reply-to").value = m.message_id;
        $("compose-references").value = ((m.references || "") + " " + m.message_id).trim();
      }
      for (const address of state.addresses) {
        if ([...m.to, ...m.cc].some((a) => a.address.toLowerCase() === address.toLowerCase())) {
          from.value = address;
        }
      }
    }
  }
  // A forward carries the original's attachments, fetched when sending.
  compose.forwarded = m && mode === "forward" ? m.attachments : [];
  const names = compose.forwarded.map((a) => a.filename || "attachment");
  $("compose-forwarded").textContent = names.length ? `Attached from the original: ${names.join(", ")}` : "";
  compose.mode = mode;
  compose.original = m;
  compose.initial = composeFields();
  $("compose-dialog").showModal();
  (mode === "new" || mode === "forward" ? $("compose-to") : $("compose-text")).focus();
}

function composeFields() {
  const ids = ["compose-to", "compose-cc", "compose-bcc", "compose-subject", "compose-text"];
  return JSON.stringify([...ids.map((id) => $(id).value), $("compose-files").files.length]);
}

// Discard (the button or Escape) asks first when something was written.
function onDiscard(event) {
  if (composeFields() !== compose.initial && !confirm("Discard this message?")) {
    event.preventDefault();
    return;
  }
  $("compose-dialog").close();
}

async function onSend(event) {
  event.preventDefault();
  const form = new FormData();
  form.append("from", $("compose-from").value);
  for (const field of ["to", "cc", "bcc"]) {
    for (const address of $(`compose-${field}`).value.split(",")) {
      if (address.trim()) form.append(field, address.trim());
    }
  }
  form.append("subject", $("compose-subject").value);
  form.append("text", $("compose-text").value);
  for (const field of ["in_reply_to", "references"]) {
    const value = $(`compose-${field.replace(/_/g, "-")}`).value;
    if (value) form.append(field, value);
  }
  for (const file of $("compose-files").files) form.append("attachments", file, file.name);
  $("compose-send").disabled = true;
  try {
    for (const a of compose.forwarded) {
      const response = await fetch(a.url, { credentials: "same-origin" });
      if (!response.ok) throw new ApiError(response.status, "forward", `Cannot attach ${a.filename || "an attachment"} of the original.`);
      const blob = await response.blob();
      form.append("attachments", new File([blob], a.filename || "attachment", { type: a.content_type }));
    }
    await api("POST", "/api/messages", form);
    $("compose-dialog").close();
    toast("Message sent");
    const original = compose.original;
    if (original && (compose.mode === "reply" || compose.mode === "all")) {
      await api("PATCH", `${boxUrl(original.mailbox)}/messages/${original.uid}`, { answered: true }).catch(() => {});
    }
    await loadMailboxes();
  } catch (e) {
    $("compose-error").textContent = e.field ? `${e.field}: ${e.message}` : e.message;
  } finally {
    $("compose-send").disabled = false;
  }
}

// --- Live updates ------------------------------------------------------------------------

function listen() {
  if (state.events) state.events.close();
  const source = new EventSource("/api/events");
  state.events = source;
  // Events come in bursts (a send adds to INBOX and Sent): gather the
  // mailboxes touched, then refresh once.
  let pending = null;
  let touched = new Set();
  const refresh = (mailbox) => {
    touched.add(mailbox);
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const names = touched;
      touched = new Set();
      await loadMailboxes();
      if (names.has(null) || names.has(state.current)) await loadMessages();
    }, 150);
  };
  for (const name of ["message_added", "flags_changed", "messages_expunged"]) {
    source.addEventListener(name, (event) => refresh(JSON.parse(event.data).mailbox));
  }
  for (const name of ["mailbox_created", "mailbox_deleted", "mailbox_renamed"]) {
    source.addEventListener(name, () => refresh(null));
  }
  // The browser retries a dropped stream by itself, but gives up on an
  // error answer (a 401 once the session ended, say): then find out why, so
  // the page asks for a login rather than going quietly stale.
  source.addEventListener("error", () => {
    if (source.readyState !== EventSource.CLOSED || state.events !== source) return;
    state.events = null;
    const later = () => setTimeout(() => { if (!state.events && !$("app-view").hidden) listen(); }, 5000);
    api("GET", "/api/session").then(later, (e) => (e.status === 401 ? showLogin() : later()));
  });
  source.addEventListener("message_added", (event) => {
    const data = JSON.parse(event.data);
    if (data.mailbox === "INBOX") toast("New mail");
  });
}

// --- Wiring --------------------------------------------------------------------------------

function wire() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout-button").addEventListener("click", onLogout);
  $("compose-button").addEventListener("click", () => compose("new"));
  $("new-folder-button").addEventListener("click", onNewFolder);
  $("rename-folder-button").addEventListener("click", onRenameFolder);
  $("delete-folder-button").addEventListener("click", onDeleteFolder);
  $("back-button").addEventListener("click", () => {
    closeReader();
    renderMessages();
  });
  $("reply-button").addEventListener("click", () => compose("reply"));
  $("reply-all-button").addEventListener("click", () => compose("all"));
  $("forward-button").addEventListener("click", () => compose("forward"));
  $("flag-button").addEventListener("click", () => changeSelected({ flagged: !state.selected.flagged }));
  $("unread-button").addEventListener("click", () => changeSelected({ seen: false }, "Marked unread"));
  $("delete-button").addEventListener("click", onDelete);
  $("move-select").addEventListener("change", (event) => {
    const target = event.target.value;
    event.target.value = "";
    if (target) changeSelected({ mailbox: target }, `Moved to ${target}`);
  });
  $("images-button").addEventListener("click", () => openMessage(state.selected.uid, true));
  $("compose-form").addEventListener("submit", onSend);
  $("compose-cancel").addEventListener("click", onDiscard);
  $("compose-dialog").addEventListener("cancel", onDiscard);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.search = $("search-input").value.trim();
    state.offset = 0;
    loadMessages();
  });
  // The search box's clear button (or deleting the text) ends the search.
  $("search-input").addEventListener("input", () => {
    if (!$("search-input").value.trim() && state.search) {
      state.search = "";
      state.offset = 0;
      loadMessages();
    }
  });
  $("newer-button").addEventListener("click", () => {
    state.offset = Math.max(0, state.offset - PAGE);
    loadMessages();
  });
  $("older-button").addEventListener("click", () => {
    state.offset += PAGE;
    loadMessages();
  });
}

async function start() {
  wire();
  try {
    await showApp();
  } catch (e) {
    showLogin();
  }
}

start();
