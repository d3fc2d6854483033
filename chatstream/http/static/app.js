// The chat page: streams replies from POST chat_stream (server-sent events over fetch), keeps
// the view in step with the session's stored history, and never turns text into markup: every
// string from the user, the model or the server goes in through textContent / text nodes.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const conversation = $("conversation");
  const messages = $("messages");
  const empty = $("empty");
  const input = $("input");
  const send = $("send");
  const stop = $("stop");
  const regenerate = $("regenerate");
  const newChat = $("new-chat");
  const queueStatus = $("queue-status");
  const errorBox = $("error");
  const errorText = $("error-text");
  const template = $("message-template");

  const STATUS_TEXT = {
    cancelled: "Stopped",
    length: "Cut off at the length limit",
    error: "Incomplete: the reply could not be finished",
  };

  let controller = null; // the AbortController of the reply being streamed
  let historyLoaded = false;

  // -- server-sent events ----------------------------------------------------------------------

  // Incremental parser of a text/event-stream body: chunks may split lines, events and CRLF
  // pairs anywhere; comment lines (keep-alives) are skipped.
  class EventStreamParser {
    constructor(onEvent) {
      this.onEvent = onEvent;
      this.buffer = "";
      this.skipLineFeed = false;
      this.eventName = "";
      this.data = [];
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
    }

    dispatch() {
      if (this.data.length > 0) {
        let payload = null;
        try {
          payload = JSON.parse(this.data.join("\n"));
        } catch {
          payload = null;
        }
        if (payload !== null) this.onEvent(this.eventName || "message", payload);
      }
      this.eventName = "";
      this.data = [];
    }
  }

  class RequestFailed extends Error {}

  async function errorMessage(response) {
    let message = `The server answered ${response.status} ${response.statusText}`.trim();
    try {
      const body = await response.json();
      if (body && body.error && typeof body.error.message === "string") {
        message = body.error.message;
      } else if (body && typeof body.detail === "string") {
        message = body.detail;
      }
    } catch {
      // not JSON: keep the status line
    }
    const retryAfter = response.headers.get("Retry-After");
    if (retryAfter) message += ` (try again in ${retryAfter} s)`;
    return message;
  }

  // -- the view --------------------------------------------------------------------------------

  function showError(message) {
    errorText.textContent = message;
    errorBox.hidden = false;
  }

  function hideError() {
    errorBox.hidden = true;
    errorText.textContent = "";
  }

  function showQueuePosition(position) {
    queueStatus.textContent = `Waiting in queue: position ${position}`;
    queueStatus.hidden = false;
  }

  function hideQueuePosition() {
    queueStatus.hidden = true;
    queueStatus.textContent = "";
  }

  function nearBottom() {
    return conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 80;
  }

  function keepScrolled(wasNearBottom) {
    if (wasNearBottom) conversation.scrollTop = conversation.scrollHeight;
  }

  function addMessage(role, text, before = null) {
    const stick = nearBottom();
    const node = template.content.firstElementChild.cloneNode(true);
    node.classList.add(role);
    node.dataset.testid = `message-${role}`;
    node.querySelector(".role").textContent =
      role === "user" ? "You" : role === "assistant" ? "Assistant" : "System";
    node.querySelector(".content").textContent = text;
    if (before) messages.insertBefore(node, before);
    else messages.append(node);
    updateEmpty();
    keepScrolled(stick);
    return node;
  }

  function appendText(node, text) {
    const stick = nearBottom();
    node.querySelector(".content").append(document.createTextNode(text));
    node.classList.remove("pending");
    keepScrolled(stick);
  }

  function replyText(node) {
    return node.querySelector(".content").textContent;
  }

  // A reply's final state: its finish reason as a class and a note, and feedback once it has
  // an id the server knows.
  function finishReply(node, finishReason, messageId) {
    node.classList.remove("streaming", "pending");
    node.classList.add("finished");
    const classes = { cancelled: "stopped", length: "truncated", error: "failed" };
    if (classes[finishReason]) node.classList.add(classes[finishReason]);
    node.querySelector(".message-status").textContent = STATUS_TEXT[finishReason] || "";
    if (messageId) {
      node.dataset.messageId = messageId;
      node.querySelector(".feedback").hidden = false;
    }
  }

  function updateEmpty() {
    empty.hidden = !historyLoaded || messages.childElementCount > 0;
  }

  function lastAssistant() {
    const replies = messages.querySelectorAll(".message.assistant:not([hidden])");
    return replies.length > 0 ? replies[replies.length - 1] : null;
  }

  function updateControls() {
    const busy = controller !== null;
    send.disabled = busy || !historyLoaded || input.value.trim() === "";
    stop.disabled = !busy;
    regenerate.disabled = busy || lastAssistant() === null;
    newChat.disabled = busy;
    conversation.setAttribute("aria-busy", String(busy));
  }

  function renderHistory(history) {
    messages.replaceChildren();
    if (history.system_prompt) addMessage("system", history.system_prompt);
    for (const message of history.messages || []) {
      if (message.role !== "user" && message.role !== "assistant") continue;
      const node = addMessage(message.role, message.content);
      if (message.role === "assistant") {
        finishReply(node, message.finish_reason, message.message_id);
      }
    }
    conversation.scrollTop = conversation.scrollHeight;
  }

  // -- talking to the server -------------------------------------------------------------------

  async function loadHistory() {
    try {
      const response = await fetch("get_prompt", { headers: { Accept: "application/json" } });
      if (!response.ok) throw new RequestFailed(await errorMessage(response));
      renderHistory(await response.json());
    } catch (error) {
      showError(`Could not load the conversation: ${error.message}`);
    } finally {
      historyLoaded = true;
      updateEmpty();
      updateControls();
    }
  }

  // Stream one reply. A new message shows at once; if the server refuses it or no text
  // arrives, the view is put back as it was (the text returns to the input box), since the
  // server stored nothing either.
  async function ask(text, isRegenerate) {
    hideError();
    const previous = isRegenerate ? lastAssistant() : null;
    const userNode = isRegenerate ? null : addMessage("user", text);
    const reply = addMessage("assistant", "", previous);
    reply.classList.add("streaming", "pending");
    if (previous) previous.hidden = true;
    controller = new AbortController();
    updateControls();

    let summary = null;
    let streamError = null;
    const onEvent = (name, data) => {
      if (name === "queued") {
        showQueuePosition(data.position);
      } else if (name === "delta") {
        hideQueuePosition();
        if (typeof data.text === "string" && data.text) appendText(reply, data.text);
      } else if (name === "done") {
        summary = data;
      } else if (name === "error") {
        streamError = data;
      }
    };

    const undo = () => {
      reply.remove();
      if (previous) previous.hidden = false;
      if (userNode) {
        userNode.remove();
        if (input.value.trim() === "") input.value = text;
      }
      updateEmpty();
    };

    try {
      const body = isRegenerate ? { regenerate: true } : { user_input: text, regenerate: false };
      const response = await fetch("chat_stream", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
        body: JSON.stringify(body),
        signal: controller.signal,
      });
      if (!response.ok) throw new RequestFailed(await errorMessage(response));
      const messageId = response.headers.get("X-Message-Id");
      if (messageId) reply.dataset.messageId = messageId;
      const parser = new EventStreamParser(onEvent);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        parser.push(value);
      }
      if (summary) {
        finishReply(reply, summary.finish_reason, summary.message_id);
      } else {
        const message = streamError
          ? streamError.message
          : "The connection ended before the reply was finished";
        if (replyText(reply)) finishReply(reply, "error", reply.dataset.messageId);
        else undo();
        showError(message);
      }
    } catch (error) {
      const stopped = error.name === "AbortError";
      if (summary) {
        finishReply(reply, summary.finish_reason, summary.message_id);
      } else if (replyText(reply)) {
        finishReply(reply, stopped ? "cancelled" : "error", reply.dataset.messageId);
      } else {
        undo();
      }
      if (!stopped) {
        showError(error instanceof RequestFailed ? error.message : `Network error: ${error.message}`);
      }
    } finally {
      if (previous && previous.hidden) previous.remove(); // replaced, not put back by undo()
      controller = null;
      hideQueuePosition();
      updateControls();
    }
  }

  async function sendFeedback(node, isLike) {
    const like = node.querySelector(".like");
    const dislike = node.querySelector(".dislike");
    const status = node.querySelector(".feedback-status");
    like.disabled = dislike.disabled = true;
    try {
      const response = await fetch("set_feedback", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ message_id: node.dataset.messageId, is_like: isLike, form_data: {} }),
      });
      if (response.ok) {
        like.setAttribute("aria-pressed", String(isLike));
        dislike.setAttribute("aria-pressed", String(!isLike));
        node.classList.add("rated");
        status.textContent = "Feedback recorded";
      } else if (response.status === 404) {
        status.textContent = "This reply is no longer stored; feedback not recorded";
      } else {
        status.textContent = "";
        showError(await errorMessage(response));
      }
    } catch (error) {
      showError(`Could not send feedback: ${error.message}`);
    } finally {
      like.disabled = dislike.disabled = false;
    }
  }

  async function startNewChat() {
    hideError();
    newChat.disabled = true;
    try {
      const response = await fetch("clear_context", { method: "POST" });
      if (!response.ok) throw new RequestFailed(await errorMessage(response));
      messages.replaceChildren();
      updateEmpty();
      input.focus();
    } catch (error) {
      showError(`Could not start a new chat: ${error.message}`);
    } finally {
      updateControls();
    }
  }

  // -- wiring ----------------------------------------------------------------------------------

  function autosize() {
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
  }

  function submit() {
    const text = input.value;
    if (controller !== null || !historyLoaded || text.trim() === "") return;
    input.value = "";
    autosize();
    ask(text, false);
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing && event.keyCode !== 229) {
      event.preventDefault();
      submit();
    }
  });
  input.addEventListener("input", () => {
    autosize();
    updateControls();
  });
  stop.addEventListener("click", () => {
    if (controller !== null) controller.abort();
  });
  regenerate.addEventListener("click", () => {
    if (controller === null && lastAssistant() !== null) ask("", true);
  });
  newChat.addEventListener("click", startNewChat);
  $("error-dismiss").addEventListener("click", hideError);
  messages.addEventListener("click", (event) => {
    const button = event.target.closest(".like, .dislike");
    const node = button && button.closest(".message.assistant");
    if (node && node.dataset.messageId) sendFeedback(node, button.classList.contains("like"));
  });

  updateControls();
  loadHistory();
  input.focus();
})();
