// Markdown to DOM for the chat page: markdown-it (raw HTML off, images off) turns text into
// HTML, then DOMPurify keeps only the elements and attributes below and hands back a
// DocumentFragment, so no HTML string is ever assigned to the page. Links may only be http(s),
// mailto or relative, and open in a new tab without an opener or a referrer. Code blocks get a
// header with their language and a Copy button.
"use strict";

window.chatMarkdown = (() => {
  const ALLOWED_TAGS = [
    "p", "br", "hr", "em", "strong", "s", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "a", "table", "thead", "tbody", "tr", "th", "td",
  ];
  const ALLOWED_ATTR = ["href", "title", "class", "start"];
  const SAFE_SCHEMES = new Set(["http", "https", "mailto"]);
  const SCHEME = /^([a-z][a-z0-9+.-]*):/i;

  function safeLink(url) {
    const scheme = SCHEME.exec(url.trim());
    return scheme === null || SAFE_SCHEMES.has(scheme[1].toLowerCase());
  }

  const md = window.markdownit({ html: false, linkify: true, typographer: false });
  md.disable("image");
  md.validateLink = safeLink;
  // Table alignment comes as a style attribute, which the page's CSP (rightly) refuses: use a
  // class instead.
  md.core.ruler.push("align_classes", (state) => {
    for (const token of state.tokens) {
      if (token.type !== "th_open" && token.type !== "td_open") continue;
      const style = token.attrGet("style");
      if (!style) continue;
      token.attrs = token.attrs.filter(([name]) => name !== "style");
      token.attrJoin("class", `align-${style.replace("text-align:", "")}`);
    }
  });

  const purifier = window.DOMPurify;
  purifier.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName !== "A") return;
    const href = node.getAttribute("href");
    if (href === null || !safeLink(href)) {
      node.removeAttribute("href");
      return;
    }
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  });
  const CONFIG = {
    ALLOWED_TAGS,
    ALLOWED_ATTR,
    ALLOW_DATA_ATTR: false,
    ALLOW_ARIA_ATTR: false,
    RETURN_DOM_FRAGMENT: true,
  };

  function codeHeader(code) {
    const header = document.createElement("div");
    header.className = "code-header";
    const language = document.createElement("span");
    language.className = "code-language";
    const match = /(?:^|\s)language-(\S+)/.exec(code.className);
    language.textContent = match ? match[1] : "text";
    const copy = document.createElement("button");
    copy.type = "button";
    copy.className = "copy-code";
    copy.textContent = "Copy";
    copy.setAttribute("aria-label", "Copy the code");
    header.append(language, copy);
    return header;
  }

  // The fragment that shows `text` as markdown.
  function render(text) {
    const fragment = purifier.sanitize(md.render(text), CONFIG);
    for (const node of [...fragment.childNodes]) {
      if (node.nodeType === Node.TEXT_NODE && node.textContent.trim() === "") node.remove();
    }
    for (const pre of fragment.querySelectorAll("pre")) {
      const code = pre.querySelector("code");
      const block = document.createElement("div");
      block.className = "code-block";
      pre.replaceWith(block);
      block.append(codeHeader(code || pre), pre);
    }
    return fragment;
  }

  return { render, ALLOWED_TAGS };
})();
