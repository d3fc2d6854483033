"""ChatPrompt: one conversation, stored in the session and rendered into the model's prompt."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Self

from sessions import register_type

from ..engines.base import FinishReason, PromptRenderer
from ..errors import InputTooLong, NothingToRegenerate

Role = Literal["system", "user", "assistant"]
_ROLES = ("system", "user", "assistant")
_FINISH_REASONS = ("stop", "length", "cancelled", "error")


@dataclass(slots=True)
class Message:
    """One turn. Assistant replies carry their id, how they ended and their token counts."""

    role: Role
    content: str
    message_id: str | None = None
    finish_reason: FinishReason | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        # Built by hand: dataclasses.asdict deep-copies, and a long history calls this per turn.
        data: dict[str, Any] = {"role": self.role, "content": self.content}
        for key in ("message_id", "finish_reason", "prompt_tokens", "completion_tokens"):
            if (value := getattr(self, key)) is not None:
                data[key] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        role, content = data.get("role"), data.get("content")
        finish_reason = data.get("finish_reason")
        if role not in _ROLES or not isinstance(content, str):
            raise ValueError(f"not a chat message: {data!r}")
        if finish_reason is not None and finish_reason not in _FINISH_REASONS:
            raise ValueError(f"unknown finish reason: {finish_reason!r}")
        return cls(
            role=role,
            content=content,
            message_id=data.get("message_id"),
            finish_reason=finish_reason,
            prompt_tokens=data.get("prompt_tokens"),
            completion_tokens=data.get("completion_tokens"),
        )


class ChatPrompt:
    """A conversation: an optional system prompt, then user turns each followed by at most one
    assistant reply.

    ``create_prompt()`` renders it with the bound renderer (the tokenizer's chat template for
    transformers models). When the conversation does not fit ``context_len - max_new_tokens``
    tokens, the oldest turns are left out of the prompt (they stay in the history); the system
    prompt always stays. The handler binds the renderer and limits each turn, so a callback can
    call ``create_prompt()`` on the prompt it finds in the session.
    """

    def __init__(
        self,
        system_prompt: str | None = None,
        messages: Sequence[Message] = (),
        *,
        renderer: PromptRenderer | None = None,
        context_len: int | None = None,
        max_new_tokens: int = 0,
    ) -> None:
        self.system_prompt = system_prompt
        self.messages: list[Message] = list(messages)
        self.renderer = renderer
        self.context_len = context_len
        self.max_new_tokens = max_new_tokens

    def bind(
        self, renderer: PromptRenderer, *, context_len: int | None, max_new_tokens: int
    ) -> Self:
        """Attach what rendering needs (not stored in the session)."""
        self.renderer = renderer
        self.context_len = context_len
        self.max_new_tokens = max_new_tokens
        return self

    def copy(self) -> ChatPrompt:
        """A copy to edit: messages are replaced, never changed in place, so they are shared."""
        clone = ChatPrompt(self.system_prompt, self.messages)
        clone.renderer, clone.context_len = self.renderer, self.context_len
        clone.max_new_tokens = self.max_new_tokens
        return clone

    # -- editing -------------------------------------------------------------------------------

    def add_user_message(self, content: str) -> Message:
        message = Message("user", content)
        self.messages.append(message)
        return message

    def set_reply(
        self,
        content: str,
        *,
        message_id: str,
        finish_reason: FinishReason,
        prompt_tokens: int,
        completion_tokens: int,
    ) -> Message:
        """Store the reply to the last user turn, replacing a reply it already had."""
        if not self.messages:
            raise ValueError("no user turn to reply to")
        if self.messages[-1].role == "assistant":
            self.messages.pop()
        reply = Message(
            "assistant", content, message_id, finish_reason, prompt_tokens, completion_tokens
        )
        self.messages.append(reply)
        return reply

    def drop_last_reply(self) -> None:
        """Prepare a regenerate: the last user turn stays, its reply (finished or partial) goes."""
        if not any(message.role == "user" for message in self.messages):
            raise NothingToRegenerate("there is no user turn to regenerate a reply for")
        if self.messages[-1].role == "assistant":
            self.messages.pop()

    def clear(self) -> None:
        self.messages.clear()

    def size(self) -> tuple[int, int]:
        """How many messages, and how many UTF-8 bytes of content, the conversation holds."""
        return len(self.messages), sum(len(m.content.encode()) for m in self.messages)

    def find(self, message_id: str) -> Message | None:
        return next((m for m in self.messages if m.message_id == message_id), None)

    # -- rendering -----------------------------------------------------------------------------

    def to_messages(self, start: int = 0) -> list[dict[str, str]]:
        """The conversation as chat-template messages, from turn index ``start`` on."""
        head = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return head + [{"role": m.role, "content": m.content} for m in self.messages[start:]]

    def fitted_messages(self) -> list[dict[str, str]]:
        """The longest recent part of the conversation whose prompt fits the token budget."""
        renderer = self._require_renderer()
        starts = [i for i, m in enumerate(self.messages) if m.role == "user"] or [0]
        if self.context_len is None or not self.messages:
            return self.to_messages(starts[0])
        budget = self.context_len - self.max_new_tokens

        def fits(start: int) -> bool:  # counted as the engine will run it
            return renderer.count_prompt_tokens(self.to_messages(start)) <= budget

        # Fewer turns never make the prompt longer. Search back from the newest turn in
        # doubling steps, then bisect: the cost follows what fits, not the history's length.
        if not fits(starts[-1]):
            raise InputTooLong(
                f"the message does not fit the model's context of {self.context_len} tokens "
                f"with {self.max_new_tokens} tokens left for the reply"
            )
        fitting, step = len(starts) - 1, 1
        while fitting > 0:
            candidate = max(fitting - step, 0)
            if not fits(starts[candidate]):
                break
            fitting, step = candidate, step * 2
        else:
            return self.to_messages(starts[0])
        low = candidate + 1  # the oldest start that fits lies in [low, fitting]
        while low < fitting:
            middle = (low + fitting) // 2
            if fits(starts[middle]):
                fitting = middle
            else:
                low = middle + 1
        return self.to_messages(starts[fitting])

    def create_prompt(self) -> str:
        """The prompt text the model sees for the next reply; empty while there is nothing to
        render (no message and no system prompt: chat templates refuse an empty conversation)."""
        renderer = self._require_renderer()
        messages = self.fitted_messages()
        return renderer.render(messages, add_generation_prompt=True) if messages else ""

    def _require_renderer(self) -> PromptRenderer:
        if self.renderer is None:
            raise RuntimeError("ChatPrompt has no renderer: call bind() first")
        return self.renderer

    # -- session serialization -----------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "system_prompt": self.system_prompt,
            "messages": [message.to_dict() for message in self.messages],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChatPrompt:
        system_prompt = data.get("system_prompt")
        messages = data.get("messages", [])
        if system_prompt is not None and not isinstance(system_prompt, str):
            raise ValueError("system_prompt must be a string")
        if not isinstance(messages, list):
            raise ValueError("messages must be a list")
        return cls(system_prompt, [Message.from_dict(m) for m in messages])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChatPrompt):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ChatPrompt(system_prompt={self.system_prompt!r}, messages={len(self.messages)})"


# One store field per message: a turn writes its two messages, whatever the history's length.
register_type(ChatPrompt, "chatstream.ChatPrompt", segmented="messages")
