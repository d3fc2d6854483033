// The chat page: a list of the owner's conversations (server-side, /conversations) and the one
// shown, whose replies stream from POST chat_stream as server-sent events over fetch. A reply
// outlives its connection: after a reload or a dropped network the page attaches to it again
// (GET chat_stream/{id} with Last-Event-ID), and Stop asks the server (POST stop_generation),
// so it works from any tab. Model text becomes markup only through chatMarkdown (markdown.js:
// markdown-it without raw HTML, then DOMPurify's allow-list); everything else goes in as text.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const app = $("app");
  const conversation = $("conversation");
  const messages = $("messages");
  const empty = $("empty");
  const input = $("input");
  const send = $("send");
  const stop = $("stop");
  const newChat = $("new-chat");
  const menu = $("menu");
  const backdrop = $("backdrop");
  const themeButton = $("theme");
  const list = $("conversation-list");
  const noConversations = $("no-conversations");
  const queueStatus = $("queue-status");
  const notice = $("notice");
  const errorBox = $("error");
  const errorText = $("error-text");
  const messageTemplate = $("message-template");
  const itemTemplate = $("conversation-template");

  const STATUS_TEXT = {
    cancelled: "Stopped",
    length: "Cut off at the length limit",
    error: "Incomplete: the reply could not be finished",
  };
  const FINISH_CLASSES = { cancelled: "stopped", length: "truncated", error: "failed" };
  const RENDER_INTERVAL_MS = 80; // a streaming reply is rendered at most this often
  const RECONNECT_DELAYS_MS = [250, 500, 1000, 2000, 4000, 8000, 8000];
  const STOP_TIMEOUT_MS = 5000; // then the page stops listening, whatever the server does
  const THEME_KEY = "chatstream-theme";

  const texts = new WeakMap(); // message node -> its text (markdown source for replies)
  let conversationId = null; // the conversation shown; null before its first message
  let conversations = [];
  let historyLoaded = false;
  let running = null; // the reply being followed: {reply, controller, stopTimer}

  // -- server-sent events ----------------------------------------------------------------------

  // Incremental parser of a text/event-stream body: chunks may split lines, events and CRLF
  // pairs anywhere; comment lines (keep-alives) are skipped. Each event comes with its own id
  // (null when it has none, as queue positions).
  class EventStreamParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.skipLineFeed = false;
      this.reset();
    }

    reset() {
      this.eventName = "";
      this.data = [];
      this.id = null;
    }

    push(chunk) {
      let text = chunk;
      if (this.skipLineFeed && text.startsWith("\n")) text = text.slice(1);
      this.skipLineFeed = text.endsWith("\r");
      this.buffer += text.replace(/\r\n?/g, "\n");
      const lines = this.buffer.split("\n");
      this.buffer = lines.pop();
      for (const line of lines) this.line(line);
    }

    line(line) {
      if (line === "") {
        this.dispatch();
        return;
      }
      if (line.startsWith(":")) return;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.eventName = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && /^\d+$/.test(value)) this.id = Number(value);
    }

    dispatch() {
      if (this.data.length > 0) {
        let payload = null;
        try {
          payload = JSON.parse(this.data.join("\n"));
        } catch {
          payload = null;
        }
        if (payload !== null) this.onEvent(this.eventName || "message", payload, this.id);
      }
      this.reset();
    }
  }

  // -- talking to the server -------------------------------------------------------------------

  class RequestFailed extends Error {
    constructor(message, status = 0, code = "", messageId = null) {
      super(message);
      this.status = status;
      this.code = code;
      this.messageId = messageId;
    }
  }

  function retryText(seconds) {
    const at = new Date(Date.now() + seconds * 1000).toLocaleTimeString();
    return `Try again in ${seconds} s (at ${at}).`;
  }

  async function failure(response) {
    let message = `The server answered ${response.status} ${response.statusText}`.trim();
    let code = "";
    let messageId = null;
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error.message === "string") {
        message = body.error.message;
        code = String(body.error.code || "");
        if (typeof body.error.message_id === "string") messageId = body.error.message_id;
      } else if (body && typeof body.detail === "string") {
        message = body.detail;
      }
    } catch {
      // not JSON: keep the status line
    }
    const retryAfter = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    if (response.status === 429 && code === "too_many_requests") {
      message = `You are sending messages faster than this server allows. ${retryText(retryAfter || 60)}`;
    } else if (retryAfter > 0) {
      message = `${message}. ${retryText(retryAfter)}`;
    }
    return new RequestFailed(message, response.status, code, messageId);
  }

  async function request(path, { method = "GET", body, signal } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
    if (!response.ok) throw await failure(response);
    return response.status === 204 ? null : response.json();
  }

  // -- notices ---------------------------------------------------------------------------------

  function showError(message) {
    errorText.textContent = message;
    errorBox.hidden = false;
  }

  function hideError() {
    errorBox.hidden = true;
    errorText.textContent = "";
  }

  // `kind` names what the notice is about, so that only its own end takes it away.
  function showNotice(message, kind = "info") {
    notice.textContent = message;
    notice.dataset.kind = kind;
    notice.hidden = false;
  }

  function hideNotice(kind = null) {
    if (kind !== null && notice.dataset.kind !== kind) return;
    notice.hidden = true;
    notice.textContent = "";
  }

  function showQueuePosition(position, etaSeconds) {
    let text = `Waiting in queue: position ${position}`;
    if (typeof etaSeconds === "number" && Number.isFinite(etaSeconds)) {
      text += etaSeconds < 1 ? ", about a second" : `, about ${Math.ceil(etaSeconds)} s`;
    }
    queueStatus.textContent = text;
    queueStatus.hidden = false;
  }

  function hideQueuePosition() {
    queueStatus.hidden = true;
    queueStatus.textContent = "";
  }

  // -- messages --------------------------------------------------------------------------------

  function nearBottom() {
    return conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 80;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) conversation.scrollTop = conversation.scrollHeight;
  }

  function setText(node, text) {
    const stick = nearBottom();
    texts.set(node, text);
    const content = node.querySelector(".content");
    if (node.classList.contains("user")) content.textContent = text;
    else content.replaceChildren(window.chatMarkdown.render(text));
    keepScrolled(stick);
  }

  function textOf(node) {
    return texts.get(node) || "";
  }

  function addMessage(role, text, { messageId = null, before = null } = {}) {
    const node = messageTemplate.content.firstElementChild.cloneNode(true);
    node.classList.add(role);
    node.dataset.testid = `message-${role}`;
    const label = role === "user" ? "You" : role === "assistant" ? "Assistant" : "System";
    node.querySelector(".role").textContent = label;
    node.setAttribute("aria-label", label);
    if (messageId) node.dataset.messageId = messageId;
    if (before) messages.insertBefore(node, before);
    else messages.append(node);
    setText(node, text);
    updateEmpty();
    return node;
  }

  // A reply's final state: its finish reason as a class and a note, and its id.
  function finishReply(node, finishReason, messageId) {
    node.classList.remove("streaming", "pending", ...Object.values(FINISH_CLASSES));
    node.classList.add("finished");
    if (FINISH_CLASSES[finishReason]) node.classList.add(FINISH_CLASSES[finishReason]);
    node.querySelector(".message-status").textContent = STATUS_TEXT[finishReason] || "";
    if (messageId) node.dataset.messageId = messageId;
  }

  function streamingReply(node) {
    node.classList.remove("finished", ...Object.values(FINISH_CLASSES));
    node.classList.add("streaming");
    node.querySelector(".message-status").textContent = "";
  }

  function showFeedback(node, isLike) {
    node.querySelector(".like").setAttribute("aria-pressed", String(isLike));
    node.querySelector(".dislike").setAttribute("aria-pressed", String(!isLike));
    node.classList.add("rated");
  }

  function updateEmpty() {
    empty.hidden = !historyLoaded || messages.childElementCount > 0;
  }

  function lastAssistant() {
    const replies = messages.querySelectorAll(".message.assistant:not([hidden])");
    return replies.length > 0 ? replies[replies.length - 1] : null;
  }

  function updateControls() {
    const busy = running !== null;
    send.disabled = busy || !historyLoaded || input.value.trim() === "";
    stop.disabled = !busy;
    newChat.disabled = busy;
    app.classList.toggle("busy", busy);
    conversation.setAttribute("aria-busy", String(busy));
    const last = lastAssistant();
    for (const node of messages.querySelectorAll(".message.last-reply")) {
      if (node !== last) node.classList.remove("last-reply");
    }
    if (last) last.classList.add("last-reply");
    for (const button of messages.querySelectorAll(".action:not(.copy), .like, .dislike")) {
      button.disabled = busy;
    }
    for (const button of list.querySelectorAll("button")) button.disabled = busy;
  }

  // -- one reply, followed to its end ----------------------------------------------------------

  // Shows a streaming reply: deltas are added to its text, and only this message is rendered
  // again, at most every RENDER_INTERVAL_MS. `floor` is text already on screen (a reply shown
  // by a reload) that the replayed events have not caught up with yet.
  class ReplyView {
    constructor(node, prefix = "", floor = "") {
      this.node = node;
      this.text = prefix;
      this.floor = floor;
      this.timer = null;
      this.renderedAt = 0;
    }

    add(delta) {
      this.text += delta;
      this.node.classList.remove("pending");
      if (this.timer === null) {
        const wait = Math.max(0, this.renderedAt + RENDER_INTERVAL_MS - performance.now());
        this.timer = setTimeout(() => this.render(), wait);
      }
    }

    render() {
      clearTimeout(this.timer);
      this.timer = null;
      this.renderedAt = performance.now();
      const behind = this.text.length < this.floor.length && this.floor.startsWith(this.text);
      setText(this.node, behind ? this.floor : this.text);
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  async function readEvents(response, onEvent) {
    const parser = new EventStreamParser(onEvent);
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      parser.push(value);
    }
  }

  function attach(messageId, lastEventId, signal) {
    const query = conversationId ? `?conversation_id=${encodeURIComponent(conversationId)}` : "";
    return fetch(`chat_stream/${encodeURIComponent(messageId)}${query}`, {
      headers: { Accept: "text/event-stream", "Last-Event-ID": String(lastEventId) },
      signal,
    });
  }

  // Follows one reply to its end: `open` starts it (a POST), or it is attached to by
  // `messageId`. A dropped connection is attached to again after the last event seen. Returns
  // how it ended: {summary} (done), {error} (an error event or a refusal), or {aborted}.
  async function follow(view, { open = null, messageId = null }) {
    const outcome = { summary: null, error: null, aborted: false, started: false };
    let lastEventId = 0;
    let attempt = 0;
    const onEvent = (name, data, id) => {
      if (id !== null) lastEventId = id;
      if (name === "queued") {
        showQueuePosition(data.position, data.eta_s);
      } else if (name === "delta") {
        hideQueuePosition();
        hideNotice("reconnect");
        attempt = 0;
        if (typeof data.text === "string" && data.text) view.add(data.text);
      } else if (name === "done") {
        outcome.summary = data;
      } else if (name === "error") {
        outcome.error = new RequestFailed(String(data.message || "The reply failed"));
      }
    };
    for (;;) {
      const controller = new AbortController();
      running.controller = controller;
      try {
        const response = messageId
          ? await attach(messageId, lastEventId, controller.signal)
          : await open(controller.signal);
        if (!response.ok) {
          const refused = await failure(response);
          if (!messageId || response.status < 500) {
            outcome.error = refused;
            return outcome;
          }
        } else {
          outcome.started = true;
          messageId = messageId || response.headers.get("X-Message-Id");
          if (messageId) view.node.dataset.messageId = messageId;
          await readEvents(response, onEvent);
        }
      } catch (error) {
        if (controller.signal.aborted) {
          outcome.aborted = true;
          return outcome;
        }
        if (!messageId) {
          const failed = error instanceof RequestFailed;
          outcome.error = failed ? error : new RequestFailed(`Network error: ${error.message}`);
          return outcome;
        }
      }
      if (outcome.summary || outcome.error) return outcome;
      if (attempt >= RECONNECT_DELAYS_MS.length) {
        outcome.error = new RequestFailed("The connection to the server was lost");
        return outcome;
      }
      showNotice("The connection dropped; reconnecting to the reply…", "reconnect");
      await sleep(RECONNECT_DELAYS_MS[attempt++], controller.signal);
      if (controller.signal.aborted) {
        outcome.aborted = true; // stopped while waiting to reconnect
        return outcome;
      }
    }
  }

  // Runs one turn's reply in `node`; `undo` puts the view back when the server stored nothing.
  async function runReply(view, { open = null, messageId = null, undo = () => {} }) {
    hideError();
    streamingReply(view.node);
    if (!view.text) view.node.classList.add("pending");
    running = { reply: view.node, controller: null, stopTimer: null };
    updateControls();
    let outcome = null;
    try {
      outcome = await follow(view, { open, messageId });
      view.render();
      if (outcome.summary) {
        finishReply(view.node, outcome.summary.finish_reason, outcome.summary.message_id);
      } else if (!view.text || (outcome.error && !outcome.started)) {
        undo();
      } else {
        finishReply(view.node, outcome.aborted ? "cancelled" : "error", view.node.dataset.messageId);
      }
      if (outcome.error && outcome.error.code !== "session_busy") showError(outcome.error.message);
    } finally {
      clearTimeout(running.stopTimer);
      running = null;
      hideQueuePosition();
      hideNotice("reconnect");
      updateControls();
    }
    if (outcome.error && outcome.error.code === "session_busy" && outcome.error.messageId) {
      // Another tab (or device) is writing this conversation's reply: follow it instead.
      showNotice("A reply is already being written in another tab; showing it here.");
      await openConversation(conversationId);
      return;
    }
    await syncConversation();
  }

  async function stopReply() {
    if (running === null || running.stopTimer !== null) return;
    const { reply, controller } = running;
    const messageId = reply.dataset.messageId;
    running.stopTimer = setTimeout(() => controller && controller.abort(), STOP_TIMEOUT_MS);
    stop.disabled = true;
    try {
      await request("stop_generation", { method: "POST", body: messageId ? { message_id: messageId } : {} });
    } catch (error) {
      // Nothing runs any more (it just ended, or never started): stop listening.
      if (running !== null && running.controller) running.controller.abort();
      if (!(error instanceof RequestFailed && error.code === "nothing_running")) {
        showError(`Could not stop the reply: ${error.message}`);
      }
    }
  }

  function chatBody(fields) {
    return conversationId ? { ...fields, conversation_id: conversationId } : fields;
  }

  function postChat(body) {
    // One key per turn: a POST the browser retries is then not a second turn.
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    const idempotencyKey = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
    return (signal) =>
      fetch("chat_stream", {
        method: "POST",
        headers: {
          "Content-Type": "application/json",
          Accept: "text/event-stream",
          "Idempotency-Key": idempotencyKey,
        },
        body: JSON.stringify(chatBody(body)),
        signal,
      });
  }

  // -- the four kinds of turn ------------------------------------------------------------------

  async function say(text) {
    const userNode = addMessage("user", text);
    const view = new ReplyView(addMessage("assistant", ""));
    conversation.scrollTop = conversation.scrollHeight;
    const post = postChat({ user_input: text });
    await runReply(view, {
      open: async (signal) => {
        await ensureConversation();
        return post(signal);
      },
      undo: () => {
        view.node.remove();
        userNode.remove();
        if (input.value.trim() === "") input.value = text;
        updateEmpty();
      },
    });
  }

  async function regenerate(previous) {
    const view = new ReplyView(addMessage("assistant", "", { before: previous }));
    previous.hidden = true;
    await runReply(view, {
      open: postChat({ regenerate: true }),
      undo: () => {
        view.node.remove();
        previous.hidden = false;
      },
    });
    if (previous.hidden) previous.remove();
  }

  async function continueReply(node) {
    const before = {
      text: textOf(node),
      className: node.className,
      status: node.querySelector(".message-status").textContent,
    };
    const view = new ReplyView(node, before.text);
    await runReply(view, {
      open: postChat({ continue: true }),
      undo: () => {
        node.className = before.className;
        node.querySelector(".message-status").textContent = before.status;
        setText(node, before.text);
      },
    });
  }

  async function editMessage(node, text) {
    const removed = [];
    for (let next = node.nextElementSibling; next; next = next.nextElementSibling) removed.push(next);
    const original = textOf(node);
    for (const later of removed) later.hidden = true;
    setText(node, text);
    const view = new ReplyView(addMessage("assistant", ""));
    await runReply(view, {
      open: postChat({ edit: { message_id: node.dataset.messageId, user_input: text } }),
      undo: () => {
        view.node.remove();
        setText(node, original);
        for (const later of removed) later.hidden = false;
      },
    });
    for (const later of removed) if (later.hidden) later.remove();
  }

  function startEditing(node) {
    if (node.classList.contains("editing")) return;
    node.classList.add("editing");
    const content = node.querySelector(".content");
    const form = document.createElement("form");
    form.className = "edit-form";
    const area = document.createElement("textarea");
    area.className = "edit-input";
    area.value = textOf(node);
    area.setAttribute("aria-label", "Edit your message");
    const save = document.createElement("button");
    save.type = "submit";
    save.className = "edit-save";
    save.textContent = "Send";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "edit-cancel secondary";
    cancel.textContent = "Cancel";
    const buttons = document.createElement("div");
    buttons.className = "edit-buttons";
    buttons.append(cancel, save);
    form.append(area, buttons);
    const close = () => {
      node.classList.remove("editing");
      form.remove();
      content.hidden = false;
    };
    const submitEdit = () => {
      const text = area.value;
      if (text.trim() === "" || running !== null) return;
      close();
      if (text !== textOf(node)) editMessage(node, text);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      submitEdit();
    });
    cancel.addEventListener("click", close);
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.stopPropagation();
        close();
      } else if (isSendKey(event)) {
        event.preventDefault();
        submitEdit();
      }
    });
    content.hidden = true;
    content.after(form);
    area.focus();
  }

  // -- conversations ---------------------------------------------------------------------------

  function renderList() {
    const items = conversations.map((summary) => {
      const item = itemTemplate.content.firstElementChild.cloneNode(true);
      item.dataset.id = summary.id;
      const title = summary.title || "New chat";
      const open = item.querySelector(".conversation-open");
      open.textContent = title;
      open.title = title;
      item.querySelector(".conversation-rename").setAttribute("aria-label", `Rename “${title}”`);
      item.querySelector(".conversation-delete").setAttribute("aria-label", `Delete “${title}”`);
      if (summary.id === conversationId) {
        item.classList.add("active");
        open.setAttribute("aria-current", "page");
      }
      return item;
    });
    list.replaceChildren(...items);
    noConversations.hidden = items.length > 0;
    updateControls();
  }

  async function loadList() {
    try {
      const page = await request("conversations?limit=100");
      conversations = page.conversations;
      renderList();
    } catch (error) {
      showError(`Could not load your conversations: ${error.message}`);
    }
  }

  function showConversationId(id) {
    conversationId = id;
    history.replaceState(null, "", id ? `#${encodeURIComponent(id)}` : location.pathname + location.search);
    renderList();
  }

  // Shows a conversation's view (the answer of GET conversations/{id} or get_prompt) and
  // follows its reply if one is being written.
  async function showView(view) {
    messages.replaceChildren();
    if (view.system_prompt) addMessage("system", view.system_prompt);
    let generating = null;
    for (const message of view.messages || []) {
      if (message.role !== "user" && message.role !== "assistant") continue;
      const node = addMessage(message.role, message.content, { messageId: message.message_id });
      if (message.role !== "assistant") continue;
      if (message.status === "generating") generating = { node, message };
      else finishReply(node, message.finish_reason, message.message_id);
      if (message.feedback && typeof message.feedback.is_like === "boolean") {
        showFeedback(node, message.feedback.is_like);
      }
    }
    historyLoaded = true;
    updateEmpty();
    updateControls();
    conversation.scrollTop = conversation.scrollHeight;
    if (generating) {
      const view = new ReplyView(generating.node, "", generating.message.content);
      const messageId = generating.message.message_id;
      await runReply(view, {
        messageId,
        undo: () => finishReply(generating.node, "error", messageId),
      });
    }
  }

  async function openConversation(id) {
    hideError();
    try {
      const view = id ? await request(`conversations/${encodeURIComponent(id)}`) : await request("get_prompt");
      showConversationId(id || view.conversation_id || null);
      await showView(view);
    } catch (error) {
      if (id && error instanceof RequestFailed && error.status === 404) {
        await openConversation(null); // deleted elsewhere: show the session's own
        return;
      }
      historyLoaded = true;
      updateEmpty();
      updateControls();
      showError(`Could not load the conversation: ${error.message}`);
    }
  }

  // After a turn: the ids the server gave its messages (an edit needs the user message's), the
  // text as stored where it differs (a continued reply followed after a reload shows only what
  // was added meanwhile), and the list, whose order and titles the turn changed.
  async function syncConversation() {
    if (!conversationId) return;
    try {
      const view = await request(`conversations/${encodeURIComponent(conversationId)}`);
      const stored = view.messages.filter((m) => m.role === "user" || m.role === "assistant");
      const shown = messages.querySelectorAll(".message.user, .message.assistant");
      if (running === null && stored.length === shown.length) {
        stored.forEach((message, index) => {
          const node = shown[index];
          if (message.message_id) node.dataset.messageId = message.message_id;
          if (message.content !== textOf(node) && !node.classList.contains("editing")) {
            setText(node, message.content);
          }
        });
      }
    } catch {
      // the view stays as it is; the next turn syncs again
    }
    await loadList();
  }

  // The conversation the next message goes to, created on the first one.
  async function ensureConversation() {
    if (conversationId) return;
    try {
      const created = await request("conversations", { method: "POST", body: {} });
      conversations = [created, ...conversations];
      showConversationId(created.id);
    } catch (error) {
      throw new RequestFailed(`Could not start a conversation: ${error.message}`);
    }
  }

  async function startNewChat() {
    hideError();
    hideNotice();
    closeSidebar();
    if (messages.querySelector(".message.user") === null && conversationId) {
      input.focus(); // this one is still empty: no second empty conversation
      return;
    }
    showConversationId(null);
    messages.replaceChildren();
    updateEmpty();
    updateControls();
    input.focus();
  }

  async function renameConversation(item) {
    const open = item.querySelector(".conversation-open");
    const field = document.createElement("input");
    field.className = "rename-input";
    field.value = open.textContent;
    field.maxLength = 200;
    field.setAttribute("aria-label", "New title");
    open.hidden = true;
    open.after(field);
    field.focus();
    field.select();
    let done = false;
    const finish = async (save) => {
      if (done) return;
      done = true;
      const title = field.value.trim();
      field.remove();
      open.hidden = false;
      if (!save || title === "" || title === open.textContent) return;
      try {
        await request(`conversations/${encodeURIComponent(item.dataset.id)}`, { method: "PATCH", body: { title } });
      } catch (error) {
        showError(`Could not rename the conversation: ${error.message}`);
      }
      await loadList();
    };
    field.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        finish(true);
      } else if (event.key === "Escape") {
        event.stopPropagation();
        finish(false);
      }
    });
    field.addEventListener("blur", () => finish(true));
  }

  async function deleteConversation(item) {
    const title = item.querySelector(".conversation-open").textContent;
    if (!window.confirm(`Delete “${title}”? This cannot be undone.`)) return;
    try {
      await request(`conversations/${encodeURIComponent(item.dataset.id)}`, { method: "DELETE" });
    } catch (error) {
      if (!(error instanceof RequestFailed && error.status === 404)) {
        showError(`Could not delete the conversation: ${error.message}`);
        return;
      }
    }
    if (item.dataset.id === conversationId) {
      showConversationId(null);
      messages.replaceChildren();
      updateEmpty();
    }
    await loadList();
  }

  // -- feedback and copying --------------------------------------------------------------------

  async function sendFeedback(node, isLike) {
    const status = node.querySelector(".action-status");
    try {
      await request("set_feedback", {
        method: "POST",
        body: chatBody({ message_id: node.dataset.messageId, is_like: isLike, form_data: {} }),
      });
      showFeedback(node, isLike);
      status.textContent = "Feedback recorded";
    } catch (error) {
      if (error instanceof RequestFailed && error.status === 404) {
        status.textContent = "This reply is no longer stored; feedback not recorded";
      } else {
        showError(`Could not send feedback: ${error.message}`);
      }
    }
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // no clipboard API (a page served over plain http elsewhere than localhost)
      const area = document.createElement("textarea");
      area.className = "clipboard";
      area.value = text;
      area.setAttribute("readonly", "");
      document.body.append(area);
      area.select();
      const copied = document.execCommand("copy");
      area.remove();
      return copied;
    }
  }

  async function copyCode(button) {
    const code = button.closest(".code-block").querySelector("pre");
    const copied = await copyText(code.textContent);
    button.textContent = copied ? "Copied" : "Copy failed";
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  }

  async function copyMessage(node) {
    const copied = await copyText(textOf(node));
    node.querySelector(".action-status").textContent = copied ? "Copied" : "Could not copy";
  }

  // -- theme and layout ------------------------------------------------------------------------

  const darkQuery = window.matchMedia("(prefers-color-scheme: dark)");

  function storedTheme() {
    try {
      return localStorage.getItem(THEME_KEY);
    } catch {
      return null;
    }
  }

  function applyTheme(theme) {
    if (theme === "light" || theme === "dark") document.documentElement.dataset.theme = theme;
    else delete document.documentElement.dataset.theme;
    const dark = currentTheme() === "dark";
    themeButton.setAttribute("aria-label", dark ? "Switch to the light theme" : "Switch to the dark theme");
    themeButton.setAttribute("aria-pressed", String(dark));
  }

  function currentTheme() {
    return document.documentElement.dataset.theme || (darkQuery.matches ? "dark" : "light");
  }

  function toggleTheme() {
    const next = currentTheme() === "dark" ? "light" : "dark";
    try {
      localStorage.setItem(THEME_KEY, next);
    } catch {
      // not stored: this page keeps it until it is left
    }
    applyTheme(next);
  }

  function closeSidebar() {
    app.classList.remove("sidebar-open");
    menu.setAttribute("aria-expanded", "false");
    menu.setAttribute("aria-label", "Show the conversations");
    backdrop.hidden = true;
  }

  function toggleSidebar() {
    const open = !app.classList.contains("sidebar-open");
    app.classList.toggle("sidebar-open", open);
    menu.setAttribute("aria-expanded", String(open));
    menu.setAttribute("aria-label", open ? "Hide the conversations" : "Show the conversations");
    backdrop.hidden = !open;
  }

  // -- wiring ----------------------------------------------------------------------------------

  function isSendKey(event) {
    return event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229;
  }

  function autosize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }

  function submit() {
    const text = input.value;
    if (running !== null || !historyLoaded || text.trim() === "") return;
    input.value = "";
    autosize();
    hideNotice();
    say(text);
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (isSendKey(event)) {
      event.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", () => {
    autosize();
    updateControls();
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape") return;
    if (running !== null) {
      event.preventDefault();
      stopReply();
    } else if (app.classList.contains("sidebar-open")) {
      closeSidebar();
    }
  });
  stop.addEventListener("click", stopReply);
  newChat.addEventListener("click", startNewChat);
  menu.addEventListener("click", toggleSidebar);
  backdrop.addEventListener("click", closeSidebar);
  themeButton.addEventListener("click", toggleTheme);
  darkQuery.addEventListener("change", () => applyTheme(storedTheme()));
  $("error-dismiss").addEventListener("click", hideError);
  // An address with another conversation's id, pasted or edited.
  window.addEventListener("hashchange", () => {
    const id = decodeURIComponent(location.hash.slice(1)) || null;
    if (running === null && id !== conversationId) openConversation(id);
  });
  // A tab coming back into view catches up: another tab may have written meanwhile, and a
  // reply running there is followed here.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState !== "visible" || running !== null || !historyLoaded) return;
    if (messages.querySelector(".editing") !== null) return;
    loadList();
    if (conversationId) openConversation(conversationId);
  });

  messages.addEventListener("click", (event) => {
    const codeButton = event.target.closest(".copy-code");
    if (codeButton) {
      copyCode(codeButton);
      return;
    }
    const button = event.target.closest("button");
    const node = button && button.closest(".message");
    if (!node || button.disabled) return;
    if (button.classList.contains("like") || button.classList.contains("dislike")) {
      if (node.dataset.messageId) sendFeedback(node, button.classList.contains("like"));
    } else if (button.dataset.action === "copy") {
      copyMessage(node);
    } else if (running !== null) {
      return;
    } else if (button.dataset.action === "edit" && node.dataset.messageId) {
      startEditing(node);
    } else if (button.dataset.action === "regenerate") {
      regenerate(node);
    } else if (button.dataset.action === "continue") {
      continueReply(node);
    }
  });

  list.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    const item = button && button.closest(".conversation-item");
    if (!item || running !== null) return;
    if (button.classList.contains("conversation-open")) {
      closeSidebar();
      if (item.dataset.id !== conversationId) openConversation(item.dataset.id);
    } else if (button.classList.contains("conversation-rename")) {
      renameConversation(item);
    } else if (button.classList.contains("conversation-delete")) {
      deleteConversation(item);
    }
  });

  applyTheme(storedTheme());
  updateControls();
  const fromAddress = decodeURIComponent(location.hash.slice(1)) || null;
  loadList().then(() => openConversation(fromAddress));
  input.focus();
})();
